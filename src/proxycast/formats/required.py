"""What every inbound request must hold for the gateway itself, whatever its dialect: a ``model`` to
route by and a ``stream`` flag to answer by.

A request forwarded to an upstream of its own format is checked for these and nothing more (the
upstream is the authority on every other field, and on values newer than proxycast's declarations:
a new role, block type or beta field). A dialect validates the rest when it converts the request;
:func:`deferred` keeps that validation's verdict until then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from proxycast.errors import InvalidRequestError

if TYPE_CHECKING:
    from collections.abc import Callable

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
