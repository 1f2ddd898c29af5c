"""Spreadsheet export and import of the asset register (CSV and XLSX).

Export has a fixed column set so a facilities manager's spreadsheet keeps working from one
release to the next. Import validates every row first and reports every problem (row,
column, message); in dry-run nothing is written, in strict mode nothing is written if any
row is bad, otherwise the good rows are applied and the bad ones listed.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final

from openpyxl import Workbook, load_workbook
from openpyxl.styles import Font
from openpyxl.utils.exceptions import InvalidFileException
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Asset, AssetHistory, AssetMac
from campuswatch.collector.register.assets import (
    apply_manual_changes,
    normalize_mac,
    render_value,
    site_subtree_ids,
    usable_serial,
    validate_changes,
)

COLUMNS: Final = (
    "asset_tag",
    "kind",
    "name",
    "vendor",
    "model",
    "serial",
    "macs",
    "device_id",
    "site_id",
    "room",
    "status",
    "registered",
    "purchase_date",
    "warranty_end",
    "security_level",
    "protection_plan_approved_on",
    "os_name",
    "os_version",
    "firmware_version",
    "notes",
    "source",
    "first_seen",
    "last_seen",
)
# Shown for information; the register, not the spreadsheet, owns them.
EXPORT_ONLY_COLUMNS: Final = frozenset({"source", "first_seen", "last_seen"})
# Agents keep these current; an imported value is a starting point, not a pin.
_MACHINE_REPORTED: Final = frozenset({"os_name", "os_version", "firmware_version", "device_id"})
_NEVER_CLEARED_BY_IMPORT: Final = frozenset({"kind", "status", "registered", "macs", "device_id"})
# A cell starting with one of these runs as a formula in Excel (CSV injection); export
# prefixes an apostrophe and import strips it again.
_FORMULA_STARTS: Final = ("=", "+", "-", "@")
MAX_IMPORT_ROWS: Final = 50_000


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    """Spreadsheet row number: the header is row 1, the first asset row 2."""
    column: str
    message: str


@dataclass(slots=True)
class ImportReport:
    filename: str
    dry_run: bool
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    applied: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


# --- export ---------------------------------------------------------------------------------


def _assets_for_export(session: Session, site_id: str | None) -> Iterator[Asset]:
    query = select(Asset).order_by(Asset.id)
    if site_id is not None:
        query = query.where(Asset.site_id.in_(site_subtree_ids(session, site_id)))
    yield from session.scalars(query)


def _cell_text(asset: Asset, column: str) -> str:
    value: object = asset.mac_list if column == "macs" else getattr(asset, column)
    if column == "registered":
        return "yes" if value else "no"
    if column == "macs":
        assert isinstance(value, list)
        return " ".join(value)
    text = render_value(value) or ""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def export_rows(session: Session, site_id: str | None = None) -> Iterator[list[str]]:
    yield list(COLUMNS)
    for asset in _assets_for_export(session, site_id):
        yield [_cell_text(asset, column) for column in COLUMNS]


def export_assets_csv(session: Session, site_id: str | None = None) -> bytes:
    """UTF-8 with a BOM: without it Excel reads Vietnamese text as Windows-1252 mojibake."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(export_rows(session, site_id))
    return buffer.getvalue().encode("utf-8-sig")


def export_assets_xlsx(session: Session, site_id: str | None = None) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "assets"
    for row_number, row in enumerate(export_rows(session, site_id), start=1):
        for column_number, text in enumerate(row, start=1):
            cell = sheet.cell(row=row_number, column=column_number)
            # Explicit string type: openpyxl would otherwise turn "=..." into a formula and
            # Excel would turn serials like "00123" into numbers.
            cell.value = text
            cell.data_type = "s"
            if row_number == 1:
                cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# --- import ---------------------------------------------------------------------------------


class ImportFormatError(ValueError):
    """The file as a whole cannot be read (not CSV/XLSX, no header, too many rows)."""


def _cell_to_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_table(data: bytes, filename: str) -> list[list[str]]:
    if data[:4] == b"PK\x03\x04" or filename.lower().endswith(".xlsx"):
        try:
            workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
            raise ImportFormatError(f"cannot read {filename} as XLSX: {exc}") from None
        sheet = workbook.worksheets[0]
        table = [
            [_cell_to_text(value) for value in row] for row in sheet.iter_rows(values_only=True)
        ]
        workbook.close()
        return table
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{filename} is not UTF-8 text: {exc}") from None
    try:
        return [list(row) for row in csv.reader(io.StringIO(text))]
    except csv.Error as exc:
        raise ImportFormatError(f"cannot parse {filename} as CSV: {exc}") from None


def _unescape(text: str) -> str:
    if text.startswith("'") and text[1:].startswith(_FORMULA_STARTS):
        return text[1:]
    return text


@dataclass(slots=True)
class _PlannedRow:
    row: int
    asset: Asset | None
    clean: dict[str, object]


def _match(
    session: Session, values: dict[str, str], row: int, errors: list[RowError]
) -> Asset | None:
    """The asset this row updates: by asset tag, else serial, else MAC; all must agree."""
    found: dict[str, Asset] = {}
    if values.get("asset_tag"):
        asset = session.scalar(select(Asset).where(Asset.asset_tag == values["asset_tag"]))
        if asset is not None:
            found["asset_tag"] = asset
    serial = usable_serial(values.get("serial"))
    if serial is not None:
        by_serial = list(session.scalars(select(Asset).where(Asset.serial == serial)))
        if len(by_serial) == 1:
            found["serial"] = by_serial[0]
    for raw in values.get("macs", "").replace(",", " ").replace(";", " ").split():
        mac = normalize_mac(raw)
        entry = session.get(AssetMac, mac) if mac else None
        if entry is not None:
            found.setdefault("macs", entry.asset)
    winner = found.get("asset_tag") or found.get("serial") or found.get("macs")
    tag = values.get("asset_tag")
    if tag and winner is not None and winner.asset_tag not in (None, tag):
        # A new tag on a serial/MAC that another tagged asset holds is two assets claiming
        # one identity, not a re-tagging; refuse it rather than merge them.
        column = "serial" if "serial" in found else "macs"
        errors.append(
            RowError(row, column, f"belongs to asset {winner.id} tagged {winner.asset_tag}")
        )
        return None
    for column, asset in found.items():
        if winner is not None and asset.id != winner.id:
            errors.append(
                RowError(row, column, f"matches asset {asset.id}, but the row is asset {winner.id}")
            )
    return winner


def import_assets(
    session: Session,
    data: bytes,
    filename: str,
    *,
    dry_run: bool = False,
    strict: bool = True,
) -> ImportReport:
    """Upsert assets from a CSV/XLSX export-format file; see the module docstring for modes.

    Flushes but does not commit. Every change is audited as ``import:<filename>:<row>``.
    """
    report = ImportReport(filename=filename, dry_run=dry_run)
    try:
        table = _read_table(data, filename)
    except ImportFormatError as exc:
        report.errors.append(RowError(0, "", str(exc)))
        return report
    numbered = [
        (number, row)
        for number, row in enumerate(table, start=1)
        if any(cell.strip() for cell in row)
    ]
    if not numbered:
        report.errors.append(RowError(1, "", "the file has no header row"))
        return report
    header_row, header_cells = numbered[0]
    header = [cell.strip().lower() for cell in header_cells]
    if len(numbered) - 1 > MAX_IMPORT_ROWS:
        report.errors.append(RowError(0, "", f"more than {MAX_IMPORT_ROWS} rows"))
        return report
    known = set(COLUMNS)
    for name in header:
        if name and name not in known:
            report.errors.append(RowError(header_row, name, "unknown column"))
    if not ({"asset_tag", "serial", "macs"} & set(header)):
        report.errors.append(
            RowError(header_row, "", "need at least one of asset_tag, serial, macs")
        )
    if report.errors:
        return report

    planned: list[_PlannedRow] = []
    seen_keys: dict[tuple[str, str], int] = {}
    for row_number, cells in numbered[1:]:
        report.rows += 1
        values = {
            name: _unescape(cells[index].strip()) if index < len(cells) else ""
            for index, name in enumerate(header)
            if name and name not in EXPORT_ONLY_COLUMNS
        }
        row_errors: list[RowError] = []
        _check_duplicates_in_file(values, row_number, seen_keys, row_errors)
        asset = _match(session, values, row_number, row_errors)
        # An empty cell clears a field, except where clearing would lose identity or state
        # that a half-filled spreadsheet should not silently erase.
        changes: dict[str, object] = {
            key: value
            for key, value in values.items()
            if value or key not in _NEVER_CLEARED_BY_IMPORT
        }
        if asset is None and not values.get("kind"):
            row_errors.append(RowError(row_number, "kind", "required for a new asset"))
        clean, field_errors = validate_changes(session, asset, changes)
        flagged = {error.column for error in row_errors}
        row_errors.extend(
            RowError(row_number, key, text)
            for key, text in field_errors.items()
            if key not in flagged  # one message per cell is enough
        )
        report.errors.extend(row_errors)
        if not row_errors:
            planned.append(_PlannedRow(row_number, asset, clean))

    if dry_run or (strict and report.errors):
        for plan in planned:
            if plan.asset is None:
                report.created += 1
            elif _would_change(plan.asset, plan.clean):
                report.updated += 1
            else:
                report.unchanged += 1
        return report

    for plan in planned:
        actor = f"import:{filename}:{plan.row}"
        asset = plan.asset
        if asset is None:
            asset = Asset(
                kind=str(plan.clean.get("kind") or "other"),
                source="import",
                registered=True,
                manual_fields=[],
            )
            session.add(asset)
            session.flush()
            session.add(
                AssetHistory(
                    asset_id=asset.id,
                    field="created",
                    new_value=asset.kind,
                    actor=actor,
                    source="import",
                )
            )
            apply_manual_changes(
                session,
                asset,
                plan.clean,
                actor=actor,
                source="import",
                mark_manual=set(plan.clean) - _MACHINE_REPORTED,
            )
            report.created += 1
            continue
        changed = apply_manual_changes(
            session,
            asset,
            plan.clean,
            actor=actor,
            source="import",
            mark_manual=set(plan.clean) - _MACHINE_REPORTED,
        )
        if changed:
            report.updated += 1
        else:
            report.unchanged += 1
    session.flush()
    report.applied = True
    return report


def _check_duplicates_in_file(
    values: dict[str, str],
    row: int,
    seen: dict[tuple[str, str], int],
    errors: list[RowError],
) -> None:
    keys: list[tuple[str, str]] = []
    if values.get("asset_tag"):
        keys.append(("asset_tag", values["asset_tag"]))
    serial = usable_serial(values.get("serial"))
    if serial:
        keys.append(("serial", serial))
    for raw in values.get("macs", "").replace(",", " ").replace(";", " ").split():
        mac = normalize_mac(raw)
        if mac:
            keys.append(("macs", mac))
    for column, value in keys:
        first = seen.setdefault((column, value), row)
        if first != row:
            errors.append(RowError(row, column, f"{value} already used on row {first}"))


def _would_change(asset: Asset, clean: dict[str, object]) -> bool:
    for key, value in clean.items():
        current: object = asset.mac_list if key == "macs" else getattr(asset, key)
        if current != value:
            return True
    return False
