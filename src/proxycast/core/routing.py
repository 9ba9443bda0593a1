"""Model routing: which provider serves a model, under which upstream name. Pure, no I/O.

Order (``docs/configuration.md``): alias; ``provider/model`` prefix; a provider listing the model
exactly; the first provider (in file order) whose glob matches.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import attrs

from proxycast.errors import ModelNotFoundError

if TYPE_CHECKING:  # the configuration imports this module (to check the rules' targets)
    from proxycast.config import Config, ProviderConfig  # noqa: TC004 - Route is never structured

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(pattern)


@attrs.frozen
class Route:
    provider: ProviderConfig
    upstream_model: str
    """The model name the upstream receives."""


def _resolve_direct(model: str, config: Config) -> Route | None:
    name, slash, rest = model.partition("/")
    if slash and rest:
        provider = config.provider(name)
        if provider is not None:
            return Route(provider, rest)
    for provider in config.providers:
        if model in provider.models:
            return Route(provider, model)
    for provider in config.providers:
        for pattern in provider.models:
            if is_glob(pattern) and fnmatchcase(model, pattern):
                return Route(provider, model)
    return None


def resolve(model: str, config: Config) -> Route:
    """The route for ``model``.

    Raises:
        ModelNotFoundError: no alias, prefix, name or glob matches.
    """
    target = config.aliases.get(model, model)
    route = _resolve_direct(target, config)
    if route is None:
        raise ModelNotFoundError(
            f"The model {model!r} does not exist or is not served by this gateway. "
            "GET /v1/models lists the models it serves.",
            param="model",
            code="model_not_found",
        )
    return route


def listed_models(config: Config) -> list[tuple[str, ProviderConfig]]:
    """The models to list: every exact model name, then every alias whose target routes, then the
    model of every rule that names one exactly (``claude-fast`` -> a local model: Claude Code's
    model picker shows it)."""
    seen: set[str] = set()
    out: list[tuple[str, ProviderConfig]] = []
    for provider in config.providers:
        for name in provider.models:
            if not is_glob(name) and name not in seen:
                seen.add(name)
                out.append((name, provider))
    for alias, target in config.aliases.items():
        route = _resolve_direct(target, config)
        if route is not None and alias not in seen:
            seen.add(alias)
            out.append((alias, route.provider))
    for rule in config.routes:  # a rule for one model name makes it a name clients may ask for
        named = rule.match.model
        if named is None or is_glob(named) or named in seen:
            continue
        route = _resolve_direct(config.aliases.get(rule.target, rule.target), config)
        if route is not None:
            seen.add(named)
            out.append((named, route.provider))
    return out


def targets(model: str, config: Config) -> tuple[list[Route], list[Route]]:
    """Every route that may serve ``model``, in the order they are tried: its own (every provider that
    lists the resolved name exactly serves it, in file order; else the one route :func:`resolve` finds),
    then its fallbacks (``fallbacks[model]``, else ``fallbacks["*"]``), as two lists. A fallback that
    routes nowhere is skipped.

    Raises:
        ModelNotFoundError: ``model`` itself routes nowhere (fallbacks do not make up a model).
    """
    first = resolve(model, config)
    name, slash, rest = config.aliases.get(model, model).partition("/")
    pinned = bool(slash and rest and config.provider(name) is not None)  # "provider/model"
    own = [first]
    if not pinned and first.upstream_model in first.provider.models:
        own = [
            Route(provider, first.upstream_model)
            for provider in config.providers
            if first.upstream_model in provider.models
        ]
    fallbacks: list[Route] = []
    for target in config.fallbacks.get(model, config.fallbacks.get("*", ())):
        route = _resolve_direct(config.aliases.get(target, target), config)
        if route is not None and route not in own and route not in fallbacks:
            fallbacks.append(route)
    return own, fallbacks
