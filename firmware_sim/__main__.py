"""``python -m campuswatch.firmware_sim run …`` (the same as ``campuswatch sim run …``)."""

from campuswatch.firmware_sim.cli import app

app(prog_name="campuswatch sim")
