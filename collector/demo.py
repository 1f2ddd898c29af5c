"""``campuswatch demo``: broker, collector, a simulated district and the web UI, in one command.

Everything runs on this machine with embedded defaults (SQLite register and time series in
``./demo-data``). The broker is Mosquitto (``./setup.sh demo`` installs it), started
privately on a free loopback port so a system broker on 1883 is left alone; without it the
demo says so in one line. Ctrl-C stops every process (simulator, web server, collector,
then the broker); a second run resumes the same data unless ``--fresh`` is given.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from campuswatch.collector.listen import ListenError, bind_listen_socket, split_listen
from campuswatch.localports import free_port, wait_for_port

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

DEMO_SCENARIO = Path(__file__).resolve().parents[1] / "firmware_sim" / "scenarios" / "demo.yaml"
DISTRICT = "sim-d1"
MOSQUITTO_MISSING = "Mosquitto is not installed: run ./setup.sh demo, or apt-get install mosquitto"
_PR_SET_PDEATHSIG = 1


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def choose_broker() -> str:
    """The Mosquitto binary to run; one line and exit 2 when there is none."""
    mosquitto = find_mosquitto()
    if mosquitto is None:
        typer.echo(f"error: {MOSQUITTO_MISSING}", err=True)
        raise typer.Exit(2)
    return mosquitto


def _die_with_parent() -> Callable[[], None] | None:
    """A function for the broker's child process that asks Linux to send it SIGTERM when the
    demo dies, even by SIGKILL, so no private broker is left behind. Resolved here, in the
    parent: the child between fork and exec must only call it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_broker(
    mosquitto: str, data_dir: Path, port: int, log_file: IO[bytes]
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the demo's private Mosquitto on ``127.0.0.1:port``; return it and what it is.

    Its own process group: Ctrl-C in the terminal reaches the demo, which stops the broker
    last, after the collector has disconnected, rather than all at once.
    """
    # `user` = whoever runs the demo: Mosquitto started as root would otherwise switch to
    # its own user, and Linux forgets the parent-death signal on such a switch.
    (data_dir / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"user {getpass.getuser()}\n",
        encoding="utf-8",
    )
    command = [mosquitto, "-c", str(data_dir / "mosquitto.conf")]
    process = subprocess.Popen(
        command,
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
        preexec_fn=_die_with_parent(),  # the demo has started no thread yet
    )
    return process, f"Mosquitto, {mosquitto}"


def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its data.")] = Path(
        "demo-data"
    ),
    fresh: Annotated[
        bool, typer.Option("--fresh/--resume", help="Start from clean, or resume the last run.")
    ] = False,
    listen: Annotated[str, typer.Option(help="HOST:PORT of the web UI and API.")] = (
        "127.0.0.1:8080"
    ),
    schools: Annotated[int, typer.Option(min=1, max=50)] = 3,
    devices: Annotated[int, typer.Option(min=10, max=20000)] = 300,
    seed: Annotated[int, typer.Option(help="Same seed, same district.")] = 7,
    duration: Annotated[
        float, typer.Option(help="Stop after this many seconds (0 = until Ctrl-C).")
    ] = 0.0,
) -> None:
    """Run the whole product on this machine and print the web UI address and a login."""
    import logging

    import uvicorn

    from campuswatch.collector.api.app import create_app
    from campuswatch.collector.db.access import create_user
    from campuswatch.collector.db.models import Site, User
    from campuswatch.collector.service import CollectorService
    from campuswatch.collector.settings import CollectorSettings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Bound before anything starts: a taken port is one line, not a login for no server.
        listening = bind_listen_socket(listen)
    except ListenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    mosquitto = choose_broker()
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    secrets_file = data_dir / "demo-login.txt"
    saved = secrets_file.read_text(encoding="utf-8").split() if secrets_file.exists() else []
    if len(saved) >= 3:
        admin_token, password, display_token = saved[:3]
    else:
        # A display token for the wall: walls refuse the admin token by design.
        admin_token, password = saved[:2] or (secrets.token_urlsafe(24), secrets.token_urlsafe(9))
        display_token = secrets.token_urlsafe(24)
        descriptor = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(f"{admin_token}\n{password}\n{display_token}\n")

    broker_port = free_port()
    log_file = (data_dir / "demo.log").open("ab")
    broker_process, broker_kind = start_broker(mosquitto, data_dir, broker_port, log_file)
    try:
        wait_for_port(broker_port)
    except TimeoutError:
        _stop_process(broker_process)
        typer.echo(f"error: the broker did not start ({broker_kind}); see the log", err=True)
        raise typer.Exit(1) from None
    broker = f"mqtt://127.0.0.1:{broker_port}"
    settings = CollectorSettings(
        broker=broker,
        data_dir=data_dir / "collector",
        listen=listen,
        admin_token=admin_token,  # type: ignore[arg-type]
        display_token=display_token,  # type: ignore[arg-type]
        collector_id="demo",
    )
    service = CollectorService(settings)
    with service.sessions() as session, session.begin():
        for site_id, parent, level, name in [
            ("sim", None, "province", "Tỉnh mô phỏng"),
            (DISTRICT, "sim", "district", "Huyện mô phỏng"),
            *[
                (f"{DISTRICT}-s{n:02d}", DISTRICT, "school", f"Trường mô phỏng số {n}")
                for n in range(1, schools + 1)
            ],
        ]:
            site = session.get(Site, site_id) or Site(id=site_id)
            site.parent_id, site.level, site.name = parent, level, name
            site.uplink_type = "fibre" if level == "school" else None
            session.add(site)
        if session.query(User).filter_by(username="admin").first() is None:
            create_user(session, username="admin", password=password, role="admin")
        seed_register(session, schools=schools, devices=devices, seed=seed)
    service.start()
    host, port = split_listen(listen)
    server = uvicorn.Server(
        uvicorn.Config(create_app(service.api_context), host=host, port=port, log_level="warning")
    )
    http = threading.Thread(
        target=server.run, kwargs={"sockets": [listening]}, name="http", daemon=True
    )
    http.start()
    simulator = [
        sys.executable, "-m", "campuswatch", "sim", "run",
        "--broker", broker, "--schools", str(schools), "--devices", str(devices),
        "--seed", str(seed), "--site-prefix", DISTRICT, "--scenario", str(DEMO_SCENARIO),
        "--progress-every", "30",
    ]  # fmt: skip
    simulator_process = subprocess.Popen(simulator, stdout=log_file, stderr=log_file)
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    url = f"http://{listen}"
    typer.echo(
        f"""
CampusWatch demo is running ({schools} schools, ~{devices} devices, scenario {DEMO_SCENARIO.name}).

  Web UI       {url}/ui/          user: admin   password: {password}
  Wall display {url}/ui/wall?token={display_token}
  API          {url}/docs         Authorization: Bearer {admin_token}
  Metrics      {url}/metrics
  MQTT broker  {broker}   ({broker_kind})
  Data         {data_dir.resolve()}   (log: {data_dir / "demo.log"})

Alerts from the scenario appear within a minute. Ctrl-C stops everything;
run again to resume, or with --fresh to start clean.
"""
    )
    deadline = time.monotonic() + duration if duration > 0 else None
    while not stop.wait(1.0):
        if deadline is not None and time.monotonic() > deadline:
            break
        if broker_process.poll() is not None:
            typer.echo(f"error: the broker stopped ({broker_kind}); see the log", err=True)
            break
        if not http.is_alive():
            typer.echo("error: the web server stopped; see the log", err=True)
            break
    typer.echo("stopping …", err=True)
    # Devices first, the broker last: the collector still has it to say goodbye to.
    _stop_process(simulator_process)
    server.should_exit = True
    http.join(10)
    service.stop()
    _stop_process(broker_process)
    log_file.close()


REGISTERED_SHARE = 0.8
"""Of the simulated equipment, the share the demo's register already holds (room, tag,
purchase date), as a school's register looks after its first import: the rest shows up
unregistered when it reports, and the scenario's rogue hotspot as an unknown device."""


def seed_register(session: Session, *, schools: int, devices: int, seed: int) -> int:
    """Give a fresh demo a realistic register: most of the simulator's devices (the same
    fleet, same ids, MACs and serials) registered with room and asset tag, the others left
    for a facilities manager to confirm. Nothing on a register that already has assets (a
    resumed demo keeps what people did). Returns how many assets it added."""
    from sqlalchemy import func, select

    from campuswatch.collector.db.models import Asset, AssetMac
    from campuswatch.firmware_sim.device import stable_fraction
    from campuswatch.firmware_sim.fleet import build_fleet

    if session.scalar(select(func.count(Asset.id))):
        return 0
    fleet = build_fleet(seed=seed, schools=schools, devices=devices, site_prefix=DISTRICT)
    added = 0
    equipment = [*fleet.devices, *fleet.scanners.values()]
    for device in equipment:
        if stable_fraction("demo-register", seed, device.device_id) >= REGISTERED_SHARE:
            continue
        bought = 2019 + int(stable_fraction("bought", seed, device.device_id) * 6)
        asset = Asset(
            kind=device.device_type,
            name=device.hostname,
            vendor=device.vendor,
            model=device.model_name,
            serial=device.serial,
            device_id=device.device_id,
            site_id=device.site,
            room=f"{device.building}{device.room}",
            # Labs belong to the IT group; the classroom kit to the equipment office.
            owner="Tổ Tin học" if device.device_type == "pc" else "Bộ phận thiết bị",
            asset_tag=f"TB-{device.school:02d}-{device.index + 1:05d}",
            status="in_service",
            registered=True,
            source="import",
            purchase_date=date(bought, 1 + device.index % 12, 1 + device.index % 28),
            warranty_end=date(bought + 3, 1 + device.index % 12, 1 + device.index % 28),
            manual_fields=["room", "asset_tag", "owner"],
        )
        asset.macs.append(AssetMac(mac=device.mac))
        session.add(asset)
        added += 1
    session.flush()
    return added


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdin is not None:
        process.stdin.close()
