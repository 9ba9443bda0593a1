"""JSON Schema -> the OpenAPI subset Gemini accepts for tool parameters and response schemas.

The rules are listed in docs/mappings.md, "To Gemini upstreams". Real clients send pydantic- and
zod-generated schemas with ``$defs``/``$ref``,
``additionalProperties``, ``["string", "null"]`` type arrays, ``const`` and ``oneOf``; Gemini rejects
those keywords, so each is rewritten or dropped here. Pure; the input is never modified.
"""

from __future__ import annotations

from typing import Any

# Keywords Gemini rejects and that carry no meaning it could use.
DROPPED = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$anchor",
        "additionalProperties",
        "unevaluatedProperties",
        "strict",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "propertyNames",
        "patternProperties",
        "dependentRequired",
        "dependentSchemas",
        "if",
        "then",
        "else",
        "not",
        "examples",
        "contentEncoding",
        "contentMediaType",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
ALLOWED = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
        "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
        "maximum",
    }
)  # fmt: skip
"""The fields of Gemini's ``Schema`` (generativelanguage v1beta): anything else is an "Unknown name"
400, so the sanitiser keeps only these (an allow-list: a keyword JSON Schema adds later is dropped)."""
NOTED = {"uniqueItems": "items are unique", "multipleOf": "a multiple of {}"}
"""Constraints Gemini cannot state, kept in the description for the model to read."""
# String formats Gemini accepts; others are dropped (it rejects them).
STRING_FORMATS = frozenset({"enum", "date-time"})
MAX_REF_DEPTH = 3
"""How many times one definition may be inlined inside itself before the cycle is cut."""


def sanitize(schema: Any) -> dict[str, Any]:
    """A copy of ``schema`` that Gemini accepts (see the module docstring)."""
    if not isinstance(schema, dict):
        return {}
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    return _clean(schema, definitions, ())


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": schema["description"]} if "description" in schema else {}


def _resolve(ref: str, definitions: dict[str, Any]) -> tuple[str, Any] | None:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            name = ref[len(prefix) :]
            if name in definitions:
                return name, definitions[name]
    return None


def _clean(schema: Any, definitions: dict[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        found = _resolve(schema["$ref"], definitions)
        if found is None:  # a reference outside the schema: keep what is known
            return {"type": "OBJECT", **_described(schema)}
        name, target = found
        if stack.count(name) >= MAX_REF_DEPTH:
            # a recursive definition, cut: the model may still send the object, just unchecked
            return {"type": "OBJECT", "description": f"(a nested {name})"}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _clean(merged, definitions, (*stack, name))
    out: dict[str, Any] = {}
    nullable = bool(schema.get("nullable"))
    for key, value in schema.items():
        if key in DROPPED or key in ("$defs", "definitions", "nullable"):
            continue
        if key == "type":
            types = value if isinstance(value, list) else [value]
            if "null" in types:
                nullable = True
            real = [t for t in types if t != "null"]
            if len(real) == 1:
                out["type"] = str(real[0]).upper()
            elif len(real) > 1:
                out["anyOf"] = [{"type": str(t).upper()} for t in real]
        elif key == "const":
            out["enum"] = [value]
        elif key in ("oneOf", "anyOf"):
            options = [o for o in value if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(options) < len(value):
                nullable = True
            cleaned = [_clean(o, definitions, stack) for o in options]
            if len(cleaned) == 1:
                out.update({k: v for k, v in cleaned[0].items() if k not in out})
            elif cleaned:
                out["anyOf"] = cleaned
        elif key == "allOf":
            for part in value:
                for k, v in _clean(part, definitions, stack).items():
                    if k == "properties":
                        out["properties"] = {**out.get("properties", {}), **v}
                    elif k == "required":
                        out["required"] = [*out.get("required", []), *v]
                    else:
                        out.setdefault(k, v)
        elif key == "properties" and isinstance(value, dict):
            props = {name: _clean(sub, definitions, stack) for name, sub in value.items()}
            out["properties"] = {**out.get("properties", {}), **props}
        elif key == "items":
            if isinstance(value, dict):
                out["items"] = _clean(value, definitions, stack)
        elif key == "prefixItems" and isinstance(value, list) and value:
            # a tuple (pydantic's tuple[...]): any of the element types, exactly that many
            cleaned = [_clean(v, definitions, stack) for v in value]
            out["items"] = cleaned[0] if len(cleaned) == 1 else {"anyOf": cleaned}
            out["minItems"] = out["maxItems"] = len(cleaned)
        elif key == "description" and "description" in out:
            continue  # a note was added to it already
        elif key in NOTED and value not in (False, None):
            note = NOTED[key].format(value)
            text = out.get("description") or schema.get("description") or ""
            out["description"] = f"{text} ({note})".strip()
        elif key == "enum" and isinstance(value, list):
            out["enum"] = [v for v in value if v is not None]
            if len(out["enum"]) < len(value):
                nullable = True
        else:
            out[key] = value
    if "properties" in out and "type" not in out:
        out["type"] = "OBJECT"
    if "enum" in out:
        # Gemini's enums are strings
        out["enum"] = [v if isinstance(v, str) else str(v) for v in out["enum"]]
        out["type"] = "STRING"
    if out.get("type") == "STRING" and "format" in out and out["format"] not in STRING_FORMATS:
        del out["format"]
    if out.get("type") not in ("STRING", None) and out.get("format") in STRING_FORMATS:
        del out["format"]
    if "properties" in out:
        if not out["properties"]:
            del out["properties"]  # Gemini rejects an OBJECT with empty properties
            out.pop("required", None)
        elif "required" in out:
            out["required"] = [r for r in dict.fromkeys(out["required"]) if r in out["properties"]]
            if not out["required"]:
                del out["required"]
    if nullable:
        out["nullable"] = True
    return {k: v for k, v in out.items() if k in ALLOWED}
