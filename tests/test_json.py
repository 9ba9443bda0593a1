"""Forwarding a JSON body with one value replaced, every other byte kept."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxycast.errors import NotAnObjectError, UpstreamUnavailableError
from proxycast.formats.json_spans import MAX_DEPTH, parse_object, replace_value
from proxycast.formats.passthrough import read_forwarded
from tests.support import CLIENT_KEY

if TYPE_CHECKING:
    from tests.support import Gateway

# what JSON can carry: no NaN or infinities, no lone surrogates (parse_object refuses those)
TEXT = st.text(st.characters(exclude_categories=("Cs",)))
KEYS = st.text(st.characters(exclude_categories=("Cs",)), max_size=5)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=10,
)


@given(
    st.dictionaries(KEYS, JSON_VALUES, max_size=6),
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


def _messages(content: str) -> str:
    return '{"model": "gpt-4o", "messages": [{"role": "user", "content": ' + content + "}]}"


REFUSED = [
    pytest.param(_messages("[" * 2000 + "]" * 2000), "nested", id="deep-2000"),
    pytest.param(_messages("[" * 200 + "]" * 200), "nested", id="deep-200"),
    pytest.param(_messages('"\\ud800"'), "surrogate", id="lone-surrogate"),
    pytest.param(_messages('"a\\udc00b"'), "surrogate", id="lone-low-surrogate"),
    pytest.param(_messages('"x", "n": ' + "9" * 5000), "too long", id="huge-integer"),
    pytest.param(_messages('"x", "temperature": NaN'), "NaN", id="nan"),
    pytest.param(_messages('"x", "temperature": Infinity'), "Infinity", id="infinity"),
    pytest.param(_messages('"x", "temperature": -Infinity'), "Infinity", id="minus-infinity"),
    pytest.param(_messages('"x", "temperature": 1e400'), "too large", id="overflow"),
    pytest.param(
        '{"model": "gpt-4o", "model": "other", "messages": []}', "'model' appears twice", id="model"
    ),
    pytest.param(
        '{"model": "gpt-4o", "stream": false, "messages": [], "stream": true}',
        "'stream' appears twice",
        id="stream",
    ),
]


@pytest.mark.parametrize(("text", "problem"), REFUSED)
async def test_json_a_gateway_cannot_pass_on_is_a_400(
    gateway: Gateway, text: str, problem: str
) -> None:
    async with httpx.AsyncClient() as h:
        for path in ("/chat/completions", "/messages"):
            body = text if path == "/chat/completions" else text.replace('"gpt-4o"', '"llama3.2"')
            response = await h.post(
                gateway.v1 + path,
                content=body.encode(),
                headers={
                    "authorization": f"Bearer {CLIENT_KEY}",
                    "content-type": "application/json",
                },
            )
            assert response.status_code == 400, response.text
            error = response.json()
            if path == "/messages":
                assert error["type"] == "error"
            assert problem in error["error"]["message"]


def test_the_nesting_limit_leaves_ordinary_depth_alone() -> None:
    text = _messages("[" * (MAX_DEPTH - 5) + "]" * (MAX_DEPTH - 5))
    parse_object(text)


def test_an_answer_with_a_repeated_model_key_is_a_bad_upstream_answer() -> None:
    # forwarding it would rename one and leave the other; a 502 names the provider instead
    with pytest.raises(UpstreamUnavailableError, match="'local' answered with a body"):
        read_forwarded(b'{"model": "up-1", "model": "up-2", "data": []}', "m", "local")
    data, answer = read_forwarded(b'{"model": "up-1", "data": []}', "m", "local")
    assert data == b'{"model": "m", "data": []}'
    assert answer["model"] == "up-1"
