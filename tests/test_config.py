"""Configuration loading (strict TOML, ${VAR}, environment-only mode) and routing."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from proxycast.cli import main
from proxycast.config import Config, ProviderConfig, load_config
from proxycast.core import routing
from proxycast.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    from pathlib import Path

GOOD = """
[server]
host = "127.0.0.1"
port = 9191
api_keys = ["${PC_KEY}"]

[[providers]]
name = "anthropic"
type = "openai"
base_url = "http://127.0.0.1:1/v1"
api_keys = ["${UP_KEY}", "second-key"]
models = ["claude-sonnet-4-20250514", "claude-3-5-haiku-*"]

[[providers]]
name = "local"
type = "openai"
base_url = "http://127.0.0.1:11434/v1"
api_keys = []
models = ["llama3.2", "qwen*", "claude-3-5-*"]

[aliases]
"gpt-4o" = "claude-sonnet-4-20250514"
"coder" = "local/qwen2.5-coder"
"""

ENV = {"PC_KEY": "client-key", "UP_KEY": "upstream-key", "HOME": "/nonexistent"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxycast.toml"
    path.write_text(text)
    return path


def test_a_full_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env=ENV)
    assert config.server.port == 9191
    assert config.server.api_keys == ("client-key",)
    assert config.providers[0].api_keys == ("upstream-key", "second-key")
    assert config.providers[1].url == "http://127.0.0.1:11434/v1"
    assert config.aliases == {"gpt-4o": "claude-sonnet-4-20250514", "coder": "local/qwen2.5-coder"}
    assert config.generated_key_file is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            GOOD.replace("port = 9191", "portt = 9191"),
            "server: unknown key: portt",
            id="unknown-server-key",
        ),
        pytest.param(
            GOOD.replace('type = "openai"', 'type = "opnai"', 1),
            "providers[0].type: expected one of 'openai', 'anthropic', 'gemini'",
            id="bad-type",
        ),
        pytest.param(
            GOOD.replace("port = 9191", 'port = "9191"'),
            "server.port: expected an integer",
            id="port-string",
        ),
        pytest.param(
            GOOD.replace('api_keys = ["${PC_KEY}"]', 'api_keys = "${PC_KEY}"'),
            "server.api_keys: expected an array",
            id="keys-not-a-list",
        ),
        pytest.param(
            GOOD.replace('name = "local"', 'name = "anthropic"'),
            "providers[1].name: 'anthropic' is used by another provider",
            id="duplicate-name",
        ),
        pytest.param(
            GOOD.replace('name = "local"\n', ""),
            "providers[1].name: is required",
            id="missing-name",
        ),
        pytest.param(
            GOOD + "\n[extra]\na = 1\n", "(top level): unknown key: extra", id="extra-table"
        ),
        pytest.param(
            GOOD.replace("http://127.0.0.1:11434/v1", "127.0.0.1:11434"),
            "providers[1].base_url: must start with http:// or https://",
            id="bad-url",
        ),
        pytest.param("[server\n", "not valid TOML", id="toml-syntax"),
        pytest.param(
            GOOD.replace('"coder" = "local/qwen2.5-coder"', '"coder" = "gpt-4o"'),
            "aliases.coder: points at another alias",
            id="alias-chain",
        ),
        pytest.param(
            GOOD + "\n[routing]\nretries = -1\n", "routing.retries: must be 0 or more", id="retries"
        ),
        pytest.param(
            GOOD + "\n[routing]\ncooldown = 900.0\n",
            "routing.cooldown: must not exceed routing.max_cooldown",
            id="cooldown-over-max",
        ),
        pytest.param(
            GOOD + "\n[routing]\nretry_on = [200]\n",
            "routing.retry_on[0]: 200 is not an error status",
            id="retry-on-success",
        ),
        pytest.param(
            GOOD + "\n[routing]\nhedge_after = -1.0\n",
            "routing.hedge_after: must be 0 or more",
            id="hedge",
        ),
        pytest.param(
            GOOD + "\n[routing]\nretrys = 2\n", "routing: unknown key: retrys", id="routing-typo"
        ),
        pytest.param(
            GOOD + '\n[fallbacks]\n"gpt-4o" = []\n',
            "fallbacks.gpt-4o: lists no target",
            id="no-target",
        ),
        pytest.param(
            GOOD + '\n[fallbacks]\n"gpt-4o" = "local/llama3.2"\n',
            "fallbacks.gpt-4o: expected an array",
            id="fallback-not-a-list",
        ),
        pytest.param(
            GOOD + "\n[responses]\nstore_days = 0\n",
            "responses.store_days: must be positive",
            id="store-days",
        ),
        pytest.param(
            GOOD + "\n[responses]\nstore_max_mb = -5\n",
            "responses.store_max_mb: must be positive",
            id="store-size",
        ),
    ],
)
def test_invalid_files_name_file_key_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_unset_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD), env={"PC_KEY": "x"})
    assert "providers[0].api_keys[0]: environment variable UP_KEY is not set" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.toml", env=ENV)


@pytest.mark.parametrize(
    ("model", "provider", "upstream"),
    [
        pytest.param("gpt-4o", "anthropic", "claude-sonnet-4-20250514", id="alias"),
        pytest.param("coder", "local", "qwen2.5-coder", id="alias-to-prefix"),
        pytest.param(
            "local/claude-sonnet-4-20250514", "local", "claude-sonnet-4-20250514", id="prefix"
        ),
        pytest.param(
            "claude-sonnet-4-20250514", "anthropic", "claude-sonnet-4-20250514", id="exact"
        ),
        pytest.param("llama3.2", "local", "llama3.2", id="exact-second-provider"),
        pytest.param(
            "claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-latest", id="glob-first"
        ),
        pytest.param("claude-3-5-sonnet-x", "local", "claude-3-5-sonnet-x", id="glob-second"),
        pytest.param("qwen3", "local", "qwen3", id="glob"),
    ],
)
def test_routing_order(tmp_path: Path, model: str, provider: str, upstream: str) -> None:
    config = load_config(write(tmp_path, GOOD), env=ENV)
    route = routing.resolve(model, config)
    assert (route.provider.name, route.upstream_model) == (provider, upstream)


def test_exact_name_beats_an_earlier_glob() -> None:
    config = Config(
        providers=(
            ProviderConfig(name="a", type="openai", models=("llama*",)),
            ProviderConfig(name="b", type="openai", models=("llama3",)),
        )
    )
    assert routing.resolve("llama3", config).provider.name == "b"
    assert routing.resolve("llama2", config).provider.name == "a"


def test_unknown_model_and_unknown_prefix(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env=ENV)
    for model in ("gpt-5", "nobody/llama3.2", "local/"):
        with pytest.raises(ModelNotFoundError):
            routing.resolve(model, config)


def test_environment_only_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PROXYCAST_API_KEY": "pk",
        "OPENAI_API_KEY": "sk-1",
        "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
        "HOME": str(tmp_path),
    }
    monkeypatch.chdir(tmp_path)  # no ./proxycast.toml here
    config = load_config(env=env)
    assert config.source == "environment"
    assert config.server.api_keys == ("pk",)
    (provider,) = config.providers
    assert (provider.name, provider.type, provider.url) == (
        "openai",
        "openai",
        env["OPENAI_BASE_URL"],
    )
    assert routing.resolve("gpt-4o-mini", config).provider is provider
    assert routing.resolve("openai/anything", config).upstream_model == "anything"


def test_default_file_in_the_working_directory_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path)
    assert load_config(env=ENV).server.port == 9191


def test_client_key_is_generated_once_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"PROXYCAST_HOME": str(tmp_path / "state")}
    first = load_config(env=env)
    second = load_config(env=env)
    key_file = tmp_path / "state" / "client-key"
    assert first.generated_key_file == key_file
    assert first.server.api_keys == second.server.api_keys
    assert first.server.api_keys[0].startswith("pc-")
    assert len(first.server.api_keys[0]) > 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.server.api_keys[0] not in repr(first)
    assert load_config(env=env, generate_key=False).server.api_keys == ()


def test_check_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = write(tmp_path, GOOD)
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: valid" in out
    assert (
        "provider anthropic (openai, http://127.0.0.1:1/v1, 2 keys): claude-sonnet-4-20250514"
        in out
    )
    assert "alias gpt-4o -> claude-sonnet-4-20250514" in out
    assert "upstream-key" not in out
    bad = write(tmp_path, GOOD.replace("port = 9191", "prot = 1"))
    assert main(["check", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: server: unknown key: prot" in err
