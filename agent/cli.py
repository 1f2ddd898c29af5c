"""``campuswatch agent …``: the agent's own command line, on the standard library.

Typer (used for every other command) now pulls in pydantic and rich, ~15 MB of resident
memory on every lab PC; the agent's target is 35 MB in all, so its commands are parsed with
argparse and dispatched before Typer is ever imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from campuswatch.agent.settings import AgentSettings, ConfigError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campuswatch agent",
        description="The CampusWatch agent for lab PCs: antivirus, connectivity, inventory "
        "and health, reported over MQTT.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config", "-c", type=Path, help="TOML config file (see agent.sample.toml)"
        )
        sub.add_argument("--site", "-s", help="site (school) id this PC belongs to")
        sub.add_argument(
            "--state-dir", type=Path, help="where the identity and the offline queue are kept"
        )

    run = commands.add_parser(
        "run",
        help="run the agent: collect probes on schedule and publish them",
        description="Run the agent until stopped (SIGTERM/Ctrl-C). Messages wait on disk "
        "while the broker is unreachable and are sent when it returns.",
    )
    run.add_argument("--broker", help="mqtt://host:port or mqtts://host:port")
    common(run)

    once = commands.add_parser(
        "once",
        help="collect every probe once and print the result; nothing is sent",
        description="What IT staff run on a PC to check what the agent would report.",
    )
    once.add_argument("--json", action="store_true", help="print the messages as JSON")
    common(once)
    return parser


def _settings(args: argparse.Namespace) -> AgentSettings:
    overrides: dict[str, Any] = {"site": args.site}
    if args.state_dir is not None:
        overrides["state_dir"] = str(args.state_dir)
    if getattr(args, "broker", None):
        overrides["mqtt"] = {"broker": args.broker}
    return load_settings(args.config, overrides)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(settings: AgentSettings) -> int:
    _setup_logging(settings.log_level)
    from campuswatch.agent.main import build_runner
    from campuswatch.wire.mqtt import BrokerUrlError

    try:
        runner = build_runner(settings)
    except (BrokerUrlError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def _on_signal(signum: int, frame: object) -> None:
        runner.request_stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    runner.start()
    runner.wait()
    runner.stop()
    return 0


def _once(settings: AgentSettings, as_json: bool) -> int:
    _setup_logging("WARNING")
    from campuswatch.agent.main import collect_once, summarise
    from campuswatch.wire.codec import encode_message

    messages = collect_once(settings)
    if as_json:
        print(json.dumps([json.loads(encode_message(m)) for m in messages], indent=2))
    else:
        print("\n".join(summarise(messages)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "run":
        return _run(settings)
    return _once(settings, args.json)
