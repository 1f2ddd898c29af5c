"""``campuswatch agent …``: the agent's own command line, on the standard library.

Typer (used for every other command) now pulls in pydantic and rich, ~15 MB of resident
memory on every lab PC; the agent's target is 35 MB in all, so its commands are parsed with
argparse and dispatched before Typer is ever imported.
"""

from __future__ import annotations

import argparse
import logging
import os
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
        "while the broker is unreachable and are sent when it returns. One agent per state "
        "dir. Exit status: 0 stopped, 2 bad settings or unusable state dir, 3 enrolment "
        "refused, 5 another agent is already running with this state dir.",
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

    enroll = commands.add_parser(
        "enroll",
        help="exchange the school's enrolment token for this PC's own broker login",
        description="Ask the collector for this PC's own MQTT user name and password with the "
        "enrolment token IT staff created for the school, and keep them in the state dir "
        "(enrolment.json, readable by the agent's user only). 'agent run' then uses them. "
        "Exit status: 0 enrolled, 2 bad options, 3 refused, 4 collector unreachable.",
    )
    enroll.add_argument(
        "--server", required=True, help="the collector, e.g. https://collector.district.vn"
    )
    enroll.add_argument("--token", required=True, help="the school's enrolment token (cwe_…)")
    enroll.add_argument(
        "--ca-file", help="CA certificate of the collector's HTTPS server, if not a public one"
    )
    enroll.add_argument(
        "--forget-token",
        action="store_true",
        help="do not keep the token: a clone of this disk then cannot enrol on its own",
    )
    common(enroll)
    return parser


def _settings(args: argparse.Namespace) -> AgentSettings:
    overrides: dict[str, Any] = {"site": args.site}
    if args.state_dir is not None:
        overrides["state_dir"] = str(args.state_dir)
    if getattr(args, "broker", None):
        overrides["mqtt"] = {"broker": args.broker}
    return load_settings(args.config, overrides)


def state_dir_problem(state_dir: Path) -> str | None:
    """Why the agent cannot keep its identity and queue in ``state_dir``, or None."""
    try:
        if state_dir.exists() and not state_dir.is_dir():
            return f"state dir {state_dir} is not a directory"
    except PermissionError:
        return (
            f"state dir {state_dir} cannot be reached: permission denied; run as the "
            "agent's user or choose another state_dir"
        )
    probe = state_dir / f".write-test-{os.getpid()}"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        probe.unlink()
    except OSError as exc:
        return f"state dir {state_dir} is not writable: {exc.strerror or exc}"
    return None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


EXIT_ALREADY_RUNNING = 5


def _run(settings: AgentSettings) -> int:
    from campuswatch.agent.memory import use_one_malloc_arena

    use_one_malloc_arena()  # before the first thread starts
    _setup_logging(settings.log_level)
    from campuswatch.agent.instance_lock import AlreadyRunning, InstanceLock

    problem = state_dir_problem(settings.resolved_state_dir())
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    lock = InstanceLock(settings.resolved_state_dir())
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"error: {exc}; stop it first or give this one its own --state-dir", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except OSError as exc:
        print(f"error: cannot lock {lock.path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        return _run_locked(settings)
    finally:
        lock.release()


def _run_locked(settings: AgentSettings) -> int:
    from campuswatch.agent.main import build_runner
    from campuswatch.wire.mqtt import BrokerUrlError

    try:
        runner = build_runner(settings)
    except (BrokerUrlError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # The enrolment module is imported only by PCs that enrol; if it raised, it is loaded.
        enrolment = sys.modules.get("campuswatch.agent.enrolment")
        if enrolment is not None and isinstance(exc, enrolment.EnrolmentError):
            print(f"error: enrolment failed: {exc}", file=sys.stderr)
            return 3
        raise

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
    import json  # only here: ``agent run`` encodes with msgspec and never loads it

    from campuswatch.agent.main import broker_status, collect_once, summarise
    from campuswatch.wire.codec import encode_message

    problem = state_dir_problem(settings.resolved_state_dir())
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    messages = collect_once(settings)
    # The line below says it; the connection's own warning would say it twice.
    logging.getLogger("campuswatch.wire.mqtt").setLevel(logging.ERROR)
    broker_line = broker_status(settings, messages[0].device_id)
    if as_json:
        print(json.dumps([json.loads(encode_message(m)) for m in messages], indent=2))
        print(broker_line, file=sys.stderr)  # stdout stays pure JSON
    else:
        print("\n".join([*summarise(messages), broker_line]))
    return 0


def _enroll(settings: AgentSettings, args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    from campuswatch.agent.enrolment import EnrolmentError, enrol

    try:
        stored, identity = enrol(
            settings.resolved_state_dir(),
            args.server,
            args.token,
            ca_file=args.ca_file or settings.enrolment.ca_file,
            configured_device_id=settings.device_id,
            keep_token=not args.forget_token,
        )
    except EnrolmentError as exc:
        print(f"error: enrolment failed: {exc}", file=sys.stderr)
        return 4 if exc.reason == "unreachable" else 3
    except OSError as exc:
        print(f"error: cannot write the state dir: {exc}", file=sys.stderr)
        return 2
    if identity.info.origin == "reidentified":
        print(
            f"note: {identity.info.previous_device_id} belongs to another machine; "
            f"this PC now has its own id"
        )
    print(f"enrolled as {stored.device_id} at site {stored.site}; broker {stored.broker_url}")
    print(f"credentials kept in {settings.resolved_state_dir() / 'enrolment.json'}")
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
    if args.command == "enroll":
        return _enroll(settings, args)
    return _once(settings, args.json)
