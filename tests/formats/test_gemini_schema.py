"""The Gemini schema sanitiser: one test per rule of docs/mappings.md ("To Gemini upstreams"), and a
property."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxycast.formats.gemini.schema import DROPPED, sanitize
from proxycast.testing.gemini import _schema_problem


@pytest.mark.parametrize("keyword", sorted(DROPPED))
def test_rejected_keywords_are_stripped(keyword: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", keyword: 1}}, keyword: 1}
    assert sanitize(schema) == {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param(
            {"type": ["string", "null"]},
            {"type": "STRING", "nullable": True},
            id="nullable-type-array",
        ),
        pytest.param(
            {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            {"type": "INTEGER", "nullable": True},
            id="optional-anyof",
        ),
        pytest.param(
            {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
            id="oneOf-to-anyOf",
        ),
        pytest.param({"const": "x"}, {"enum": ["x"], "type": "STRING"}, id="const-to-enum"),
        pytest.param(
            {"enum": [1, 2]}, {"enum": ["1", "2"], "type": "STRING"}, id="enum-as-strings"
        ),
        pytest.param(
            {"enum": ["a", None]},
            {"enum": ["a"], "type": "STRING", "nullable": True},
            id="enum-null",
        ),
        pytest.param(
            {"properties": {"a": {"type": "string"}}},
            {"properties": {"a": {"type": "STRING"}}, "type": "OBJECT"},
            id="properties-imply-object",
        ),
        pytest.param({"type": "object", "properties": {}}, {"type": "OBJECT"}, id="empty-object"),
        pytest.param(
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "required": ["a", "b", "a"],
            },
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]},
            id="required-only-known",
        ),
        pytest.param(
            {"type": "string", "format": "email"}, {"type": "STRING"}, id="unsupported-format"
        ),
        pytest.param(
            {"type": "string", "format": "date-time"},
            {"type": "STRING", "format": "date-time"},
            id="date-time",
        ),
        pytest.param(
            {
                "allOf": [
                    {"properties": {"a": {"type": "string"}}},
                    {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
                ]
            },
            {
                "properties": {"a": {"type": "STRING"}, "b": {"type": "INTEGER"}},
                "type": "OBJECT",
                "required": ["b"],
            },
            id="allOf-merged",
        ),
        pytest.param(
            {"type": ["string", "integer"]},
            {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
            id="type-array",
        ),
    ],
)
def test_rules(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    assert sanitize(schema) == expected


def test_refs_are_inlined_and_cycles_bounded() -> None:
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/Node"}, "v": {"type": "integer"}},
            }
        },
        "definitions": {"Leaf": {"type": "string", "description": "a leaf"}},
        "type": "object",
        "properties": {
            "head": {"$ref": "#/$defs/Node"},
            "leaf": {"$ref": "#/definitions/Leaf"},
            "x": {"$ref": "#/other"},
        },
    }
    out = sanitize(schema)
    assert out["properties"]["leaf"] == {"type": "STRING", "description": "a leaf"}
    assert out["properties"]["x"] == {"type": "OBJECT"}
    depth, node = 0, out["properties"]["head"]
    while "properties" in node:
        depth += 1
        node = node["properties"]["next"]
    assert depth == 3
    assert node == {"type": "OBJECT", "description": "(a nested Node)"}
    assert "$defs" not in str(out)
    assert "$ref" not in str(out)


def test_the_input_is_not_modified() -> None:
    schema = {"type": ["string", "null"], "additionalProperties": False}
    sanitize(schema)
    assert schema == {"type": ["string", "null"], "additionalProperties": False}


JSON_SCHEMAS = st.recursive(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["string", "integer", "number", "boolean", ["string", "null"], "null"]
            )
        },
        optional={
            "format": st.sampled_from(["email", "date-time", "uuid", "enum"]),
            "const": st.text(max_size=3),
            "additionalProperties": st.booleans(),
            "$comment": st.text(max_size=3),
            "exclusiveMinimum": st.integers(),
            "enum": st.lists(
                st.one_of(st.none(), st.integers(), st.text(max_size=3)), min_size=1, max_size=3
            ),
        },
    ),
    lambda children: (
        st.fixed_dictionaries(
            {
                "type": st.just("object"),
                "properties": st.dictionaries(
                    st.text("abc", min_size=1, max_size=3), children, max_size=3
                ),
            },
            optional={
                "required": st.lists(st.text("abcd", min_size=1, max_size=3)),
                "additionalProperties": st.booleans(),
            },
        )
        | st.fixed_dictionaries({"type": st.just("array"), "items": children})
        | st.fixed_dictionaries({"oneOf": st.lists(children, min_size=1, max_size=3)})
        | st.fixed_dictionaries({"anyOf": st.lists(children, min_size=1, max_size=3)})
    ),
    max_leaves=12,
)


@given(JSON_SCHEMAS)
def test_any_schema_sanitises_to_one_gemini_accepts(schema: dict[str, Any]) -> None:
    assert _schema_problem(sanitize(schema), "schema") is None
