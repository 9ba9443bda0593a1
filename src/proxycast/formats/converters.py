"""Structuring JSON into attrs classes, strictly: the converters of the configuration and of the wire
formats, tagged unions, and validation errors a client can read.

cattrs' default hooks coerce: ``int("5")``, ``bool("false")`` and ``tuple("key")`` all succeed. A gateway
must instead say which field is wrong, so scalars and sequences here accept only their JSON type.

A structuring error is of two sorts (:func:`wrong_types` tells them apart). A known field of the wrong
JSON type, or missing, never becomes valid: no upstream accepts ``"temperature": "hot"``. A value of
the right type that the declarations do not list (an enum value or a ``type`` newer than proxycast:
:class:`UnknownValueError`) may well be valid to an upstream that knows more.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union

import attrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.preconf.json import make_converter

from proxycast.errors import InvalidRequestError

if typing.TYPE_CHECKING:
    from collections.abc import Mapping

    from cattrs import Converter
    from cattrs.errors import BaseValidationError

MAX_PROBLEMS = 10
"""Validation problems an error message lists (and that an array keeps); the rest are counted."""

_JSON_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _type_name(t: Any) -> str:
    if t in _JSON_TYPE_NAMES:
        return _JSON_TYPE_NAMES[t]
    origin = typing.get_origin(t)
    if origin in (list, tuple):
        return "an array"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(t))
    if origin is Union or origin is types.UnionType:
        return " or ".join(_type_name(a) for a in typing.get_args(t) if a is not type(None))
    return "an object"


class UnknownValueError(ValueError):
    """A value of its field's JSON type that the declarations do not list: a new enum value, or the
    ``type`` of an object newer than proxycast."""


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return float(value)


def _structure_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected a boolean")
    return value


def _none(value: Any, _: Any) -> None:
    return None


def _is_sequence(t: Any) -> bool:
    return typing.get_origin(t) in (list, tuple, Sequence)


def _sequence_hook(t: Any, converter: Converter) -> Callable[[Any, Any], Any]:
    args = typing.get_args(t)
    element = args[0] if args else Any
    element_hook = converter.get_structure_hook(element)
    as_tuple = typing.get_origin(t) is not list

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("expected an array")
        items: list[Any] = []
        errors: list[Exception] = []
        failed = 0
        for index, item in enumerate(value):
            try:
                items.append(element_hook(item, element))
            except Exception as exc:
                failed += 1
                if len(errors) == MAX_PROBLEMS:
                    continue  # counted, not kept: a million bad items must not make a million errors
                note = IterableValidationNote(f"Structuring {t} @ index {index}", index, element)
                exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
                errors.append(exc)
        if errors:
            error = IterableValidationError(f"While structuring {t!r}", errors, t)
            error.__dict__["omitted"] = failed - len(errors)  # read by omitted_problems()
            raise error
        return tuple(items) if as_tuple else items

    return structure


def _is_literal(t: Any) -> bool:
    return typing.get_origin(t) is Literal


def _literal_hook(t: Any, _: Converter) -> Callable[[Any, Any], Any]:
    allowed = typing.get_args(t)
    shapes = {type(a) for a in allowed}

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, bool) or value not in allowed:
            if type(value) in shapes:  # the right JSON type: perhaps a value newer than proxycast
                raise UnknownValueError(f"expected {_type_name(t)}")
            raise ValueError(f"expected {_type_name(t)}")
        return value

    return structure


def _is_union(t: Any) -> bool:
    return typing.get_origin(t) in (Union, types.UnionType)


def _union_hook(t: Any, converter: Converter) -> Callable[[Any, Any], Any]:
    """Unions of JSON shapes: None, scalars, arrays and objects, told apart by the value's type."""
    members = typing.get_args(t)
    by_shape: list[tuple[Callable[[Any], bool], Any]] = []
    for member in members:
        if member is type(None):
            by_shape.append((lambda v: v is None, member))
            continue
        elif member is bool:
            by_shape.append((lambda v: isinstance(v, bool), member))
        elif member in (int, float):
            by_shape.append(
                (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), member)
            )
        elif member is str or _is_literal(member):
            by_shape.append((lambda v: isinstance(v, str), member))
        elif _is_sequence(member):
            by_shape.append((lambda v: isinstance(v, list), member))
        else:
            by_shape.append((lambda v: isinstance(v, dict), member))
    hooks = [
        (test, member, _none if member is type(None) else converter.get_structure_hook(member))
        for test, member in by_shape
    ]
    expected = _type_name(t)

    def structure(value: Any, _: Any) -> Any:
        for test, member, hook in hooks:
            if test(value):
                return hook(value, member)
        raise ValueError(f"expected {expected}")

    return structure


def _object_hook(cl: Any, converter: Converter) -> Callable[[Any, Any], Any]:
    """An attrs class from a JSON object only: any other value is "expected an object" (cattrs'
    own hook would fail on ``value["field"]`` and blame the first field)."""
    inner = converter.gen_structure_attrs_fromdict(cl)

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("expected an object")
        return inner(value, cl)

    return structure


def make_strict_converter(*, forbid_extra_keys: bool) -> Converter:
    """A JSON converter whose scalars, literals, unions and sequences accept only their JSON type."""
    converter = make_converter(forbid_extra_keys=forbid_extra_keys, omit_if_default=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook_factory(attrs.has, _object_hook)
    converter.register_structure_hook_factory(_is_literal, _literal_hook)
    converter.register_structure_hook_factory(_is_sequence, _sequence_hook)
    converter.register_structure_hook_factory(_is_union, _union_hook)
    return converter


# Tagged unions (``{"type": "text", ...}``) with a catch-all member. cattrs' ``configure_tagged_union``
# overwrites the default member's tag on unstructure and gives poor errors for values that are not
# objects; this small version keeps unknown members byte for byte (their ``raw`` dict) and names the
# tag when it is missing.


def register_tagged_union(
    converter: Converter,
    union: Any,
    tag_name: str,
    members: Mapping[str, type],
    unknown: type[Any] | None = None,
) -> None:
    """Structure ``union`` by the value of ``tag_name``; unstructure with the tag put back.

    Args:
        members: tag value -> class (the class has no field for the tag).
        unknown: the catch-all class, built from (and unstructured to) the raw dict, for tags not
            in ``members``; when None, an unknown tag is a validation error.
    """
    hooks = {tag: (cls, converter.get_structure_hook(cls)) for tag, cls in members.items()}
    expected = ", ".join(repr(t) for t in members)

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("expected an object")
        tag = value.get(tag_name)
        if tag is None:
            raise ValueError(f"needs a {tag_name!r} field ({expected})")
        found = hooks.get(tag) if isinstance(tag, str) else None
        if found is None:
            if unknown is not None:
                return unknown(value)
            raise UnknownValueError(f"has unknown {tag_name} {tag!r}; expected one of {expected}")
        cls, hook = found
        return hook(value, cls)

    # A predicate hook registered after the strict converter's shape-based union factory takes
    # precedence over it (cattrs tries the latest registration first).
    converter.register_structure_hook_func(lambda t: t == union, structure)
    # Members unstructure with their tag whether they are reached through the union or alone.
    for tag, cls in members.items():
        plain = converter.get_unstructure_hook(cls)

        def unstructure(value: Any, _tag: str = tag, _plain: Any = plain) -> dict[str, Any]:
            return {tag_name: _tag, **_plain(value)}

        converter.register_unstructure_hook(cls, unstructure)
    if unknown is not None:
        converter.register_unstructure_hook(unknown, lambda value: dict(value.raw))


Path = tuple[str | int, ...]


def validation_errors(exc: BaseException, path: Path = ()) -> list[tuple[Path, str]]:
    """Flatten a cattrs structuring error into ``(path, problem)`` pairs, in field order.

    An array keeps the first :data:`MAX_PROBLEMS` failing items only (:func:`omitted_problems`
    counts the others).
    """
    out: list[tuple[Path, str]] = []
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                if hasattr(note, "name"):
                    sub_path = (*path, note.name)
                elif hasattr(note, "index"):
                    sub_path = (*path, note.index)
            out.extend(validation_errors(sub, sub_path))
    elif isinstance(exc, ForbiddenExtraKeysError):
        names = ", ".join(sorted(exc.extra_fields))
        out.append((path, f"unknown key{'s' if len(exc.extra_fields) > 1 else ''}: {names}"))
    elif isinstance(exc, KeyError):
        out.append((path, "is required"))
    elif isinstance(exc, ValueError):
        out.append((path, str(exc)))
    elif isinstance(exc, (TypeError, AttributeError)):
        out.append((path, "has the wrong type"))
    else:
        out.append((path, str(exc) or type(exc).__name__))
    return out


KIND = "type"
"""The field that names what kind of object an object is (a tool, a tool choice, a tool call)."""


def wrong_types(exc: BaseException, path: Path = ()) -> list[tuple[Path, str]]:
    """The problems of a structuring error that no upstream could accept: a known field missing or
    of the wrong JSON type (``(path, problem)`` pairs, as :func:`validation_errors` gives them).

    Left out: values of the right type the declarations do not list (:class:`UnknownValueError`),
    and every problem of an object whose :data:`KIND` is such a value: a kind newer than proxycast
    has fields of its own (``{"type": "custom", "custom": {...}}`` needs no ``function``).
    """
    if isinstance(exc, ClassValidationError):
        subs = [(sub, _field(sub)) for sub in exc.exceptions]
        if any(name == KIND and isinstance(sub, UnknownValueError) for sub, name in subs):
            return []
        return [
            problem
            for sub, name in subs
            for problem in wrong_types(sub, path if name is None else (*path, name))
        ]
    if isinstance(exc, IterableValidationError):
        out = []
        for sub in exc.exceptions:
            index = next(
                (n.index for n in getattr(sub, "__notes__", []) if hasattr(n, "index")), None
            )
            out.extend(wrong_types(sub, path if index is None else (*path, index)))
        return out
    if isinstance(exc, (UnknownValueError, ForbiddenExtraKeysError)):
        return []
    return validation_errors(exc, path)


def _field(exc: BaseException) -> str | None:
    return next((n.name for n in getattr(exc, "__notes__", []) if hasattr(n, "name")), None)


def omitted_problems(exc: BaseException) -> int:
    """The failing array items that a structuring error counted but did not keep."""
    if not isinstance(exc, (ClassValidationError, IterableValidationError)):
        return 0
    own: int = getattr(exc, "omitted", 0)
    return own + sum(omitted_problems(sub) for sub in exc.exceptions)


def describe_problems(exc: BaseException) -> tuple[str, str | None]:
    """An "Invalid request" message listing at most :data:`MAX_PROBLEMS` problems and counting the
    rest, and the first problem's field (OpenAI's ``param``)."""
    problems = validation_errors(exc)
    more = len(problems) - MAX_PROBLEMS + omitted_problems(exc)
    listed = "; ".join(f"'{format_path(p) or 'body'}' {msg}" for p, msg in problems[:MAX_PROBLEMS])
    if more > 0:
        listed += f"; and {more} more problem{'s' if more > 1 else ''}"
    return f"Invalid request: {listed}.", format_path(problems[0][0]) or None


def format_path(path: Path) -> str:
    """``("messages", 0, "role")`` -> ``messages[0].role``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def invalid_request(exc: BaseValidationError) -> InvalidRequestError:
    """A 400 naming the fields at fault (the first few, and a count of the rest; the first in
    ``param``)."""
    message, param = describe_problems(exc)
    return InvalidRequestError(message, param=param)


Problem = tuple[Path, str]


def out_of_range(
    value: float | None, low: float | None, high: float | None, path: Path
) -> list[Problem]:
    """A problem when ``value`` (when given) lies outside ``[low, high]`` (either end open: None)."""
    if value is None:
        return []
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"between {low:g} and {high:g}"
        elif low is not None:
            bounds = f"at least {low:g}"
        else:
            bounds = f"at most {high:g}"
        return [(path, f"must be {bounds}, not {value:g}")]
    return []


def too_many(items: list[Any] | None, most: int, path: Path) -> list[Problem]:
    """A problem when ``items`` has more than ``most`` entries (the API's documented limit)."""
    if items is not None and len(items) > most:
        return [(path, f"may hold at most {most} items, not {len(items)}")]
    return []


def refuse(problems: list[Problem], omitted: int = 0) -> None:
    """Raise the 400 for ``problems`` (the first few and a count of the rest, ``omitted`` ones
    included), if there are any."""
    if not problems:
        return
    listed = "; ".join(f"'{format_path(p) or 'body'}' {msg}" for p, msg in problems[:MAX_PROBLEMS])
    more = len(problems) - MAX_PROBLEMS + omitted
    if more > 0:
        listed += f"; and {more} more problem{'s' if more > 1 else ''}"
    raise InvalidRequestError(
        f"Invalid request: {listed}.", param=format_path(problems[0][0]) or None
    )
