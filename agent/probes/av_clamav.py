"""ClamAV status on Linux lab PCs: version, signature freshness, daemons, recent detections.

Signature freshness comes from the database files themselves (the 512-byte text header of
``daily``/``main``/``bytecode`` ``.cvd``/``.cld``/``.cud``) rather than from ``clamscan
--version``: the header carries a build time *with* a zone, while the version line prints
local time without one and only looks at ``daily`` in ClamAV's own configured directory.
``sigtool --info`` is only a fallback for a header this module cannot read.

Every time a ClamAV tool prints without a zone (``Sun Nov  3 09:31:11 2024``, note the two
spaces before a one-digit day) is local time of the machine; it is converted with the local
zone. Month names are matched against a fixed English table, never ``strptime("%b")``,
because the agent's locale must not change what a ClamAV header means.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Final, Literal

import msgspec
import psutil

from campuswatch.agent.commands import CommandError
from campuswatch.agent.probes import ProbeContext
from campuswatch.wire.messages import AvProduct, ProbeError

PROBE_NAME: Final = "av"
CVD_HEADER_BYTES: Final = 512
CVD_MAGIC: Final = "ClamAV-VDB:"
DATABASE_NAMES: Final = ("daily", "main", "bytecode")
# .cud is an unsigned container; ClamAV loads it like a .cvd, so a private build counts too.
DATABASE_SUFFIXES: Final = (".cvd", ".cld", ".cud")
VERSION_COMMANDS: Final = (
    ("clamscan", "--version"),
    ("clamd", "--version"),
    ("freshclam", "--version"),
)
DEFAULT_SCAN_LOGS: Final = (
    Path("/var/log/clamav/clamav.log"),  # clamd's LogFile on Debian/Ubuntu
    Path("/var/log/clamav/clamonacc.log"),  # clamav-clamonacc.service --log
)
THREAT_WINDOW: Final = timedelta(hours=24)
# Logs are read from the end only: a year of clamd "SelfCheck" lines must not cost the agent
# memory every five minutes. 4 MiB holds weeks of a lab PC's clamd log.
LOG_TAIL_BYTES: Final = 4 * 1024 * 1024
MAX_DETAIL: Final = 4000

_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_BUILD_TIME = re.compile(
    r"^\s*(?P<day>\d{1,2})\s+(?P<month>[A-Za-z]{3})\s+(?P<year>\d{4})\s+"
    r"(?P<hour>\d{1,2})[-:](?P<minute>\d{2})\s+(?P<zone>[+-]\d{4})\s*$"
)
# ctime(3) layout: "Sun Nov  3 09:31:11 2024" (day is space-padded, so one or two spaces).
_CTIME = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(?P<month>[A-Z][a-z]{2})\s+(?P<day>\d{1,2})\s+"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})\s+(?P<year>\d{4})"
)
_VERSION_LINE = re.compile(
    r"^ClamAV\s+(?P<version>[0-9][^\s/]*)(?:/(?P<db>\d+)(?:/(?P<time>.*))?)?\s*$"
)
_LOG_LINE = re.compile(
    r"^(?P<stamp>[A-Z][a-z]{2}\s+[A-Z][a-z]{2}\s+\d{1,2}\s+[\d:]{8}\s+\d{4})\s+->\s+(?P<message>.*)$"
)
# "daily.cld updated (version: …)", "main.cvd database is up-to-date (…)", 0.101 and older's
# "main.cvd is up to date (…)" and 0.103's "Database updated (N signatures) from …" are
# successful runs; errors, warnings, "available for update" and cool-down notices are not.
_FRESHCLAM_SUCCESS = re.compile(
    r"^(?:\S+\.c[lvu]d (?:updated|(?:database )?is up[- ]to[- ]date)\b|Database updated\b)"
)
_THREAT_LINE = re.compile(r": \S.* FOUND\s*$")


class CvdHeader(msgspec.Struct, frozen=True):
    """What a ClamAV database says about itself."""

    name: str | None
    version: int
    signatures: int | None
    functionality_level: int | None
    build_time: datetime | None
    """Aware UTC; from the header's text time (minute precision), else its epoch ``stime``."""
    builder: str | None


class ClamVersion(msgspec.Struct, frozen=True):
    """A ``clamscan``/``clamd``/``freshclam --version`` line."""

    version: str
    database_version: int | None
    database_time: datetime | None
    """Aware UTC, converted from the tool's zone-less local time."""


class ClamavProcesses(msgspec.Struct, frozen=True):
    """Which ClamAV programs are resident right now."""

    clamd: bool
    clamonacc: bool
    freshclam_daemon: bool


# --- parsers -------------------------------------------------------------------------------


def parse_build_time(text: str) -> datetime | None:
    """``10 Nov 2024 04-31 -0400`` (header) or ``… 04:31 -0400`` (sigtool) → aware UTC."""
    match = _BUILD_TIME.match(text)
    if match is None:
        return None
    month = _MONTHS.get(match["month"].capitalize())
    if month is None:
        return None
    zone = match["zone"]
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
    try:
        local = datetime(
            int(match["year"]),
            month,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            tzinfo=timezone(-offset if zone[0] == "-" else offset),
        )
    except ValueError:  # 31 Feb, hour 25, offset of a day or more
        return None
    return local.astimezone(UTC)


def _optional_int(text: str) -> int | None:
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else None


def _epoch_time(text: str) -> datetime | None:
    seconds = _optional_int(text)
    if seconds is None or seconds == 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_cvd_header(header: bytes, *, name: str | None = None) -> CvdHeader:
    """Parse the 512-byte text header of a ``.cvd``/``.cld``/``.cud`` file.

    Layout: ``ClamAV-VDB:build time:version:signatures:functionality level:md5:digital
    signature:builder:stime``, space padded. ``.cld`` files rewritten by incremental updates
    may leave trailing fields out or empty (md5 and signature become ``X``); only the magic
    and the version are required. ``name`` is the database name, which lives in the file
    name rather than the header. Raises ``ValueError`` for anything that is not a header.
    """
    if len(header) < CVD_HEADER_BYTES:
        raise ValueError(
            f"truncated ClamAV database header: {len(header)} of {CVD_HEADER_BYTES} bytes"
        )
    raw = header[:CVD_HEADER_BYTES].rstrip(b" \0\n\r")
    if not raw.startswith(CVD_MAGIC.encode()):
        raise ValueError(f"not a ClamAV database: header does not start with {CVD_MAGIC!r}")
    if any(byte < 0x20 or byte > 0x7E for byte in raw):
        raise ValueError("corrupted ClamAV database header: non-text bytes inside the header")
    fields = raw.decode("ascii")[len(CVD_MAGIC) :].split(":")
    fields += [""] * (8 - len(fields))
    build_text, version_text, sigs_text, level_text, _md5, _dsig, builder, stime = fields[:8]
    version = _optional_int(version_text)
    if version is None:
        raise ValueError(f"corrupted ClamAV database header: version {version_text!r}")
    return CvdHeader(
        name=name,
        version=version,
        signatures=_optional_int(sigs_text),
        functionality_level=_optional_int(level_text),
        build_time=parse_build_time(build_text) or _epoch_time(stime),
        builder=builder.strip() or None,
    )


def parse_sigtool_info(text: str) -> CvdHeader:
    """Parse ``sigtool --info FILE`` output (``Build time: 10 Nov 2024 04:31 -0400``, …).

    ``.cld`` files print no MD5/signature lines; only ``Version:`` is required. sigtool
    exits non-zero when verification fails yet still prints the header, so callers should
    parse its output whatever the exit status.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        key = key.strip().lower()
        # First occurrence wins: a later "ERROR: …: Version …" line must not override it.
        if separator and key and key not in values:
            values[key] = value.strip()
    version = _optional_int(values.get("version", ""))
    if version is None:
        raise ValueError("sigtool --info output has no 'Version:' line with a number")
    database_name = Path(values.get("file", "")).name.split(".")[0]
    return CvdHeader(
        name=database_name or None,
        version=version,
        signatures=_optional_int(values.get("signatures", "")),
        functionality_level=_optional_int(values.get("functionality level", "")),
        build_time=parse_build_time(values.get("build time", "")),
        builder=values.get("builder") or None,
    )


def _localize(naive: datetime, local_timezone: tzinfo | None) -> datetime:
    # astimezone() on a naive value applies the machine's zone rules (DST included).
    aware = naive.astimezone() if local_timezone is None else naive.replace(tzinfo=local_timezone)
    return aware.astimezone(UTC)


def parse_ctime(text: str, *, local_timezone: tzinfo | None = None) -> datetime | None:
    """``Sun Nov  3 09:31:11 2024`` (local time, no zone) → aware UTC, or None."""
    match = _CTIME.search(text)
    if match is None:
        return None
    month = _MONTHS.get(match["month"])
    if month is None:
        return None
    try:
        naive = datetime(
            int(match["year"]),
            month,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
        )
        return _localize(naive, local_timezone)
    except (ValueError, OverflowError, OSError):
        return None


def parse_clamav_version(text: str, *, local_timezone: tzinfo | None = None) -> ClamVersion:
    """Parse ``ClamAV 1.0.7/27460/Sun Nov 10 09:31:11 2024`` or the bare ``ClamAV 1.4.6``.

    The bare form is what the tools print when no ``daily`` database is loaded.
    """
    for line in text.splitlines():
        match = _VERSION_LINE.match(line.strip())
        if match is None:
            continue
        database = match["db"]
        return ClamVersion(
            version=match["version"],
            database_version=int(database) if database else None,
            database_time=(
                parse_ctime(match["time"], local_timezone=local_timezone) if match["time"] else None
            ),
        )
    first_line = text.strip().splitlines()[:1]
    raise ValueError(
        f"not a ClamAV version line: {first_line[0][:120] if first_line else '(empty)'!r}"
    )


def last_update_from_freshclam_log(
    text: str, *, local_timezone: tzinfo | None = None
) -> datetime | None:
    """Time of the newest successful freshclam run in its log, as aware UTC, or None.

    A database reported "up-to-date" counts as success: freshclam reached a mirror and the
    signatures were current at that moment. Only lines with a ``LogTime`` stamp can be
    dated. The newest stamp wins, not the last line, because clocks get set back.
    """
    newest: datetime | None = None
    for line in text.splitlines():
        match = _LOG_LINE.match(line.strip())
        if match is None or _FRESHCLAM_SUCCESS.match(match["message"]) is None:
            continue
        stamp = parse_ctime(match["stamp"], local_timezone=local_timezone)
        if stamp is not None and (newest is None or stamp > newest):
            newest = stamp
    return newest


def count_recent_threats(text: str, now: datetime, *, local_timezone: tzinfo | None = None) -> int:
    """``… -> /path: Sig.Name FOUND`` lines stamped within 24 h before ``now``.

    Undated lines are not counted: without ``LogTime`` a detection of last year would look
    like today's.
    """
    since = now - THREAT_WINDOW
    count = 0
    for line in text.splitlines():
        match = _LOG_LINE.match(line.strip())
        if match is None or _THREAT_LINE.search(match["message"]) is None:
            continue
        stamp = parse_ctime(match["stamp"], local_timezone=local_timezone)
        if stamp is not None and since <= stamp <= now:
            count += 1
    return count


# --- probe ---------------------------------------------------------------------------------


ErrorReason = Literal["timeout", "not_found", "parse", "permission", "failed", "unsupported"]


def _error(reason: ErrorReason, detail: str) -> ProbeError:
    return ProbeError(probe=PROBE_NAME, reason=reason, detail=detail[:MAX_DETAIL])


def running_clamav_processes() -> ClamavProcesses:
    """Look for clamd, clamonacc and a freshclam started as a daemon (``-d``/``--daemon``)."""
    clamd = clamonacc = freshclam_daemon = False
    # Names only: reading every process's command line doubled the probe's /proc reads and
    # only freshclam's is needed.
    for process in psutil.process_iter(["name"]):
        try:
            name = process.info["name"] or ""
            cmdline: list[str] = process.cmdline() if name == "freshclam" else []
        except (psutil.Error, KeyError):
            continue
        clamd = clamd or name == "clamd"
        clamonacc = clamonacc or name == "clamonacc"
        if name == "freshclam" and any(arg in ("-d", "--daemon") for arg in cmdline[1:]):
            freshclam_daemon = True
    # process_iter keeps a Process object for every running process until the next call
    # (for CPU percentages we never ask): ~0.5 KiB each, held for the agent's lifetime.
    clear_cache = getattr(psutil.process_iter, "cache_clear", None)  # psutil >= 6
    if clear_cache is not None:
        clear_cache()
    return ClamavProcesses(clamd=clamd, clamonacc=clamonacc, freshclam_daemon=freshclam_daemon)


def _read_tail(path: Path, limit: int) -> str:
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - limit))
        return handle.read(limit).decode("utf-8", errors="replace")


def _read_optional_log(path: Path, what: str, errors: list[ProbeError]) -> str | None:
    """The log's tail, or None if it does not exist (not an error: logging may be off)."""
    try:
        return _read_tail(path, LOG_TAIL_BYTES)
    except FileNotFoundError:
        return None
    except PermissionError:
        errors.append(_error("permission", f"cannot read {what} {path}"))
    except OSError as exc:
        errors.append(_error("failed", f"cannot read {what} {path}: {exc.strerror}"))
    return None


def _read_database_header(
    context: ProbeContext, path: Path, errors: list[ProbeError]
) -> CvdHeader | None:
    name = path.name.split(".")[0]
    try:
        with path.open("rb") as handle:
            header_bytes = handle.read(CVD_HEADER_BYTES)
    except PermissionError:
        errors.append(_error("permission", f"cannot read {path}"))
        return None
    except OSError as exc:
        errors.append(_error("failed", f"cannot read {path}: {exc.strerror}"))
        return None
    try:
        return parse_cvd_header(header_bytes, name=name)
    except ValueError as header_problem:
        problem = f"{path}: {header_problem}"
    # sigtool is ClamAV's own reader and more lenient than ours; a header it can print but
    # not verify belongs to a database clamd will refuse to load, so it dates nothing.
    try:
        result = context.run(
            ["sigtool", f"--info={path}"],
            timeout_s=context.settings.av.command_timeout_s,
            check=False,  # sigtool exits 1 when verification fails yet prints the header
        )
        header = parse_sigtool_info(result.stdout)
    except CommandError as exc:
        errors.append(_error(exc.reason, f"{problem}; sigtool: {exc.detail}"))
        return None
    except ValueError as exc:
        errors.append(_error("parse", f"{problem}; sigtool: {exc}"))
        return None
    if result.returncode != 0:
        complaint = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
        errors.append(
            _error(
                "parse",
                f"{problem}; sigtool --info exited {result.returncode}: "
                f"{complaint[0][:300] if complaint else ''}",
            )
        )
        return None
    return header


def _database_headers(
    context: ProbeContext, errors: list[ProbeError]
) -> tuple[list[CvdHeader], int]:
    """Readable headers and how many database files exist, readable or not."""
    headers: list[CvdHeader] = []
    files_found = 0
    for directory in context.settings.av.clamav_database_dirs:
        for name in DATABASE_NAMES:
            for suffix in DATABASE_SUFFIXES:
                path = Path(directory) / f"{name}{suffix}"
                if path.is_file():
                    files_found += 1
                    header = _read_database_header(context, path, errors)
                    if header is not None:
                        headers.append(header)
    return headers, files_found


def _clamav_version(
    context: ProbeContext, local_timezone: tzinfo | None, errors: list[ProbeError]
) -> tuple[bool, ClamVersion | None]:
    """(some ClamAV tool exists, its version line if one could be read)."""
    found_any = False
    problems: list[ProbeError] = []
    for argv in VERSION_COMMANDS:
        try:
            result = context.run(argv, timeout_s=context.settings.av.command_timeout_s)
        except CommandError as exc:
            if exc.reason != "not_found":
                found_any = True
                problems.append(_error(exc.reason, exc.detail))
            continue
        found_any = True
        try:
            return True, parse_clamav_version(result.stdout, local_timezone=local_timezone)
        except ValueError as exc:
            problems.append(_error("parse", f"{' '.join(argv)}: {exc}"))
    errors.extend(problems)
    return found_any, None


def _describe(processes: ClamavProcesses | None) -> str | None:
    if processes is None:
        return None
    return (
        f"clamd={'running' if processes.clamd else 'stopped'} "
        f"clamonacc={'running' if processes.clamonacc else 'stopped'} "
        f"freshclam={'daemon' if processes.freshclam_daemon else 'no-daemon'}"
    )


def collect_clamav(
    context: ProbeContext,
    now: datetime,
    *,
    local_timezone: tzinfo | None = None,
    processes: ClamavProcesses | Callable[[], ClamavProcesses] = running_clamav_processes,
    scan_logs: Iterable[Path] = DEFAULT_SCAN_LOGS,
) -> tuple[list[AvProduct], list[ProbeError]]:
    """ClamAV as one ``AvProduct``, or no product at all when ClamAV is not installed.

    What the flags mean, for a SOC deciding whether a lab PC is protected:

    * ``running`` — clamd, the resident scanning engine, is up.
    * ``realtime_protection`` — clamonacc (on-access scanning) *and* clamd run; clamonacc
      only hands files to clamd, so without clamd it protects nothing.
    * ``enabled`` — clamd runs. ClamAV with neither daemon is an on-demand scanner
      (``clamscan`` from cron at best): it detects after the fact and does not protect
      the PC, so it reports ``enabled=False`` and the caller counts it as at risk. A
      freshclam daemon alone keeps signatures fresh but scans nothing.
    * ``managed`` — a freshclam daemon keeps signatures updated (True); otherwise None,
      because a cron-driven freshclam cannot be told apart from no updating at all.
    * ``threats_found`` — dated ``FOUND`` lines of the last 24 h in clamd/clamonacc logs
      (the tail of each log only; a rotated-away part is not read); None if no log exists.

    ``product_version`` and ``engine_version`` are the same: ClamAV ships its engine
    (libclamav) and tools as one version. Process state that cannot be read is None, not
    False. Every problem ends up in the returned errors; nothing raises.
    """
    errors: list[ProbeError] = []
    settings = context.settings.av
    if callable(processes):
        try:
            resident: ClamavProcesses | None = processes()
        except (psutil.Error, OSError) as exc:
            errors.append(_error("failed", f"cannot list processes: {exc}"))
            resident = None
    else:
        resident = processes

    installed, version = _clamav_version(context, local_timezone, errors)
    if not installed and not (resident and (resident.clamd or resident.clamonacc)):
        return [], []

    headers, database_files = _database_headers(context, errors)
    daily_versions = [header.version for header in headers if header.name == "daily"]
    build_times = [header.build_time for header in headers if header.build_time is not None]
    signature_version = str(max(daily_versions)) if daily_versions else None
    signature_time = max(build_times) if build_times else None
    if not headers and version is not None and version.database_version is not None:
        # No readable database in the configured directories: ClamAV's own view of its
        # configured DatabaseDirectory is the next best source.
        signature_version = str(version.database_version)
        signature_time = version.database_time
    if database_files == 0 and signature_time is None:
        directories = ", ".join(settings.clamav_database_dirs)
        errors.append(_error("not_found", f"no ClamAV signature database in {directories}"))

    signature_age_hours: float | None = None
    if signature_time is not None:
        # A signature "from the future" means this PC's clock is behind; age 0, not negative.
        signature_age_hours = max(0.0, (now - signature_time).total_seconds() / 3600)

    last_update: datetime | None = None
    freshclam_log = _read_optional_log(Path(settings.freshclam_log), "freshclam log", errors)
    if freshclam_log is not None:
        last_update = last_update_from_freshclam_log(freshclam_log, local_timezone=local_timezone)

    threats_found: int | None = None
    for log_path in scan_logs:
        text = _read_optional_log(log_path, "ClamAV log", errors)
        if text is not None:
            recent = count_recent_threats(text, now, local_timezone=local_timezone)
            threats_found = recent + (threats_found or 0)

    clamd = resident.clamd if resident else None
    product = AvProduct(
        name="ClamAV",
        source="clamav",
        enabled=clamd,
        running=clamd,
        realtime_protection=(resident.clamonacc and resident.clamd) if resident else None,
        signatures_up_to_date=(
            signature_age_hours <= settings.max_signature_age_hours
            if signature_age_hours is not None
            else None
        ),
        signature_version=signature_version,
        signature_time=signature_time,
        signature_age_hours=signature_age_hours,
        engine_version=version.version if version else None,
        product_version=version.version if version else None,
        managed=True if resident and resident.freshclam_daemon else None,
        last_update=last_update,
        threats_found=threats_found,
        raw_state=_describe(resident),
    )
    return [product], errors


__all__ = [
    "ClamVersion",
    "ClamavProcesses",
    "CvdHeader",
    "collect_clamav",
    "count_recent_threats",
    "last_update_from_freshclam_log",
    "parse_build_time",
    "parse_clamav_version",
    "parse_ctime",
    "parse_cvd_header",
    "parse_sigtool_info",
    "running_clamav_processes",
]
