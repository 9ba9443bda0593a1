"""Tagged unions (``{"type": "text", ...}``) for the wire converters, with a catch-all member.

cattrs' ``configure_tagged_union`` overwrites the default member's tag on unstructure and gives poor
errors for values that are not objects; this small version keeps unknown members byte-for-byte (their
``raw`` dict) and names the tag when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxycast._convert import TAGGED_UNIONS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cattrs import Converter


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
    {cls: tag for tag, cls in members.items()}
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
            raise ValueError(f"has unknown {tag_name} {tag!r}; expected one of {expected}")
        cls, hook = found
        return hook(value, cls)

    TAGGED_UNIONS.add(union)
    converter.register_structure_hook(union, structure)
    # Members unstructure with their tag whether they are reached through the union or alone.
    for tag, cls in members.items():
        plain = converter.get_unstructure_hook(cls)

        def unstructure(value: Any, _tag: str = tag, _plain: Any = plain) -> dict[str, Any]:
            return {tag_name: _tag, **_plain(value)}

        converter.register_unstructure_hook(cls, unstructure)
    if unknown is not None:
        converter.register_unstructure_hook(unknown, lambda value: dict(value.raw))
