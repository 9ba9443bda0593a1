"""proxycast: a local LLM gateway. Clients speak the OpenAI Chat Completions or the Anthropic Messages API
to one endpoint; each request is routed by its model to an OpenAI-compatible, Anthropic or Gemini upstream.

``serve`` runs it (in a trio program too), ``create_app`` builds the Quart-Trio app, ``load_config`` reads
a configuration. ``docs/architecture.md`` describes the code.
"""

from proxycast.config import Config, ProviderConfig, ServerConfig, load_config
from proxycast.errors import ConfigError
from proxycast.server.app import create_app
from proxycast.server.serve import serve

__version__ = "0.1.0"

__all__ = (
    "Config",
    "ConfigError",
    "ProviderConfig",
    "ServerConfig",
    "__version__",
    "create_app",
    "load_config",
    "serve",
)
