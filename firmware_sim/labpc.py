"""Simulated lab PCs that send exactly what the PC agent sends.

The antivirus answer of a Windows PC is produced the way the agent produces it on a real
one: this module plays Windows' part (the JSON that Security Center, ``Get-MpComputerStatus``
and ``Get-MpThreat`` print) and hands it to the agent's own ``collect_windows_av``, parsers
and ``av_status``. A change to the agent's interpretation of Defender therefore shows in
the simulator too, instead of a copy drifting away from it. ClamAV reads files on disk, so
its product is built directly, with the agent's field meanings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import ClassVar, Final

from campuswatch import __version__
from campuswatch.agent.commands import CommandError, CommandResult
from campuswatch.agent.identity import HardwareFacts, derive_device_id
from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes.av import av_status
from campuswatch.agent.probes.av_windows import (
    DEFENDER_STATUS_SCRIPT,
    SECURITY_CENTER_SCRIPT,
    THREATS_SCRIPT,
    collect_windows_av,
)
from campuswatch.agent.probes.inventory import inventory_digest
from campuswatch.agent.settings import AgentSettings
from campuswatch.firmware_sim.device import Catalogue, Happening, Moment, SimDevice
from campuswatch.firmware_sim.schoolday import occupancy
from campuswatch.wire.messages import (
    AvMessage,
    AvProduct,
    CpuInfo,
    DiskInfo,
    DiskUse,
    DnsCheck,
    GatewayCheck,
    HardwareInfo,
    HealthMessage,
    HelloMessage,
    IdentityInfo,
    InterfaceInfo,
    InventoryMessage,
    Message,
    NetMessage,
    OsInfo,
    SoftwareItem,
    TargetCheck,
)

AV_PROFILES: Final = ("up_to_date", "stale_signatures", "realtime_off", "no_av", "clamav")
# The mix the brief asks for: ~75 % fine, ~10 % stale, ~5 % real-time off, ~5 % none, ~5 % ClamAV.
AV_PROFILE_WEIGHTS: Final = (75, 10, 5, 5, 5)
# Reports between two av/net messages; health goes with every report (the agent's 60 s vs 300 s).
SLOW_PROBE_EVERY: Final = 5
DISK_BYTES: Final = 256 * 10**9
MEMORY_BYTES: Final = 8 * 2**30
_SETTINGS: Final = AgentSettings()
_SOFTWARE: Final = (
    SoftwareItem(name="Microsoft Office LTSC Professional Plus 2021", version="16.0.14332"),
    SoftwareItem(name="Scratch 3", version="3.29.1"),
    SoftwareItem(name="Mozilla Firefox", version="128.5.1"),
    SoftwareItem(name="Unikey", version="4.3"),
)


def _ms_json_date(moment: datetime) -> str:
    """A DateTime as Windows PowerShell 5.1's ConvertTo-Json prints it."""
    return f"/Date({int(moment.timestamp() * 1000)})/"


class LabPc(SimDevice):
    device_type: ClassVar[str] = "pc"
    id_prefix: ClassVar[str] = "pc"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("Dell Inc.", "d8:9e:f3"), ("HP", "3c:52:82"), ("LENOVO", "e8:6a:64")),
        models=("OptiPlex 3080", "ProDesk 400 G7", "ThinkCentre M70s"),
        firmware_versions=("2.21.0", "S07 02.19.00", "M2WKT56A"),
    )
    __slots__ = (
        "av_profile",
        "bkav_primary",
        "fingerprint_salt",
        "product_uuid",
        "realtime_off",
        "reports",
        "signature_phase_h",
        "stale_age_at_start_h",
        "stale_since",
        "threats",
        "uplink_type",
    )

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.av_profile = self.rng.choices(AV_PROFILES, AV_PROFILE_WEIGHTS)[0]
        self.product_uuid = "%08x-%04x-%04x-%04x-%012x" % tuple(  # noqa: UP031
            self.rng.getrandbits(bits) for bits in (32, 16, 16, 16, 48)
        )
        self.fingerprint_salt = ""
        facts = self.hardware_facts()
        self.device_id = derive_device_id(facts, prefix="pc")
        self.realtime_off = self.av_profile == "realtime_off"
        # A few schools bought BKAV; Defender then runs passive beside it.
        self.bkav_primary = self.av_profile == "up_to_date" and self.rng.random() < 0.2
        self.signature_phase_h = self.rng.uniform(0, 24)
        self.stale_since: datetime | None = None
        self.stale_age_at_start_h = self.rng.uniform(8 * 24, 30 * 24)
        self.threats = 0
        self.reports = 0
        self.uplink_type = "fibre" if self.school % 4 else "4g"

    @property
    def is_windows(self) -> bool:
        return self.av_profile not in ("no_av", "clamav")

    def hardware_facts(self) -> HardwareFacts:
        uuid = self.product_uuid + self.fingerprint_salt
        return HardwareFacts(product_uuid=uuid, machine_id=None, macs=(self.mac,))

    @property
    def hostname(self) -> str:
        return f"LAB-{self.building}{self.room}-{self.index % 100:02d}"

    # --- antivirus ---------------------------------------------------------------------

    def signature_age_hours(self, sim_now: datetime) -> float:
        if self.av_profile == "stale_signatures" and self.stale_since is None:
            self.stale_since = sim_now - timedelta(hours=self.stale_age_at_start_h)
        if self.stale_since is not None:
            return max(0.0, (sim_now - self.stale_since).total_seconds() / 3600)
        # Updated once a day at this PC's own hour.
        hours = sim_now.timestamp() / 3600 + self.signature_phase_h
        return hours % 24

    def stop_signature_updates(self, sim_now: datetime) -> None:
        if self.stale_since is None:
            self.stale_since = sim_now - timedelta(hours=self.signature_age_hours(sim_now))

    def _powershell(self, moment: Moment) -> _SimulatedPowerShell:
        age_h = self.signature_age_hours(moment.sim)
        updated = moment.wall - timedelta(hours=age_h)
        out_of_date = age_h > 7 * 24  # Defender's own default threshold
        defender_state = 0x060100 if (self.realtime_off or self.bkav_primary) else 0x061100
        if out_of_date:
            defender_state |= 0x10
        center: list[dict[str, object]] = [
            {
                "displayName": "Windows Defender",
                "productState": defender_state,
                "timestamp": format_datetime(moment.wall.astimezone(UTC), usegmt=True),
            }
        ]
        if self.bkav_primary:
            center.insert(
                0,
                {
                    "displayName": "Bkav Pro",
                    "productState": 0x041000,
                    "timestamp": format_datetime(moment.wall.astimezone(UTC), usegmt=True),
                },
            )
        status = {
            "AMServiceEnabled": True,
            "AntivirusEnabled": True,
            "RealTimeProtectionEnabled": not self.realtime_off,
            "AntivirusSignatureVersion": f"1.421.{1200 + int(age_h) % 700}.0",
            "AntivirusSignatureLastUpdated": _ms_json_date(updated),
            "AntivirusSignatureAge": int(age_h // 24),
            "AMEngineVersion": "1.1.24090.11",
            "AMProductVersion": "4.18.24090.11",
            "AMRunningMode": "Passive Mode" if self.bkav_primary else "Normal",
            "IsTamperProtected": not self.realtime_off,
            "QuickScanEndTime": _ms_json_date(moment.wall - timedelta(hours=30)),
            "FullScanEndTime": None,
            "DefenderSignaturesOutOfDate": out_of_date,
            "ComputerState": 0,
        }
        return _SimulatedPowerShell(
            {
                SECURITY_CENTER_SCRIPT: json.dumps(center[0] if len(center) == 1 else center),
                DEFENDER_STATUS_SCRIPT: json.dumps(status),
                THREATS_SCRIPT: json.dumps(self.threats),
            }
        )

    def av(self, moment: Moment) -> AvMessage:
        products: list[AvProduct]
        if self.is_windows:
            context = ProbeContext(
                device_id=self.device_id,
                site=self.site,
                settings=_SETTINGS,
                run=self._powershell(moment),
            )
            products, errors = collect_windows_av(context, moment.wall)
        else:
            products, errors = self._clamav_products(moment), []
        return AvMessage(
            ts=moment.wall,
            device_id=self.device_id,
            site=self.site,
            status=av_status(products, errors),  # type: ignore[arg-type]
            products=products,
            errors=errors,
        )

    def _clamav_products(self, moment: Moment) -> list[AvProduct]:
        if self.av_profile == "no_av":
            return []
        age_h = self.signature_age_hours(moment.sim)
        return [
            AvProduct(
                name="ClamAV",
                source="clamav",
                enabled=True,
                running=True,
                realtime_protection=False,  # Debian ships clamonacc off
                signatures_up_to_date=age_h <= _SETTINGS.av.max_signature_age_hours,
                signature_version=str(27460 + int(age_h // 24)),
                signature_time=moment.wall - timedelta(hours=age_h),
                signature_age_hours=round(age_h, 2),
                engine_version="1.0.7",
                product_version="1.0.7",
                managed=True,
                threats_found=self.threats,
                raw_state="clamd=running clamonacc=stopped freshclam=daemon",
            )
        ]

    def infect(self, threat_name: str, count: int) -> None:
        self.threats += count
        path = (
            r"C:\Users\hocsinh\Downloads\game_setup.exe"
            if self.is_windows
            else "/home/hocsinh/Downloads/game_setup.sh"
        )
        self.pending_happenings.append(
            Happening(
                "threat_detected",
                "high",
                f"{threat_name} found in {path}",
                {"threat": threat_name, "path": path, "count": str(count)},
            )
        )

    # --- the other probes --------------------------------------------------------------

    def net(self, moment: Moment) -> NetMessage:
        busy = occupancy(moment.sim)
        latency = (18 if self.uplink_type == "fibre" else 45) * (1 + busy) + self.rng.uniform(0, 6)
        loss = max(0.0, self.rng.gauss(0.2 + busy, 0.4))
        gateway = f"10.{self.school % 250}.0.1"
        return NetMessage(
            ts=moment.wall,
            device_id=self.device_id,
            site=self.site,
            uplink_type=self.uplink_type,  # type: ignore[arg-type]
            gateway=GatewayCheck(
                address=gateway,
                reachable=True,
                rtt_ms=round(self.rng.uniform(0.3, 2), 2),
                loss_pct=0.0,
            ),
            dns=[DnsCheck(name="moet.gov.vn", ok=True, resolve_ms=round(latency / 2, 1))],
            targets=[
                TargetCheck(
                    url="https://www.google.com/generate_204",
                    ok=True,
                    status_code=204,
                    latency_ms=round(latency * 2, 1),
                )
            ],
            internet_ok=True,
            loss_pct=round(min(100.0, loss), 2),
            latency_ms=round(latency, 1),
            link_speed_mbps=1000.0,
        )

    def health(self, moment: Moment, uptime_s: float) -> HealthMessage:
        busy = occupancy(moment.sim)
        cpu = min(100.0, max(0.5, 4 + 55 * busy + self.rng.gauss(0, 8)))
        memory = min(100.0, max(10.0, 35 + 30 * busy + self.rng.gauss(0, 5)))
        used_disk = 40 + (self.index % 45)
        return HealthMessage(
            ts=moment.wall,
            device_id=self.device_id,
            site=self.site,
            cpu_pct=round(cpu, 1),
            memory_pct=round(memory, 1),
            memory_used_bytes=int(MEMORY_BYTES * memory / 100),
            disks=[
                DiskUse(
                    mountpoint="C:\\" if self.is_windows else "/",
                    used_pct=float(used_disk),
                    free_bytes=DISK_BYTES * (100 - used_disk) // 100,
                )
            ],
            uptime_s=float(round(uptime_s)),
            load1=None if self.is_windows else round(cpu / 25, 2),
            agent_rss_bytes=34 * 2**20 + self.rng.randrange(4 * 2**20),
            queue_depth=0,
            queue_dropped_total=0,
        )

    # --- messages ----------------------------------------------------------------------

    def hello(self, moment: Moment, interval_s: float) -> Message:
        intervals = {"health": interval_s, "av": interval_s * SLOW_PROBE_EVERY}
        intervals["net"] = intervals["av"]
        return HelloMessage(
            ts=moment.wall,
            device_id=self.device_id,
            site=self.site,
            device_type="pc",
            software="campuswatch-agent",
            software_version=__version__,
            vendor=self.vendor,
            model=self.model_name,
            serial=self.serial,
            platform=self._os().name,
            capabilities=[
                "inventory",
                "av",
                "net",
                "health",
                "cmd:refresh_inventory",
                "cmd:run_probes",
            ],
            intervals_s=intervals,
            identity=IdentityInfo(fingerprint=self.hardware_facts().fingerprint(), origin="stable"),
        )

    def _os(self) -> OsInfo:
        if self.is_windows:
            build = "22631" if self.index % 3 else "19045"
            name = "Microsoft Windows 11 Pro" if build == "22631" else "Microsoft Windows 10 Pro"
            return OsInfo(name=name, version=f"10.0.{build}", build=build, arch="x86_64")
        return OsInfo(name="Ubuntu", version="22.04", kernel="6.8.0-48-generic", arch="x86_64")

    def inventory(self, moment: Moment) -> Message:
        message = InventoryMessage(
            ts=moment.wall,
            device_id=self.device_id,
            site=self.site,
            digest="0" * 64,
            hostname=self.hostname,
            device_type="pc",
            os=self._os(),
            cpu=CpuInfo(model="Intel(R) Core(TM) i5-10500 CPU @ 3.10GHz", cores=6, threads=12),
            memory_bytes=MEMORY_BYTES,
            hardware=HardwareInfo(
                vendor=self.vendor,
                model=self.model_name,
                serial=self.serial,
                uuid=self.product_uuid,
                bios_version=self.firmware_version,
            ),
            firmware_version=self.firmware_version,
            disks=[
                DiskInfo(
                    device="nvme0n1",
                    mountpoint="C:\\" if self.is_windows else "/",
                    fstype="NTFS" if self.is_windows else "ext4",
                    total_bytes=DISK_BYTES,
                )
            ],
            interfaces=[
                InterfaceInfo(
                    name="Ethernet", mac=self.mac, ipv4=[self.ip], speed_mbps=1000.0, up=True
                )
            ],
            software=list(_SOFTWARE) if self.is_windows else [],
        )
        message.digest = inventory_digest(message)
        return message

    def report(self, moment: Moment) -> list[Message]:
        messages: list[Message] = []
        uptime_s = moment.elapsed_s * self.reports
        if self.reports % SLOW_PROBE_EVERY == 0 or self.pending_happenings:
            messages.append(self.av(moment))
        if self.reports % SLOW_PROBE_EVERY == 0:
            messages.append(self.net(moment))
        messages.append(self.health(moment, uptime_s))
        self.reports += 1
        messages.extend(self.event(moment, happening) for happening in self.pending_happenings)
        self.pending_happenings = []
        return messages

    def clone(self, index: int, seed: int) -> LabPc:
        """A second PC restored from this one's disk image: the same device id (the agent's
        identity file was copied), different hardware, so a different fingerprint."""
        twin = LabPc(
            index=index,
            seed=seed,
            site=self.site,
            school=self.school,
            building=self.building,
            room=self.room,
        )
        twin.device_id = self.device_id
        twin.av_profile = self.av_profile
        return twin


class _SimulatedPowerShell:
    """Answers the agent's PowerShell scripts with what a simulated Windows PC prints."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self._outputs = outputs

    def __call__(
        self, argv: Sequence[str], *, timeout_s: float, check: bool = True
    ) -> CommandResult:
        script = argv[-1]
        output = self._outputs.get(script)
        if output is None:
            digest = hashlib.sha256(script.encode()).hexdigest()[:12]
            raise CommandError("failed", f"simulated Windows has no answer for script {digest}")
        return CommandResult(tuple(argv), 0, output, "")
