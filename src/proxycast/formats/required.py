"""What every inbound request must hold, whatever its dialect and wherever it goes: a ``model`` to
route by, a ``stream`` flag to answer by, and known fields of their JSON type.

A request forwarded to an upstream of its own format is checked for these and nothing more. A known
field missing or of the wrong JSON type (``"messages": "hello"``, ``"temperature": "hot"``) is
refused on every path: no upstream accepts it. The upstream is the authority on everything else:
fields proxycast does not declare, and values newer than its declarations (a new role, block type,
tool type or enum value). A dialect validates those when it converts the request; :func:`structured`
and :func:`deferred` keep that validation's verdict until then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from cattrs.errors import BaseValidationError

from proxycast.errors import InvalidRequestError
from proxycast.formats.converters import invalid_request, omitted_problems, refuse, wrong_types

if TYPE_CHECKING:
    from collections.abc import Callable

    from cattrs import Converter

T = TypeVar("T")


def envelope(body: dict[str, Any]) -> tuple[str, bool]:
    """The request's ``model`` and ``stream``; a 400 naming the field when either is unusable."""
    model = body.get("model")
    problem = None
    if model is None:
        problem = "'model' is required"
    elif not isinstance(model, str):
        problem = "'model' expected a string"
    elif not model:
        problem = "'model' must not be empty"
    if problem is not None or not isinstance(model, str):
        raise InvalidRequestError(f"Invalid request: {problem}.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("Invalid request: 'stream' expected a boolean.", param="stream")
    return model, bool(stream)


def deferred(validate: Callable[[], T]) -> tuple[T | None, InvalidRequestError | None]:
    """``validate()``'s result, or the 400 it raised (raised later, only if the request is
    converted)."""
    try:
        return validate(), None
    except InvalidRequestError as exc:
        return None, exc


def structured(
    converter: Converter, body: dict[str, Any], cls: type[T]
) -> tuple[T | None, InvalidRequestError | None]:
    """``body`` structured as ``cls``; or None and the 400 to raise if the request is converted.

    Raises:
        InvalidRequestError: at once, naming the fields, when a known field is missing or of the
            wrong JSON type (:func:`~proxycast.formats.converters.wrong_types`): on every path.
    """
    try:
        return converter.structure(body, cls), None
    except BaseValidationError as exc:
        refuse(wrong_types(exc), omitted_problems(exc))
        return None, invalid_request(exc)
