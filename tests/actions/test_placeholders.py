"""event.input / event.raw placeholders: Postee's results for Postee's forms, plus the extensions."""

from __future__ import annotations

import json

import pytest

from actions._placeholders import EventView, NonJson, substitute, to_text

DESC = json.dumps(
    {
        "argsNum": 2,
        "image": "library/nginx",
        "tag": "1.16",
        "score": 9.1,
        "big": 1e21,
        "whole": 2.0,
        "ok": True,
        "none": None,
        "vulns": [{"id": "CVE-1", "sev": "CRITICAL"}, {"id": "CVE-2", "sev": "LOW"}],
        "obj": {"a": 1},
        "dotted.key": "d",
    }
)
EVENT = {"metadata": {"labels": {"trivy-operator.resource.name": "nginx-6d4cf56db6"}}, "n": [1, 2]}


def sub(text: str, desc: str = DESC, **kw: object) -> str:
    return substitute(text, EventView(desc, EVENT), **kw).text  # type: ignore[arg-type]


def test_postee_form_at_end_of_line() -> None:
    # Postee's own test: body `argsNum: event.input.argsNum` with {"argsNum":2}
    assert sub("argsNum: event.input.argsNum") == "argsNum: 2"


def test_several_per_line_and_mid_line() -> None:
    assert sub("img=event.input.image:event.input.tag, score event.input.score!") == (
        "img=library/nginx:1.16, score 9.1!"
    )
    assert sub('{"a": "event.input.image", "b": event.input.argsNum}') == (
        '{"a": "library/nginx", "b": 2}'
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("vulns.0.id", "CVE-1"),
        ("vulns.1.sev", "LOW"),
        ("vulns.#", "2"),
        ("vulns.#.id", '["CVE-1","CVE-2"]'),
        ("vulns.5.id", ""),
        ("obj", '{"a":1}'),
        ("ok", "true"),
        ("none", ""),
        ("big", "1000000000000000000000"),
        ("whole", "2"),
        ("missing.path", ""),
        ("dotted\\.key", "d"),
    ],
)
def test_paths(path: str, expected: str) -> None:
    assert sub(f"event.input.{path}") == expected


def test_trailing_dot_ends_a_sentence() -> None:
    assert sub("The image is event.input.image.") == "The image is library/nginx."


def test_bare_event_input_with_json_description_is_empty() -> None:
    result = substitute("x event.input y", EventView(DESC))
    assert result.text == "x  y"
    assert result.empty == ["event.input"]


def test_non_json_description_postee_rules() -> None:
    assert sub("got event.input", desc="plain text") == "got plain text"
    assert sub("got event.input.a.b here", desc="plain text") == "got plain text.a.b here"
    assert sub("event.input.a", desc="plain", non_json=NonJson.WHOLE) == "plain"
    result = substitute("app=event.input.a", EventView("plain"), non_json=NonJson.EMPTY)
    assert (result.text, result.empty) == ("app=", ["event.input.a"])


def test_event_raw_resolves_against_the_original_event() -> None:
    assert sub("event.raw.metadata.labels.trivy-operator\\.resource\\.name") == "nginx-6d4cf56db6"
    assert sub("event.raw.n.#") == "2"
    assert json.loads(sub("event.raw")) == EVENT
    assert substitute("event.raw.x", EventView(DESC, None)).empty == ["event.raw.x"]


def test_not_placeholders() -> None:
    assert sub("event.inputs myevent.input.image event.other") == (
        "event.inputs myevent.input.image event.other"
    )


def test_transform_applies_to_resolved_values_only() -> None:
    result = substitute("a=event.input.image,b=event.input.nope", EventView(DESC), transform=str.upper)
    assert result.text == "a=LIBRARY/NGINX,b="
    assert result.empty == ["event.input.nope"]


def test_to_text_floats_match_go() -> None:
    assert to_text(0.00000015) == "0.00000015"
    assert to_text(-3.5) == "-3.5"
