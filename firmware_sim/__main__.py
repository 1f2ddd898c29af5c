"""``python -m campuswatch.firmware_sim run …`` (the same as ``campuswatch sim run …``)."""

from campuswatch.cli_errors import run_app
from campuswatch.firmware_sim.cli import app

run_app(app, None, "campuswatch sim")
