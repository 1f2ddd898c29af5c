"""The ``campuswatch`` command.

``campuswatch agent …`` goes straight to the agent's light argparse CLI (see
``campuswatch.agent.cli``), so a lab PC never imports Typer or the collector's libraries.
Every other command is a Typer app whose commands import their role's code lazily.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["agent"]:
        from campuswatch.agent.cli import main as agent_main

        raise SystemExit(agent_main(args[1:]))
    try:
        from campuswatch.commands import app
    except ImportError as exc:
        print(
            f"error: this command needs the collector tools ({exc.name} is missing): "
            "pip install 'campuswatch[collector]'. The agent runs without them: "
            "campuswatch agent --help",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    from campuswatch.cli_errors import run_app

    run_app(app, args, "campuswatch")


if __name__ == "__main__":
    main()
