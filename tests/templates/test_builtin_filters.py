"""Herald's built-in route filters (Postee's rego-filters, rewritten): every file compiles alone
and together with the others, each decides the fixtures as its name says, a route's files are
ORed, and a filter file that does not compile is an error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config.loader import RouteConfig, RuleConfig
from app.errors import PolicyError
from app.routing.policy.engine import EmbeddedEngine
from app.routing.policy.filters import BUILTIN_FILTER_DIR, RouteFilters
from tests.harness import FIXTURES

AQUA = (FIXTURES / "postee" / "aqua-input.json").read_text()  # all-in-one:3.5.19223 from registry Aqua
TRACEE = (FIXTURES / "tracee" / "finding-single.json").read_text()  # TRC-1010, "MITRE ATT&CK": Privilege Escalation
TRIVY_ASFF = json.dumps({"Findings": [{"ProductFields": {"Product Name": "Other"}},
                                      {"ProductFields": {"Product Name": "Trivy"}}]})
OTHER = json.dumps({"user": "demo"})

FILES = ["Allow-Image-Name.rego", "Ignore-Image-Name.rego", "Allow-Registry.rego", "Ignore-Registry.rego",
         "Policy-Min-Vulnerability.rego", "Policy-Only-Fix-Available.rego", "Policy-Related-Features.rego",
         "Initial Access.rego", "Credential Access.rego", "Privilege Escalation.rego", "Defense Evasion.rego",
         "Persistence.rego", "Tracee Default Set.rego", "Trivy AWS Findings.rego"]

# file -> events it lets through, of (aqua, tracee, trivy-asff, other)
EXPECTED = {
    "Allow-Image-Name.rego": set(),  # ubuntu, busybox
    "Ignore-Image-Name.rego": {"aqua", "tracee", "trivy", "other"},  # alpine, postgres; no image passes
    "Allow-Registry.rego": {"aqua"},
    "Ignore-Registry.rego": {"tracee", "trivy", "other"},  # the Aqua registry is ignored
    "Policy-Min-Vulnerability.rego": {"aqua"},  # one critical, one high
    "Policy-Only-Fix-Available.rego": {"aqua"},
    "Policy-Related-Features.rego": {"aqua"},  # shipped with the "image_scan" check only
    "Initial Access.rego": set(),
    "Credential Access.rego": set(),  # Postee's substring match let TRC-1010 through ("TRC-10")
    "Privilege Escalation.rego": {"tracee"},
    "Defense Evasion.rego": set(),
    "Persistence.rego": set(),
    "Tracee Default Set.rego": {"tracee"},
    "Trivy AWS Findings.rego": {"trivy"},
}
EVENTS = {"aqua": AQUA, "tracee": TRACEE, "trivy": TRIVY_ASFF, "other": OTHER}


def route(name: str, *files: str) -> RouteConfig:
    return RouteConfig(name=name, input_files=list(files))


def matched(filters: RouteFilters, event: str) -> set[str]:
    return {name for name, verdict in filters.evaluate(event).items() if verdict.matched}


def test_the_builtin_set_is_complete() -> None:
    assert sorted(p.name for p in BUILTIN_FILTER_DIR.glob("*.rego")) == sorted(FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", FILES)
def test_each_file_is_package_postee_with_allow(name: str) -> None:
    engine = EmbeddedEngine()
    assert engine.add_module(name, (BUILTIN_FILTER_DIR / name).read_text()) == "data.postee"
    engine.set_input_json(OTHER)
    assert engine.eval_path("data.postee.allow") in (True, None)  # defined as a boolean rule


def test_each_filter_decides_as_its_name_says() -> None:
    # one route per file, all compiled into one engine and evaluated with one call per event
    filters = RouteFilters([route(name, name) for name in FILES], filters_path="/nonexistent")
    for event_name, event in EVENTS.items():
        expected = {name for name, events in EXPECTED.items() if event_name in events}
        assert matched(filters, event) == expected, event_name


def test_files_of_a_route_are_ored_and_the_verdict_names_the_file() -> None:
    filters = RouteFilters([route("mixed", "Allow-Image-Name", "Policy-Min-Vulnerability.rego", "Privilege Escalation")],
                           filters_path="/nonexistent")
    for event, reason in [(AQUA, "Policy-Min-Vulnerability.rego"), (TRACEE, "Privilege Escalation.rego"),
                          (json.dumps({"image": "ubuntu:22.04"}), "Allow-Image-Name.rego")]:
        verdict = filters.evaluate(event)["mixed"]
        assert verdict.matched and verdict.reason.endswith(f"{reason} allowed"), verdict
    verdict = filters.evaluate(OTHER)["mixed"]
    assert not verdict.matched and "Allow-Image-Name.rego" in verdict.reason


def test_all_files_combine_in_one_package() -> None:
    """Loaded together into a single `postee` package (as OPA or Postee would), nothing conflicts
    and `allow` is the OR of the files."""
    engine = EmbeddedEngine()
    for name in FILES:
        engine.add_module(name, (BUILTIN_FILTER_DIR / name).read_text())
    for event_name, event in EVENTS.items():
        engine.set_input_json(event)
        expected = any(event_name in events for events in EXPECTED.values())
        assert (engine.eval_path("data.postee.allow") is True) == expected, event_name


@pytest.mark.parametrize(("signature", "mitre", "files"), [
    ("TRC-10", None, {"Credential Access.rego", "Tracee Default Set.rego"}),
    ("TRC-1", None, {"Tracee Default Set.rego"}),  # Postee's "TRC-1" is not a substring match
    ("TRC-101", None, {"Tracee Default Set.rego"}),
    ("TRC-12", None, {"Initial Access.rego", "Tracee Default Set.rego"}),
    ("TRC-15", None, {"Persistence.rego", "Tracee Default Set.rego"}),
    ("CUSTOM-7", "Defense Evasion", {"Defense Evasion.rego"}),
    ("CUSTOM-8", "persistence", {"Persistence.rego"}),
])
def test_tracee_sets_match_ids_exactly_or_by_tactic(signature: str, mitre: str | None, files: set[str]) -> None:
    tracee = ["Initial Access.rego", "Credential Access.rego", "Privilege Escalation.rego", "Defense Evasion.rego",
              "Persistence.rego", "Tracee Default Set.rego"]
    finding = json.loads(TRACEE)
    finding["SigMetadata"]["ID"] = signature
    finding["SigMetadata"]["Properties"].pop("MITRE ATT&CK")
    if mitre:
        finding["SigMetadata"]["Properties"]["MITRE ATT&CK"] = mitre
    filters = RouteFilters([route(name, name) for name in tracee], filters_path="/nonexistent")
    assert matched(filters, json.dumps(finding)) == files


def test_mistyped_properties_do_not_break_evaluation() -> None:
    filters = RouteFilters([route(name, name) for name in FILES], filters_path="/nonexistent")
    odd = json.dumps({"image": 5, "registry": ["Aqua"], "SigMetadata": {"ID": 3}, "Findings": "x",
                      "vulnerability_summary": {"critical": "many"}, "resources": {"a": 1}})
    verdicts = filters.evaluate(odd)
    assert not any(v.reason.startswith("error") for v in verdicts.values()), verdicts
    assert matched(filters, odd) == {"Ignore-Image-Name.rego", "Ignore-Registry.rego"}


def test_related_features_ands_the_enabled_checks(tmp_path: Path) -> None:
    source = (BUILTIN_FILTER_DIR / "Policy-Related-Features.rego").read_text()
    enabled = 'related_features_enabled := {"image_scan"}'
    assert enabled in source
    cases = {
        "registry-and-severity.rego": ('{"registry", "min_vulnerability", "fix_available"}', {"aqua"}),
        "and-ignored-registry.rego": ('{"registry", "not_ignored_registry"}', set()),  # Aqua is both
        "typo.rego": ('{"image_scan", "regsitry"}', set()),  # an unknown check closes the route
        "nothing.rego": ("set()", set()),
    }
    for name, (checks, _) in cases.items():
        (tmp_path / name).write_text(source.replace(enabled, f"related_features_enabled := {checks}"))
    filters = RouteFilters([route(name, name) for name in cases], filters_path=str(tmp_path))
    for event_name, event in EVENTS.items():
        expected = {name for name, (_, events) in cases.items() if event_name in events}
        assert matched(filters, event) == expected, event_name


def test_user_filters_path_and_rules(tmp_path: Path) -> None:
    """REGO_FILTERS_PATH files come first; the `rules` section maps rule names to filter files."""
    (tmp_path / "Allow-Registry.rego").write_text('package postee\nallow { input.registry == "Docker Hub" }\n')
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "demo-user.rego").write_text('package postee\nallow { input.user == "demo" }\n')
    rules = {"Trivy findings": RuleConfig(name="Trivy findings", id="Trivy AWS Findings")}
    filters = RouteFilters(
        [route("user", "Allow-Registry.rego", f"{tmp_path}/custom/demo-user.rego"), route("rule", "Trivy findings")],
        filters_path=str(tmp_path), rules=rules,
    )
    assert filters.evaluate(AQUA)["user"].matched is False  # the user's Allow-Registry overrides the built-in
    assert filters.evaluate(json.dumps({"registry": "Docker Hub"}))["user"].matched
    assert filters.evaluate(OTHER)["user"].matched
    assert matched(filters, TRIVY_ASFF) == {"rule"}


def test_a_filter_that_does_not_compile_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "Broken-Filter.rego"
    broken.write_text("package postee\n\nallow {\n  input.image ==\n}\n")
    with pytest.raises(PolicyError) as caught:
        RouteFilters([route("ok", "Allow-Registry.rego"), route("bad", "Allow-Registry.rego", "Broken-Filter.rego")],
                     filters_path=str(tmp_path))
    message = str(caught.value)
    assert str(broken) in message and "route 'bad'" in message
    assert "route 'ok'" not in message
