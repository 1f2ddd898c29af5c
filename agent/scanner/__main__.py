"""``python -m campuswatch.agent.scanner``: the scan command without the full CLI."""

import typer

from campuswatch.agent.scanner.cli import scan

if __name__ == "__main__":
    typer.run(scan)
