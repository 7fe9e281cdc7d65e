"""Postee's whole ``rego-templates`` folder (tests/fixtures/postee-rego-templates: its nineteen
templates, ``example/`` with two more and a Rego unit test, and ``common/common.rego``; Postee's
MIT licence beside them) used as it is as a user template directory: every package in it renders,
through ``herald render`` on the embedded engine (regorus) and on a real OPA server.

Expected outputs: where Herald's built-in goldens (tests/templates/goldens) already hold what
Postee's template gives (raw JSON, raw HTML, Opsgenie, Dependency-Track), the rendering must equal
them. Every case is also pinned in tests/fixtures/postee-goldens, written from the OPA server's
rendering (OPA is the engine Postee embeds) with HERALD_UPDATE_GOLDENS=1, and the embedded engine
must give the same bytes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.content import Content
from app.errors import PolicyError, TemplateError
from app.routing.policy.engine import EmbeddedEngine
from app.devtools.opa_local import OpaServer, opa_binary
from app.routing.policy.opa import OpaEngine
from app.routing.policy.templates import (
    BUILTIN_TEMPLATE_DIR,
    ModuleTemplate,
    PackageTemplate,
    TemplateLibrary,
    declared_package,
)
from tests.harness import FIXTURES, ROOT
from tests.templates.goldenfile import GOLDENS, KEYS, UPDATE, dump, load

POSTEE_DIR = FIXTURES / "postee-rego-templates"
POSTEE_GOLDENS = FIXTURES / "postee-goldens"
AQUA = "https://aqua.example.com"  # herald render --aqua-server: links go to AQUA/#/images/

# package -> the inputs it is rendered for; a tuple of several inputs is rendered one by one and
# then combined by the package's aggregation_pkg (herald render with --input repeated)
CASES: list[tuple[str, tuple[str, ...]]] = [
    ("postee.rawmessage.json", ("postee/simple-input.json",)),
    ("postee.rawmessage.json", ("postee/aqua-incident-input.json",)),
    ("postee.rawmessage.html", ("postee/simple-input.json",)),
    ("postee.rawmessage.html", ("postee/aqua-incident-input.json",)),
    ("postee.vuls.html", ("postee/aqua-input.json",)),
    ("postee.vuls.html", ("postee/all-in-one-image.json",)),
    ("postee.vuls.html", ("postee/aqua-input.json", "postee/all-in-one-image.json")),  # .html.aggregation
    ("postee.vuls.slack", ("postee/aqua-input.json",)),
    ("postee.vuls.slack", ("postee/all-in-one-image.json",)),
    ("postee.vuls.slack", ("postee/aqua-input.json", "postee/all-in-one-image.json")),  # .slack.aggregation
    ("postee.vuls.cyclondx", ("postee/aqua-input.json",)),
    ("postee.vuls.opsgenie", ("postee/aqua-input.json",)),
    ("postee.servicenow", ("postee/aqua-input.json",)),
    ("postee.servicenow.incident", ("postee/aqua-incident-input.json",)),
    ("postee.servicenow.insight", ("postee/aqua-insight-input.json",)),
    ("postee.tracee.html", ("tracee/finding-single.json",)),
    ("postee.tracee.slack", ("tracee/finding-single.json",)),
    ("postee.trivy.jira", ("postee/trivy-input.json",)),
    ("postee.vuls.trivy.slack", ("postee/trivy-input.json",)),
    ("postee.vuls.trivy.slack", ("postee/trivy-input.json", "postee/trivy-input.json")),  # .slack.trivy.aggregation
    ("postee.trivyoperator.jira", ("postee/trivy-operator-input.json",)),
    ("postee.trivyoperator.slack", ("postee/trivy-operator-input.json",)),
    ("postee.trivyoperator.dependencytrack", ("postee-trivy-operator-sbom.json",)),
    ("example.audit.html", ("postee-audit-input.json",)),
    ("plejd.trivyoperator.defectdojo", ("postee-defectdojo-input.json",)),
]
# cases whose expected output Herald's built-in goldens already hold (Herald's template gives
# what Postee's gives there)
BUILTIN_GOLDEN = {
    "postee.rawmessage.json__simple-input": "postee.rawmessage.json__simple-input",
    "postee.rawmessage.json__aqua-incident-input": "postee.rawmessage.json__aqua-incident-input",
    "postee.rawmessage.html__simple-input": "postee.rawmessage.html__simple-input",
    "postee.rawmessage.html__aqua-incident-input": "postee.rawmessage.html__aqua-incident-input",
    "postee.vuls.opsgenie__aqua-input": "postee.vuls.opsgenie__aqua-input",
    "postee.trivyoperator.dependencytrack__postee-trivy-operator-sbom":
        "postee.trivyoperator.dependencytrack__trivy-operator-sbom",
}
# the cases herald render also runs with --engine opa (each run loads the whole library into OPA,
# which recompiles on every module upload: ~10 s a run); the library API covers every case on OPA
OPA_CLI = ["postee.vuls.slack__aqua-input+all-in-one-image", "plejd.trivyoperator.defectdojo__postee-defectdojo-input"]


def case_id(package: str, inputs: tuple[str, ...]) -> str:
    return f"{package}__{'+'.join(Path(i).stem for i in inputs)}"


IDS = [case_id(p, i) for p, i in CASES]


def herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def render_cli(package: str, inputs: tuple[str, ...], *engine: str) -> dict[str, str]:
    args = ["render", "--template-dir", str(POSTEE_DIR), "--package", package, "--aqua-server", AQUA, *engine]
    for i in inputs:
        args += ["--input", str(FIXTURES / i)]
    res = herald(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "warning:" not in res.stderr, res.stderr
    # one line per replaced built-in package, the user's file named
    assert f"note: built-in package postee.vuls.slack replaced by {POSTEE_DIR / 'vuls-slack.rego'}\n" in res.stderr
    assert f"note: built-in package postee replaced by {POSTEE_DIR / 'common' / 'common.rego'}\n" in res.stderr
    out: dict[str, str] = json.loads(res.stdout)
    return out


def render_api(library: TemplateLibrary, package: str, inputs: tuple[str, ...]) -> dict[str, str]:
    template = PackageTemplate("t", package, library)
    items = []
    for i in inputs:
        event = json.loads((FIXTURES / i).read_text())
        items.append(template.render(json.dumps({**event, "postee": {"AquaServer": AQUA + "/#/images/"}})))
    content = items[0] if len(items) == 1 else template.aggregate(items)
    out = content.to_dict()
    out.pop("owners")
    return out


def as_content(out: dict[str, str]) -> Content:
    return Content(**{k: out.get(k, "") for k in KEYS if k != "owners"})


def check_pinned(name: str, out: dict[str, str], write: bool = False) -> None:
    path = POSTEE_GOLDENS / f"{name}.golden"
    if write and UPDATE:
        POSTEE_GOLDENS.mkdir(exist_ok=True)
        path.write_text(dump(as_content(out)))
    assert path.is_file(), f"no golden {path}: run the OPA test with HERALD_UPDATE_GOLDENS=1 and review it"
    expected = load(path.read_text())
    for key in KEYS:
        if key != "owners":
            assert out.get(key, "") == expected.get(key, ""), f"{name}: {key} differs from {path.name}"
    if name in BUILTIN_GOLDEN:  # what Postee's template gives, as Herald's goldens hold it
        builtin = load((GOLDENS / f"{BUILTIN_GOLDEN[name]}.golden").read_text())
        for key in KEYS:
            if key != "owners":
                assert out.get(key, "") == builtin.get(key, ""), f"{name}: {key} differs from Herald's golden"


def folder_packages() -> set[str]:
    return {declared_package(p.read_text()) or "" for p in POSTEE_DIR.rglob("*.rego")}


def test_the_fixture_is_postees_whole_folder_and_every_package_has_cases() -> None:
    rego = sorted(str(p.relative_to(POSTEE_DIR)) for p in POSTEE_DIR.rglob("*.rego"))
    assert len(rego) == 23 and "common/common.rego" in rego  # 21 templates, common, a Rego unit test
    assert (POSTEE_DIR / "LICENSE").read_text().startswith("MIT License")
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, POSTEE_DIR])
    covered = {p for p, _ in CASES}
    covered |= {PackageTemplate("t", p, library).aggregation_package() for p, inputs in CASES if len(inputs) > 1}
    # the helpers are exercised by every template importing them; the unit test runs below
    assert folder_packages() == covered | {"postee", "plejd.trivyoperator.defectdojo.test"}


def test_loaded_as_it_is_the_folder_replaces_the_builtin_packages_it_defines() -> None:
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, POSTEE_DIR])
    assert library.errors == [] and library.unavailable == {}
    builtin = {declared_package(p.read_text()) for p in BUILTIN_TEMPLATE_DIR.rglob("*.rego")}
    assert set(library.replaced) == folder_packages() & builtin
    assert library.replaced["postee"] == [str(POSTEE_DIR / "common" / "common.rego")]
    for package, files in library.replaced.items():
        assert library.files[package] == files  # only the user's files define it
    # Herald's own packages stay beside the user's: its helpers, Falco, the Jira aggregation
    for package in ("herald.lib.text", "herald.falco.slack", "postee.trivy.jira.aggregation"):
        assert library.files[package][0].startswith(str(BUILTIN_TEMPLATE_DIR))
    content = PackageTemplate("t", "herald.falco.slack", library).render(
        json.dumps({**json.loads((FIXTURES / "falco" / "event-single.json").read_text()), "postee": {}}))
    assert content.to_dict()["description"] == load(
        (GOLDENS / "herald.falco.slack__falco-event-single.golden").read_text())["description"]


@pytest.mark.parametrize(("package", "inputs"), CASES, ids=IDS)
def test_herald_render_on_the_embedded_engine(package: str, inputs: tuple[str, ...]) -> None:
    check_pinned(case_id(package, inputs), render_cli(package, inputs))


@pytest.fixture(scope="module")
def opa_server() -> Iterator[OpaServer]:
    """A server of this module's own, stopped at its end (no module removal needed: herald render
    uploads the modules the library uploaded, under the same ids)."""
    try:
        server = OpaServer(opa_binary(build=True), v0=True).start(timeout=60)
    except PolicyError as exc:
        pytest.fail(f"cannot build or start Herald's OPA: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def libraries(opa_server: OpaServer) -> Iterator[tuple[TemplateLibrary, TemplateLibrary]]:
    engines: list[OpaEngine] = []

    def factory() -> OpaEngine:
        engines.append(OpaEngine(opa_server.url))
        return engines[-1]

    embedded = TemplateLibrary([BUILTIN_TEMPLATE_DIR, POSTEE_DIR], EmbeddedEngine)
    opa = TemplateLibrary([BUILTIN_TEMPLATE_DIR, POSTEE_DIR], factory)
    yield embedded, opa
    for engine in engines:
        engine.close()


@pytest.mark.parametrize(("package", "inputs"), CASES, ids=IDS)
def test_every_package_on_a_real_opa_server(libraries: tuple[TemplateLibrary, TemplateLibrary], package: str,
                                            inputs: tuple[str, ...]) -> None:
    embedded, opa = libraries
    assert opa.errors == [] and opa.replaced == embedded.replaced
    out = render_api(opa, package, inputs)
    check_pinned(case_id(package, inputs), out, write=True)
    assert render_api(embedded, package, inputs) == out


@pytest.mark.parametrize("name", OPA_CLI)
def test_herald_render_on_a_real_opa_server(opa_server: OpaServer, name: str) -> None:
    package, inputs = CASES[IDS.index(name)]
    check_pinned(name, render_cli(package, inputs, "--engine", "opa", "--opa-url", opa_server.url))


def test_postees_rego_unit_test_passes_on_both_engines(libraries: tuple[TemplateLibrary, TemplateLibrary]) -> None:
    for library in libraries:
        assert library.evaluate("plejd.trivyoperator.defectdojo.test.test_a_allowed", "{}") is True
        assert library.evaluate("plejd.trivyoperator.defectdojo.test.todo_test_false", "{}") is None


def test_a_users_common_helpers_serve_inline_templates_too(tmp_path: Path) -> None:
    """Postee compiled ``body`` templates with its rego-templates/common: so does Herald, with the
    user's helpers when the user's folder defines package ``postee``."""
    user = tmp_path / "rego-templates"
    shutil.copytree(POSTEE_DIR, user)
    with (user / "common" / "common.rego").open("a") as f:
        f.write('\nshout(s) = upper(concat("", [s, "!"]))\n')
    body = 'package inline.t\nimport data.postee.shout\ntitle := "t"\nresult := shout(input.user)\n'
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, user])
    assert ModuleTemplate("t", body, "inline", library).render('{"user": "alice"}').description == "ALICE!"
    builtin_only = TemplateLibrary([BUILTIN_TEMPLATE_DIR])
    with pytest.raises(PolicyError, match="shout"):
        ModuleTemplate("t", body, "inline", builtin_only).render('{"user": "alice"}')


def test_a_user_package_replacing_a_herald_helper_it_lacks_names_makes_its_importers_unavailable(
        tmp_path: Path) -> None:
    """Herald's built-ins import their helpers from herald.lib.*; a user package of that name
    replaces it too, and a built-in template still loaded that uses a name the user's package
    does not define is reported unavailable (not a render-time failure)."""
    (tmp_path / "text.rego").write_text("package herald.lib.text\n\nstr(x) = sprintf(\"%v\", [x])\n")
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, tmp_path])
    assert library.replaced == {"herald.lib.text": [str(tmp_path / "text.rego")]}
    assert "herald.lib.text.capitalised" in library.unavailable["postee.vuls.slack"]
    assert "herald.lib.text.field" in library.unavailable["herald.lib.aqua"]
    # vuls.html uses no text helper itself, but imports lib.aqua, which is unavailable
    assert library.unavailable["postee.vuls.html"].endswith("imports herald.lib.aqua, herald.lib.aquahtml, "
                                                            "which is unavailable")
    assert any(e.startswith("template package postee.vuls.slack is unavailable: built-in ") for e in library.errors)
    with pytest.raises(TemplateError, match="'postee.vuls.html' is unavailable: built-in .*vuls-html.rego imports"):
        PackageTemplate("t", "postee.vuls.html", library)
    assert "postee.rawmessage.json" not in library.unavailable  # it imports no helper
    assert PackageTemplate("t", "postee.rawmessage.json", library).render('{"a": 1}').description == '{\n "a": 1\n}'
    # a complete replacement (the built-in file with one change) leaves every built-in available
    (tmp_path / "text.rego").write_text((BUILTIN_TEMPLATE_DIR / "lib" / "text.rego").read_text() + "\nextra := 1\n")
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, tmp_path])
    assert library.unavailable == {} and library.errors == []
    assert library.evaluate("herald.lib.text.extra", "{}") == 1


def test_on_a_long_running_opa_the_replaced_builtin_modules_of_an_earlier_run_are_removed() -> None:
    """A Herald restarted with the folder, against an OPA that still holds the built-in modules
    an earlier run without it uploaded: those would conflict with the user's packages
    (``rule conflicts``), so the library deletes the built-in modules it replaces."""
    try:
        server = OpaServer(opa_binary(build=True), v0=True).start(timeout=60)
    except PolicyError as exc:
        pytest.fail(f"cannot build or start Herald's OPA: {exc}", pytrace=False)
    engines: list[OpaEngine] = []

    def factory() -> OpaEngine:
        engines.append(OpaEngine(server.url))
        return engines[-1]

    try:
        earlier = TemplateLibrary([BUILTIN_TEMPLATE_DIR], factory)
        assert earlier.errors == []
        held = set(engines[0].server_policy_ids())
        now = TemplateLibrary([BUILTIN_TEMPLATE_DIR, POSTEE_DIR], factory)
        assert now.errors == []
        remaining = set(engines[1].server_policy_ids())
        replaced_ids = {i for i in held if i.split("/")[1] in now.replaced}  # herald/<package>/<path>
        assert replaced_ids and not replaced_ids & remaining
        check_pinned("postee.vuls.slack__aqua-input", render_api(now, "postee.vuls.slack", ("postee/aqua-input.json",)))
    finally:
        for engine in engines:
            engine.close()
        server.stop()


@pytest.mark.parametrize(("source", "package"), [
    ("package postee.vuls.slack\n\ntitle := 1\n", "postee.vuls.slack"),
    ("# METADATA\n# title: x\npackage postee  # the helpers\r\n", "postee"),
    ('package postee["x-y"]\n', None),  # not a plain name: loaded, never replacing anything
    ("title := 1\n", None),
])
def test_the_package_a_file_declares_is_read_without_compiling_it(source: str, package: str | None) -> None:
    assert declared_package(source) == package


def test_only_the_same_package_replaces_a_builtin(tmp_path: Path) -> None:
    (tmp_path / "extra.rego").write_text('package postee.vuls.slack.extra\n\ntitle := "x"\n\nresult := "y"\n')
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, tmp_path])
    assert library.replaced == {} and library.errors == []
    assert library.files["postee.vuls.slack"][0].startswith(str(BUILTIN_TEMPLATE_DIR))
    assert library.evaluate("postee.vuls.slack.extra.result", "{}") == "y"
