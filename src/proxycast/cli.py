"""``proxycast serve | reload | check | models | usage | requests | keys``: the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from proxycast import __version__
from proxycast.config import Config, check_config, load_config
from proxycast.core.redact import without_userinfo
from proxycast.errors import BindError, ConfigError
from proxycast.http.loopguard import check_not_self
from proxycast.ledger.store import GROUPS
from proxycast.server.reload import Coordinator, request_reload
from proxycast.server.serve import bind_socket, run_single, run_workers
from proxycast.upstream import catalog, diagnostics
from proxycast.upstream.provider import make_client

if TYPE_CHECKING:
    from collections.abc import Sequence


def _positive(text: str) -> int:
    """A whole number of 1 or more (``--limit``: SQLite reads a negative LIMIT as none at all,
    Postgres refuses it)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not {text!r}")
    return value


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
    serve.add_argument(
        "--watch",
        action="store_true",
        help="reload the configuration when its file changes (as SIGHUP and proxycast reload do)",
    )
    reload = commands.add_parser(
        "reload", help="make the running proxycast serve of this data directory reload its file"
    )
    reload.add_argument(
        "--config", help="the file the server runs from (default: the one it was started with)"
    )
    reload.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the outcome (default 30)"
    )
    for name, text in (
        ("check", "validate the configuration and print the routing table"),
        ("models", "list the models the gateway serves (asking glob providers' upstreams)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument(
            "--config", help="TOML file (default: ./proxycast.toml, else the environment)"
        )
        if name == "check":
            sub.add_argument(
                "--online",
                action="store_true",
                help="also call each provider's models endpoint with each of its keys",
            )
    usage = commands.add_parser("usage", help="what the ledger says: requests, tokens, cost")
    usage.add_argument(
        "--config", help="TOML file (default: ./proxycast.toml, else the environment)"
    )
    usage.add_argument("--since", default="24h", help="24h, 7d or YYYY-MM-DD (default 24h)")
    usage.add_argument("--by", choices=GROUPS, default="client")
    usage.add_argument("--json", action="store_true", help="a JSON list of row objects")
    requests = commands.add_parser(
        "requests", help="captured requests ([capture]): list them, show one whole"
    )
    actions = requests.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the captured requests, newest first")
    listing.add_argument("--since", default="24h", help="24h, 7d or YYYY-MM-DD (default 24h)")
    listing.add_argument("--client", help="only this client's requests")
    listing.add_argument(
        "--limit", type=_positive, default=100, help="at most this many (default 100)"
    )
    show = actions.add_parser("show", help="one captured request: bodies, reply, attempts")
    show.add_argument("id", help="the request's id (its x-request-id)")
    for sub in (listing, show):
        sub.add_argument(
            "--config", help="TOML file (default: ./proxycast.toml, else the environment)"
        )
        sub.add_argument("--json", action="store_true", help="JSON instead of text")
    _keys_parser(commands)
    return parser


def _requests(args: argparse.Namespace) -> int:
    from proxycast.errors import LedgerUnavailableError
    from proxycast.ledger import captures, report

    config = load_config(args.config, generate_key=False)
    try:
        store = captures.open_reader(config.ledger)
    except ValueError as exc:
        print(f"proxycast: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "list":
            try:
                since = report.parse_since(args.since)
            except ValueError as exc:
                print(f"proxycast: {exc}", file=sys.stderr)
                return 2
            rows = store.captures(since, args.client, args.limit)
            print(json.dumps(rows, indent=2) if args.json else captures.render_list(rows))
            return 0
        row = store.captured(args.id)
    except LedgerUnavailableError as exc:  # its message names the database, not its password
        print(f"proxycast: cannot read the ledger: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if row is None:
        print(f"proxycast: no captured request {args.id!r}", file=sys.stderr)
        return 1
    shown = captures.details(row)
    print(json.dumps(shown, indent=2, ensure_ascii=False) if args.json else captures.render(shown))
    return 0


def _keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys", help="client keys made at run time (kept hashed in the state database)"
    )
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; prints it once, on the last line")
    create.add_argument("--name", required=True, help="the client's name (usage, logs, metrics)")
    create.add_argument(
        "--models", nargs="+", default=[], metavar="GLOB", help="models it may use (default: all)"
    )
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--max-usd-per-day", type=float, help="USD per UTC day")
    create.add_argument("--max-usd-per-month", type=float, help="USD per UTC month")
    create.add_argument("--expires", help="30d, 12h, 15m, 45s or YYYY-MM-DD (default: never)")
    listing = actions.add_parser("list", help="the keys and their settings (never the key)")
    listing.add_argument("--json", action="store_true", help="a JSON list of key objects")
    actions.add_parser("revoke", help="stop a key at once").add_argument("name")
    actions.add_parser("rotate", help="a new key for NAME; the old one stops").add_argument("name")
    for sub in (create, listing, *(actions.choices[n] for n in ("revoke", "rotate"))):
        sub.add_argument(
            "--config", help="TOML file (default: ./proxycast.toml, else the environment)"
        )


def _keys(args: argparse.Namespace) -> int:
    import json
    import time

    from proxycast.accounting import keystore
    from proxycast.state.keys import KeyStoreUnavailableError

    config = load_config(args.config, generate_key=False)
    store = keystore.open_store(config)
    try:
        if args.action == "create":
            fields = {
                "name": args.name,
                "models": args.models,
                "rpm": args.rpm,
                "tpm": args.tpm,
                "max_usd_per_day": args.max_usd_per_day,
                "max_usd_per_month": args.max_usd_per_month,
                "expires": args.expires,
            }
            made, secret = keystore.create(
                store, keystore.spec(fields, config.clients, time.time())
            )
            # where it is kept: a server reading another store (a --config not passed) never sees it
            print(f"created key {made.name!r} in {store.where}; it is shown once, here:")
            print(secret)
        elif args.action == "list":
            keys = [keystore.public(k) for k in store.load()]
            if args.json:
                print(json.dumps(keys, indent=2))
            else:
                print(_render_keys(keys))
        elif args.action == "revoke":
            keystore.revoke(store, args.name)
            print(f"revoked key {args.name!r} in {store.where}")
        else:
            made, secret = keystore.rotate(store, args.name)
            print(
                f"rotated key {made.name!r} in {store.where}; the old key no longer works; "
                "the new one, once:"
            )
            print(secret)
    except keystore.KeyProblemError as problem:
        looked = f" Looked in {store.where}." if problem.status == 404 else ""
        print(f"proxycast: {problem.message}{looked}", file=sys.stderr)
        return 1
    except KeyStoreUnavailableError as exc:  # its message names the store, not its password
        print(f"proxycast: cannot reach the client keys' store: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _render_keys(keys: list[dict[str, object]]) -> str:
    import datetime

    def when(seconds: object) -> str:
        if not isinstance(seconds, (int, float)):
            return "never"
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M UTC")

    def shown(value: object) -> str:
        return "-" if value is None else str(value)

    lines = ["name\tmodels\trpm\ttpm\tusd/day\tusd/month\tcreated\texpires"]
    for k in keys:
        models = k["models"]
        lines.append(
            "\t".join(
                [
                    str(k["name"]),
                    ",".join(models) if isinstance(models, list) and models else "all",
                    shown(k["rpm"]),
                    shown(k["tpm"]),
                    shown(k["max_usd_per_day"]),
                    shown(k["max_usd_per_month"]),
                    when(k["created"]),
                    when(k["expires"]),
                ]
            )
        )
    if not keys:
        lines.append("(no runtime keys)")
    return "\n".join(lines)


def _usage(args: argparse.Namespace) -> int:
    from proxycast.errors import LedgerUnavailableError
    from proxycast.ledger import report

    config = load_config(args.config, generate_key=False)
    if config.ledger.url == "off":
        print("proxycast: the ledger is off (ledger.url = 'off')", file=sys.stderr)
        return 1
    try:
        since = report.parse_since(args.since)
    except ValueError as exc:
        print(f"proxycast: {exc}", file=sys.stderr)
        return 2
    try:
        rows = report.usage(config.ledger, since, args.by)
    except LedgerUnavailableError as exc:  # its message names the database, not its password
        print(f"proxycast: cannot read the ledger: {exc}", file=sys.stderr)
        return 1
    print(report.to_json(rows) if args.json else report.render(rows, args.by))
    return 0


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
    for rule in config.routes:
        matched = {k: v for k, v in attrs.asdict(rule.match).items() if v not in (None, {})}
        where = ", ".join(f"{k}={v!r}" for k, v in matched.items()) or "every request"
        lines.append(f"  rule {rule.name}: {where} -> {rule.target}")
    routing = config.routing
    if routing.strategy != "order" or routing.affinity != "none" or routing.weights:
        lines.append(
            f"  selection: strategy {routing.strategy}, affinity {routing.affinity}"
            + (f", weights {dict(routing.weights)}" if routing.weights else "")
        )
    for model, own in routing.models.items():
        settings = {k: v for k, v in attrs.asdict(own).items() if v is not None}
        lines.append(f"  selection for {model}: {settings}")
    if not config.providers:
        lines.append("  (no providers configured)")
    return lines


def _check(config: Config, online: bool) -> int:
    found = diagnostics.problems(config)
    print(f"{config.source}: {'valid' if not found else 'valid, but:'}")
    for problem in found:
        print(f"  problem: {problem}")
    print(
        "routing (rules first, the first that matches; then aliases, provider/model prefixes,"
        " exact names, globs):"
    )
    print("\n".join(routing_table(config)))
    if online and config.providers:
        print("online (each provider's models endpoint, with each key):")
        for result in trio.run(diagnostics.probe_all, config):
            print(f"  {result.label}: {result.outcome}: {result.detail}")
            if result.outcome != "reachable":
                found.append(result.label)
    return 1 if found else 0


def _models(config: Config) -> int:
    async def fetch() -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
        async with make_client(config.server) as client:
            return await catalog.fetch_all(client, config, catalog.globbing(config))

    fetched, failures = trio.run(fetch)
    for name, provider in catalog.listed(config, fetched):
        print(f"{name}\t{provider.name}")
    for failed, failure in failures.items():
        print(f"proxycast: provider {failed!r}: cannot list its models: {failure}", file=sys.stderr)
    return 0


def raise_open_file_limit() -> None:
    """Raise the soft limit of open files to the hard one (workers inherit it): every stream holds
    two sockets, and a soft limit of 1,024 (a common default) would cap a worker near 500 streams."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (hard, 1 << 20, 1 << 16) if hard == resource.RLIM_INFINITY else (hard,):
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            continue  # above what the system allows a process (fs.nr_open): a lower one
        return


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
    raise_open_file_limit()
    sock = bind_socket(config)
    host, port = sock.getsockname()[:2]
    try:
        check_not_self(config, host, port)
    except ConfigError:
        sock.close()
        raise

    def on_ready(url: str) -> None:
        lines = [f"proxycast listening on {url}"]
        lines += routing_table(config)
        lines += [f"  warning: {problem}" for problem in diagnostics.problems(config)]
        if config.generated_key_file is not None:
            lines.append(
                f"client key: {config.server.api_keys[0]} "
                f"(generated; stored in {config.generated_key_file})"
            )
        print("\n".join(lines), flush=True)

    coordinator = Coordinator(config, overrides, watch=args.watch)

    def on_serving(url: str) -> None:
        coordinator.started(url, (host, port))
        on_ready(url)

    try:
        if config.server.workers > 1:
            return run_workers(config, sock, on_serving, coordinator)
        return run_single(config, sock, on_serving, coordinator)
    finally:
        coordinator.stopped()


def _reload(args: argparse.Namespace) -> int:
    code, message = request_reload(args.config, args.wait)
    print(f"proxycast: {message}", file=sys.stderr if code else sys.stdout)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "usage":
            return _usage(args)
        if args.command == "requests":
            return _requests(args)
        if args.command == "reload":
            return _reload(args)
        if args.command == "keys":
            return _keys(args)
        config = load_config(args.config, generate_key=False)
        if args.command == "check":
            return _check(config, args.online)
        return _models(config)
    except (ConfigError, BindError) as exc:
        print(f"proxycast: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
