"""Every built-in template package renders the same on a real OPA server as on the embedded
engine, for every fixture it is meant for (the golden tests pin the embedded output itself)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app import gojson
from app.errors import PolicyError
from app.policy.engine import EmbeddedEngine
from app.policy.opa import OpaEngine, OpaServer
from app.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary, aggregation_items

FIXTURES = Path(os.environ.get("HERALD_FIXTURES", "/work/shared/fixtures"))
POSTEE = FIXTURES / "postee"
AQUA = [POSTEE / n for n in ("aqua-input.json", "all-in-one-image.json", "aqua-incident-input.json",
                             "aqua-insight-input.json", "simple-input.json")]
ANY_EVENT = [*sorted(POSTEE.glob("*.json")), FIXTURES / "tracee" / "finding-single.json",
             FIXTURES / "falco" / "event-single.json"]


def fixtures_for(package: str) -> list[Path]:
    """The events a package is written for, by Postee's package naming."""
    if "rawmessage" in package:
        return ANY_EVENT
    if "tracee" in package:
        return [FIXTURES / "tracee" / "finding-single.json"]
    if "trivyoperator" in package:
        return [POSTEE / "trivy-operator-input.json"]
    if "trivy" in package:
        return [POSTEE / "trivy-input.json"]
    return AQUA  # vuls.*, servicenow.*, and the helper libraries they use


def outcome(library: TemplateLibrary, package: str, input_json: str) -> Any:
    """The package's own rules (sub-packages are compared on their own), or that it failed."""
    try:
        value = library.evaluate(package, input_json)
    except PolicyError:
        return ("error",)  # the messages differ between engines; failing at all must not
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if not library.has_package(f"{package}.{k}")}
    # OPA answers in JSON, where object keys are strings; regorus keeps {1: "low"} as an int key
    return ("value", orjson.loads(gojson.marshal(value)))


@pytest.fixture(scope="module")
def libraries(opa_server: OpaServer) -> Iterator[tuple[TemplateLibrary, TemplateLibrary]]:
    """The built-in library on both engines, loaded once for this module (loading ~30 modules
    into OPA takes seconds: it recompiles everything on each upload)."""
    engines: list[OpaEngine] = []

    def factory() -> OpaEngine:
        engines.append(OpaEngine(opa_server.url))
        return engines[-1]

    embedded = TemplateLibrary(dirs=[BUILTIN_TEMPLATE_DIR], engine_factory=EmbeddedEngine)
    opa = TemplateLibrary(dirs=[BUILTIN_TEMPLATE_DIR], engine_factory=factory)
    yield embedded, opa
    left = [i for engine in engines for i in engine.remove_all()]
    remaining = engines[0].server_policy_ids()
    for engine in engines:
        engine.close()
    assert not left and not remaining, f"OPA still holds modules: {left or remaining}"


def test_every_builtin_package_renders_the_same_on_opa(libraries: tuple[TemplateLibrary, TemplateLibrary]) -> None:
    embedded, opa = libraries
    assert embedded.errors == [] and opa.errors == []
    assert sorted(opa.files) == sorted(embedded.files)
    assert {"postee.rawmessage.json", "postee.rawmessage.html"} <= set(opa.files)

    compared: list[str] = []
    for package in sorted(embedded.files):
        aggregation_of = []
        for path in fixtures_for(package):
            event_json = path.read_text()
            expected = outcome(embedded, package, event_json)
            assert outcome(opa, package, event_json) == expected, f"{package} on {path.name}"
            compared.append(f"{package} {path.name}")
            if expected[0] == "value" and isinstance(expected[1], dict) and "result" in expected[1]:
                aggregation_of.append(PackageTemplate("t", package, embedded).render(event_json))
        # the package's aggregation (if it names one) over this package's renders
        template = PackageTemplate("t", package, embedded) if aggregation_of else None
        if template is not None and template.supports_aggregation():
            agg = template.aggregation_package()
            assert agg is not None
            items_json = orjson.dumps(aggregation_items(aggregation_of)).decode()
            assert outcome(opa, agg, items_json) == outcome(embedded, agg, items_json), f"{agg} over {package}"
            compared.append(f"{agg} over {package}")
    assert len(compared) >= len(embedded.files)


@pytest.mark.parametrize("package", ["postee.rawmessage.json", "postee.rawmessage.html"])
def test_raw_message_on_every_fixture(package: str, libraries: tuple[TemplateLibrary, TemplateLibrary]) -> None:
    embedded, opa = libraries
    for path in ANY_EVENT:
        event_json = path.read_text()
        rendered = PackageTemplate("t", package, opa).render(event_json)
        assert rendered == PackageTemplate("t", package, embedded).render(event_json), path.name
        assert rendered.description
