"""Forwarding a JSON body with one value replaced, every other byte kept."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxycast._json import NotAnObjectError, parse_object, replace_value

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6),
    st.text(),
    st.sampled_from([None, 0, 2]),
    st.booleans(),
)
def test_replacing_model_changes_only_model(
    body: dict[str, object], model: str, indent: int | None, ascii_only: bool
) -> None:
    body = {**body, "model": "original"}
    text = json.dumps(body, indent=indent, ensure_ascii=ascii_only)
    parsed, spans = parse_object(text)
    assert parsed == json.loads(text)
    out = replace_value(text, spans["model"], model)
    assert json.loads(out) == {**body, "model": model}
    start, end = spans["model"]
    assert out[:start] == text[:start]
    assert out[len(out) - (len(text) - end) :] == text[end:]


@pytest.mark.parametrize(
    "text", ["", "{", '{"a": 1,}', '{"a" 1}', '{"a": 1} x', "{'a': 1}", '{"a": 1 "b": 2}']
)
def test_invalid_json_raises(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_object(text)


@pytest.mark.parametrize("text", ["[]", "1", '"s"', "null"])
def test_non_objects_raise(text: str) -> None:
    with pytest.raises(NotAnObjectError):
        parse_object(text)
