"""``proxycast serve | check | models``: the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

import attrs

from proxycast import __version__, routing
from proxycast.config import Config, ConfigError, check_config, load_config
from proxycast.redact import without_userinfo
from proxycast.server import BindError, bind_socket, run_single, run_workers

if TYPE_CHECKING:
    from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxycast", description="A local LLM gateway.")
    parser.add_argument("--version", action="version", version=f"proxycast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config", help="TOML file (default: ./proxycast.toml, else the environment)"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 9090; 0: a free port)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    for name, text in (
        ("check", "validate the configuration and print the routing table"),
        ("models", "list the models the configuration serves"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument(
            "--config", help="TOML file (default: ./proxycast.toml, else the environment)"
        )
    return parser


def routing_table(config: Config) -> list[str]:
    lines = []
    for provider in config.providers:
        models = ", ".join(provider.models) or "(only as a prefix)"
        lines.append(
            f"  provider {provider.name} ({provider.type}, {without_userinfo(provider.url)}, "
            f"{len(provider.api_keys)} key{'s' if len(provider.api_keys) != 1 else ''}): {models}"
        )
    for alias, target in config.aliases.items():
        lines.append(f"  alias {alias} -> {target}")
    if not config.providers:
        lines.append("  (no providers configured)")
    return lines


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    overrides = {
        name: value
        for name, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if value is not None
    }
    if overrides:
        config = attrs.evolve(config, server=attrs.evolve(config.server, **overrides))
        check_config(attrs.evolve(config, source="command line"))
    sock = bind_socket(config)

    def on_ready(url: str) -> None:
        lines = [f"proxycast listening on {url}"]
        lines += routing_table(config)
        if config.generated_key_file is not None:
            lines.append(
                f"client key: {config.server.api_keys[0]} "
                f"(generated; stored in {config.generated_key_file})"
            )
        print("\n".join(lines), flush=True)

    if config.server.workers > 1:
        return run_workers(config, sock, on_ready)
    return run_single(config, sock, on_ready)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        config = load_config(args.config, generate_key=False)
        if args.command == "check":
            print(f"{config.source}: valid")
            print("routing (in order: aliases, provider/model prefixes, exact names, globs):")
            print("\n".join(routing_table(config)))
        else:
            for name, provider in routing.listed_models(config):
                print(f"{name}\t{provider.name}")
        return 0
    except (ConfigError, BindError) as exc:
        print(f"proxycast: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
