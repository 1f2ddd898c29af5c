"""Hardware and software inventory of this PC, with a digest so unchanged inventory is not resent.

Each part (OS, CPU, hardware, disks, interfaces, software) is collected on its own: a part
that fails leaves its field None and adds a ``ProbeError``; the message is always returned.
"""

from __future__ import annotations

import hashlib
import platform
import re
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, TypeVar

import msgspec
import psutil

from campuswatch.agent.commands import CommandError
from campuswatch.agent.probes import ProbeContext, ProbeFailure
from campuswatch.agent.probes.inventory_linux import (
    parse_cpuinfo_model,
    parse_debian_version,
    parse_dmi,
    parse_dpkg_query,
    parse_os_release,
    parse_rpm,
    short_text,
)
from campuswatch.wire.codec import MAX_PAYLOAD_BYTES
from campuswatch.wire.messages import (
    CpuInfo,
    DiskInfo,
    HardwareInfo,
    InterfaceInfo,
    InventoryMessage,
    OsInfo,
    ProbeError,
    SoftwareItem,
)

PlatformName = Literal["linux", "windows"]
T = TypeVar("T")

COMMAND_TIMEOUT_S: Final = 60.0
DPKG_QUERY: Final = (
    "dpkg-query",
    "-W",
    "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Maintainer}\n",
)
RPM_QUERY: Final = ("rpm", "-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\t%{VENDOR}\n")
# Envelope fields change every message; boot_time moves with every reboot and by a second
# between reads (it is derived from uptime). None of them is an inventory change.
DIGEST_EXCLUDED_FIELDS: Final = frozenset({"id", "ts", "boot_time", "digest"})
# Leave room for the envelope so a huge software list cannot push the message past the limit.
MAX_ENCODED_BYTES: Final = MAX_PAYLOAD_BYTES - 16 * 1024

PSEUDO_FSTYPES: Final = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fuse.gvfsd-fuse",
        "fuse.lxcfs",
        "fuse.portal",
        "fusectl",
        "hugetlbfs",
        "iso9660",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "pstore",
        "ramfs",
        "rpc_pipefs",
        "securityfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
        "udf",
    }
)
# Removable media and home directories are mounted under paths that carry user names and
# volume labels: personal data the inventory must not collect.
PRIVATE_MOUNT_PREFIXES: Final = ("/media/", "/run/media/", "/home/", "/Users/", "/run/user/")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def error_from_exception(probe: str, exc: BaseException) -> ProbeError:
    """Map an exception from a probe part to the wire's ``ProbeError`` reasons."""
    if isinstance(exc, ProbeFailure):
        return exc.error
    if isinstance(exc, CommandError):
        return ProbeError(probe=probe, reason=exc.reason, detail=exc.detail[:4096])
    reason: Literal["timeout", "not_found", "parse", "permission", "failed"] = "failed"
    if isinstance(exc, PermissionError):
        reason = "permission"
    elif isinstance(exc, FileNotFoundError):
        reason = "not_found"
    elif isinstance(exc, TimeoutError):
        reason = "timeout"
    elif isinstance(exc, ValueError | KeyError | TypeError | msgspec.ValidationError):
        reason = "parse"
    detail = f"{type(exc).__name__}: {exc}"
    return ProbeError(probe=probe, reason=reason, detail=detail[:4096])


def current_platform() -> PlatformName:
    return "windows" if sys.platform == "win32" else "linux"


def physical_partitions() -> list[tuple[str, str, str]]:
    """(device, mountpoint, fstype) of real disks, one per device, without private mounts."""
    seen_devices: set[str] = set()
    partitions: list[tuple[str, str, str]] = []
    for part in psutil.disk_partitions(all=False):
        opts = part.opts.split(",")
        if part.fstype.lower() in PSEUDO_FSTYPES or "cdrom" in opts or not part.fstype:
            continue
        if part.device.startswith("/dev/loop") or part.mountpoint.startswith(
            PRIVATE_MOUNT_PREFIXES
        ):
            continue
        # A bind mount repeats the device (containers bind /etc/hosts); keep the first.
        if part.device in seen_devices:
            continue
        seen_devices.add(part.device)
        partitions.append((part.device, part.mountpoint, part.fstype))
    return sorted(partitions, key=lambda p: p[1])


def normalise_mac(value: str) -> str | None:
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(mac) or mac == "00:00:00:00:00:00":
        return None
    return mac


def collect_interfaces() -> list[InterfaceInfo]:
    addresses = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    interfaces: list[InterfaceInfo] = []
    for name, addrs in addresses.items():
        stat = stats.get(name)
        flags = getattr(stat, "flags", "") if stat else ""
        ipv4 = sorted(a.address for a in addrs if a.family == socket.AF_INET)
        if (
            "loopback" in flags.split(",")
            or name == "lo"
            or any(ip.startswith("127.") for ip in ipv4)
        ):
            continue
        ipv6 = sorted(
            a.address.split("%")[0] for a in addrs if a.family == getattr(socket, "AF_INET6", -1)
        )
        macs = [normalise_mac(a.address) for a in addrs if a.family == psutil.AF_LINK]
        label = short_text(name)
        if label is None:
            continue
        interfaces.append(
            InterfaceInfo(
                name=label,
                mac=next((mac for mac in macs if mac), None),
                ipv4=[ip for ip in (short_text(i) for i in ipv4) if ip],
                ipv6=[ip for ip in (short_text(i) for i in ipv6) if ip],
                speed_mbps=float(stat.speed) if stat and stat.speed > 0 else None,
                up=stat.isup if stat else None,
            )
        )
    return sorted(interfaces, key=lambda interface: interface.name)


def collect_disks() -> list[DiskInfo]:
    disks: list[DiskInfo] = []
    for device, mountpoint, fstype in physical_partitions():
        try:
            total: int | None = psutil.disk_usage(mountpoint).total
        except OSError:
            total = None
        disks.append(
            DiskInfo(
                device=short_text(device) or "?",
                mountpoint=short_text(mountpoint) or "?",
                fstype=short_text(fstype),
                total_bytes=total,
            )
        )
    return disks


def _parse_windows_system(json_text: str) -> HardwareInfo | None:
    # The Windows parsers are imported where used: a Linux PC never keeps them resident.
    from campuswatch.agent.probes.inventory_windows import parse_windows_system

    return parse_windows_system(json_text)


def inventory_digest(message: InventoryMessage) -> str:
    """sha256 of the body in canonical JSON (sorted keys), envelope and boot time excluded."""
    body = msgspec.to_builtins(message)
    assert isinstance(body, dict)
    canonical = {key: value for key, value in body.items() if key not in DIGEST_EXCLUDED_FIELDS}
    # Byte for byte what json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # gave for an inventory (it holds no float beyond 1e16 or below 1e-4, where the two spell
    # exponents differently), without loading the stdlib json beside msgspec.
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


class InventoryProbe:
    """Collects an ``InventoryMessage``; ``root`` and ``platform`` exist so tests can replay
    recorded files and PowerShell output on any machine."""

    name = "inventory"
    kind = "inventory"

    def __init__(self, *, root: Path = Path("/"), platform: PlatformName | None = None) -> None:
        self._root = root
        self._platform: PlatformName = platform or current_platform()

    def collect(self, context: ProbeContext) -> InventoryMessage:
        errors: list[ProbeError] = []

        def attempt(part: str, action: Callable[[], T]) -> T | None:
            try:
                return action()
            except Exception as exc:  # a probe part must never take the message down
                errors.append(error_from_exception(f"inventory.{part}", exc))
                return None

        windows = self._platform == "windows"
        hardware_json: str | None = None
        if windows:
            # Hardware and CPU share one PowerShell start; bad output is reported once, here.
            hardware_json = attempt("hardware", lambda: self._hardware_json(context))
        os_info = attempt("os", lambda: self._windows_os(context) if windows else self._linux_os())
        cpu = attempt("cpu", lambda: self._cpu(hardware_json))
        hardware = (
            attempt("hardware", lambda: _parse_windows_system(hardware_json or ""))
            if windows
            else attempt("hardware", lambda: parse_dmi(self._root / "sys/class/dmi/id"))
        )
        software: list[SoftwareItem] | None = None
        if context.settings.collect_software:
            software = attempt("software", lambda: self._software(context))
        message = InventoryMessage(
            device_id=context.device_id,
            site=context.site,
            digest="0" * 64,
            hostname=attempt("hostname", lambda: short_text(socket.gethostname())),
            os=os_info,
            cpu=cpu,
            memory_bytes=attempt("memory", lambda: int(psutil.virtual_memory().total)),
            hardware=hardware,
            disks=attempt("disks", collect_disks) or [],
            interfaces=attempt("interfaces", collect_interfaces) or [],
            boot_time=attempt("boot_time", lambda: datetime.fromtimestamp(psutil.boot_time(), UTC)),
            software=software,
            errors=errors,
        )
        message = self._fit_payload(message)
        return msgspec.structs.replace(message, digest=inventory_digest(message))

    @staticmethod
    def _fit_payload(message: InventoryMessage) -> InventoryMessage:
        """Drop the software list's tail rather than send a message the collector rejects."""
        software = message.software
        if not software or len(msgspec.json.encode(message)) <= MAX_ENCODED_BYTES:
            return message
        size_per_item = len(msgspec.json.encode(software)) / len(software)
        overflow = len(msgspec.json.encode(message)) - MAX_ENCODED_BYTES
        keep = max(0, len(software) - int(overflow / size_per_item) - 1)
        error = ProbeError(
            probe="inventory.software",
            reason="failed",
            detail=f"software list truncated to {keep} of {len(software)} entries (size limit)",
        )
        return msgspec.structs.replace(
            message, software=software[:keep], errors=[*message.errors, error]
        )

    def _powershell(self, context: ProbeContext, script: str) -> str:
        executable = context.settings.av.powershell
        argv = [executable, "-NoProfile", "-NonInteractive", "-Command", script]
        return context.run(argv, timeout_s=COMMAND_TIMEOUT_S).stdout

    def _hardware_json(self, context: ProbeContext) -> str:
        from campuswatch.agent.probes.inventory_windows import HARDWARE_SCRIPT, load_json_objects

        output = self._powershell(context, HARDWARE_SCRIPT)
        load_json_objects(output)  # raises ValueError on garbage
        return output

    def _read(self, relative: str) -> str:
        return (self._root / relative).read_text(encoding="utf-8", errors="replace")

    def _linux_os(self) -> OsInfo:
        try:
            text = self._read("etc/os-release")
        except FileNotFoundError:
            text = self._read("usr/lib/os-release")
        parsed = parse_os_release(text)
        if parsed is None:
            raise ValueError("os-release has neither NAME nor ID")
        build = parsed.build
        if build is None:
            try:
                build = parse_debian_version(self._read("etc/debian_version"))
            except OSError:
                build = None
        return msgspec.structs.replace(
            parsed,
            build=build,
            kernel=short_text(platform.release()),
            arch=short_text(platform.machine()),
        )

    def _windows_os(self, context: ProbeContext) -> OsInfo:
        from campuswatch.agent.probes.inventory_windows import OS_SCRIPT, parse_windows_os

        parsed = parse_windows_os(self._powershell(context, OS_SCRIPT))
        if parsed is None:
            raise ValueError("Win32_OperatingSystem returned no Caption")
        return parsed

    def _cpu(self, hardware_json: str | None) -> CpuInfo:
        if self._platform == "windows":
            from campuswatch.agent.probes.inventory_windows import parse_windows_cpu

            model, max_mhz = parse_windows_cpu(hardware_json or "")
        else:
            model = parse_cpuinfo_model(self._read("proc/cpuinfo"))
            max_mhz = None
        if max_mhz is None:
            frequency = psutil.cpu_freq()
            # Virtual machines report 0 for max: unknown, not zero.
            max_mhz = float(frequency.max) if frequency and frequency.max > 0 else None
        return CpuInfo(
            model=model,
            cores=psutil.cpu_count(logical=False),
            threads=psutil.cpu_count(logical=True),
            max_mhz=max_mhz,
        )

    def _software(self, context: ProbeContext) -> list[SoftwareItem]:
        if self._platform == "windows":
            from campuswatch.agent.probes.inventory_windows import (
                UNINSTALL_SCRIPT,
                parse_windows_uninstall,
            )

            return parse_windows_uninstall(self._powershell(context, UNINSTALL_SCRIPT))
        try:
            return parse_dpkg_query(context.run(DPKG_QUERY, timeout_s=COMMAND_TIMEOUT_S).stdout)
        except CommandError as exc:
            if exc.reason != "not_found":
                raise
        try:
            return parse_rpm(context.run(RPM_QUERY, timeout_s=COMMAND_TIMEOUT_S).stdout)
        except CommandError as exc:
            if exc.reason != "not_found":
                raise
            raise ProbeFailure(
                ProbeError(
                    probe="inventory.software",
                    reason="unsupported",
                    detail="neither dpkg-query nor rpm is installed",
                )
            ) from None
