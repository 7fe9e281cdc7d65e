"""Every built-in template package renders on a real OPA server exactly as on the embedded
engine and as its golden files pin it: the cases (package, fixture, aqua-server) and the
aggregations are the golden suite's own (tests/templates/test_builtin_goldens.py), so a package
that gains goldens is covered here too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.content import Content
from app.routing.policy.engine import EmbeddedEngine
from app.devtools.opa_local import OpaServer
from app.routing.policy.opa import OpaEngine
from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary
from tests.harness import FIXTURES
from tests.templates.goldenfile import GOLDENS, KEYS, load
from tests.templates.test_builtin_goldens import AGGREGATES, AQUA_SERVER, CASES, _event_json

POSTEE = FIXTURES / "postee"
ANY_EVENT = [*sorted(POSTEE.glob("*.json")), FIXTURES / "tracee" / "finding-single.json",
             FIXTURES / "falco" / "event-single.json"]


def assert_golden(name: str, content: Content) -> None:
    """Compare with a golden without ever rewriting it (HERALD_UPDATE_GOLDENS is the embedded
    suite's business)."""
    expected = load((GOLDENS / f"{name}.golden").read_text())
    actual = content.to_dict()
    for key in KEYS:
        assert actual[key] == expected.get(key, ""), f"{name}: {key} differs on OPA"


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


def test_every_builtin_package_has_golden_cases(libraries: tuple[TemplateLibrary, TemplateLibrary]) -> None:
    embedded, opa = libraries
    assert embedded.errors == [] and opa.errors == []
    assert sorted(opa.files) == sorted(embedded.files)
    covered = {case.values[0] for case in CASES}
    covered |= {PackageTemplate("t", package, embedded).aggregation_package() for package, _ in AGGREGATES}
    helpers = {p for p in embedded.files if p == "postee" or p.startswith("herald.lib.")}
    assert set(embedded.files) - helpers <= covered


@pytest.mark.parametrize(("package", "fixture", "aqua_server"), CASES)
def test_golden_on_opa(libraries: tuple[TemplateLibrary, TemplateLibrary], package: str, fixture: str,
                       aqua_server: str) -> None:
    embedded, opa = libraries
    event_json = _event_json(fixture, aqua_server)
    content = PackageTemplate("golden", package, opa).render(event_json)
    assert content == PackageTemplate("golden", package, embedded).render(event_json)
    assert_golden(f"{package}__{fixture}{'' if aqua_server else '__no-aqua'}", content)


@pytest.mark.parametrize(("package", "fixtures"), AGGREGATES, ids=[a[0] for a in AGGREGATES])
def test_aggregation_on_opa(libraries: tuple[TemplateLibrary, TemplateLibrary], package: str,
                            fixtures: list[str]) -> None:
    embedded, opa = libraries
    template = PackageTemplate("agg", package, opa)
    assert template.supports_aggregation()
    items = [template.render(_event_json(f, AQUA_SERVER)) for f in fixtures]
    aggregate = template.aggregate(items)
    assert aggregate == PackageTemplate("agg", package, embedded).aggregate(items)
    assert_golden(f"{template.aggregation_package()}__{package}", aggregate)


@pytest.mark.parametrize("package", ["postee.rawmessage.json", "postee.rawmessage.html"])
def test_raw_message_on_every_fixture(package: str, libraries: tuple[TemplateLibrary, TemplateLibrary]) -> None:
    embedded, opa = libraries
    for path in ANY_EVENT:
        event_json = path.read_text()
        rendered = PackageTemplate("t", package, opa).render(event_json)
        assert rendered == PackageTemplate("t", package, embedded).render(event_json), path.name
        assert rendered.description
