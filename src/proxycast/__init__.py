"""proxycast: a local LLM gateway that speaks the OpenAI Chat Completions API."""

from proxycast.app import create_app
from proxycast.config import Config, ConfigError, ProviderConfig, ServerConfig, load_config
from proxycast.server import serve

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
