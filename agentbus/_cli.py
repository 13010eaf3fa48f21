"""The ``agentbus`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._config import Config, load_config
from ._errors import AgentBusError


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_as_dict(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain JSON-able data (what ``agentbus config`` prints)."""
    result: dict[str, Any] = _jsonable(asdict(config))
    return result


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 5000:
        raise argparse.ArgumentTypeError(f"must be 1-5000, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentbus",
        description=(
            "Durable mailboxes, events, presence, locks and shared storage for a family of AI "
            "agents. Configuration comes from agentbus.json ($AGENTBUS_CONFIG, ./agentbus.json, "
            "~/.agentbus/agentbus.json), then AGENTBUS_REDIS_URL / AGENTBUS_PG_URL / "
            "AGENTBUS_PG_ADMIN_URL / AGENTBUS_SQLITE_PATH, then these options."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="read this agentbus.json")
    parser.add_argument("--redis-url", metavar="URL", help="e.g. redis://127.0.0.1:6380/0")
    parser.add_argument("--sqlite-path", metavar="FILE", help="SQLite database file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("config", help="print the resolved configuration as JSON and exit")
    commands.add_parser(
        "demo",
        help="run the demo on the embedded default (needs the project Redis: scripts/demo.sh "
        "starts it)",
    )
    status = commands.add_parser(
        "status", help="show the family: presence, state, mailboxes, locks, heartbeats"
    )
    status.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS")
    status.add_argument(
        "--limit", type=_page_size, default=200, help="agents shown, 1-5000 (default 200)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # Handler failures and retries are logged as warnings; show them plainly.
    logging.basicConfig(format="  [agentbus] %(message)s", level=logging.WARNING)
    try:
        config = load_config(args.config, redis_url=args.redis_url, sqlite_path=args.sqlite_path)
        if args.command == "config":
            print(json.dumps(config_as_dict(config), indent=2))
            return 0
        if args.command == "status":
            from ._status import run_status

            return run_status(config, watch=args.watch, limit=args.limit)
        from ._demo import run_demo

        return run_demo(config)
    except AgentBusError as exc:
        print(f"agentbus: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
