"""Spreadsheet export and import of the asset register (CSV and XLSX).

Export has a fixed column set so a facilities manager's spreadsheet keeps working from one
release to the next. Import validates every row first and reports every problem (row,
column, message); in dry-run nothing is written, in strict mode nothing is written if any
row is bad, otherwise the good rows are applied and the bad ones listed.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import Cell
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import from_excel
from openpyxl.utils.exceptions import InvalidFileException
from openpyxl.worksheet.worksheet import Worksheet
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import (
    Asset,
    AssetHistory,
    AssetMac,
)
from campuswatch.collector.register.assets import (
    DATE_FIELDS,
    apply_manual_changes,
    normalize_mac,
    render_value,
    site_subtree_ids,
    usable_serial,
    validate_changes,
)
from campuswatch.collector.reports.periods import DEFAULT_CALENDAR

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
    "owner",
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


# --- what a reader sees ---------------------------------------------------------------------

Language = Literal["vi", "en"]
LANGUAGES: Final[tuple[Language, ...]] = ("vi", "en")

# Column titles, (Vietnamese, English): the same words as the web UI's asset page.
HEADERS: Final[dict[str, tuple[str, str]]] = {
    "asset_tag": ("Mã tài sản", "Asset tag"),
    "kind": ("Loại", "Kind"),
    "name": ("Tên", "Name"),
    "vendor": ("Hãng sản xuất", "Vendor"),
    "model": ("Mẫu máy", "Model"),
    "serial": ("Số sê-ri", "Serial number"),
    "macs": ("Địa chỉ MAC", "MAC addresses"),
    "device_id": ("Mã thiết bị", "Device ID"),
    "site_id": ("Địa điểm", "Site"),
    "room": ("Phòng", "Room"),
    "owner": ("Người phụ trách", "Owner"),
    "status": ("Tình trạng", "Status"),
    "registered": ("Đã vào sổ", "Registered"),
    "purchase_date": ("Ngày mua", "Purchase date"),
    "warranty_end": ("Hết hạn bảo hành", "Warranty end"),
    "security_level": ("Cấp độ an toàn", "Security level"),
    "protection_plan_approved_on": ("Ngày duyệt phương án bảo vệ", "Protection plan approved on"),
    "os_name": ("Hệ điều hành", "Operating system"),
    "os_version": ("Phiên bản hệ điều hành", "OS version"),
    "firmware_version": ("Phiên bản firmware", "Firmware version"),
    "notes": ("Ghi chú", "Notes"),
    "source": ("Nguồn", "Source"),
    "first_seen": ("Lần đầu thấy", "First seen"),
    "last_seen": ("Lần cuối thấy", "Last seen"),
}
KIND_WORDS: Final[dict[str, tuple[str, str]]] = {
    "pc": ("máy tính", "PC"),
    "server": ("máy chủ", "server"),
    "laptop": ("máy tính xách tay", "laptop"),
    "projector": ("máy chiếu", "projector"),
    "interactive_panel": ("màn hình tương tác", "interactive panel"),
    "display": ("màn hình", "display"),
    "camera": ("camera", "camera"),
    "env_sensor": ("cảm biến môi trường", "environment sensor"),
    "access_point": ("điểm truy cập Wi-Fi", "access point"),
    "switch": ("bộ chuyển mạch", "switch"),
    "router": ("bộ định tuyến", "router"),
    "firewall": ("tường lửa", "firewall"),
    "printer": ("máy in", "printer"),
    "smart_plug": ("ổ cắm thông minh", "smart plug"),
    "access_controller": ("bộ kiểm soát ra vào", "access controller"),
    "scanner": ("máy dò quét mạng", "network scanner"),
    "information_system": ("hệ thống thông tin", "information system"),
    "other": ("khác", "other"),
}
STATUS_WORDS: Final[dict[str, tuple[str, str]]] = {
    "in_service": ("đang sử dụng", "in service"),
    "in_repair": ("đang sửa chữa", "in repair"),
    "lost": ("thất lạc", "lost"),
    "retired": ("đã thanh lý", "retired"),
}
SOURCE_WORDS: Final[dict[str, tuple[str, str]]] = {
    "agent": ("phần mềm giám sát", "agent"),
    "device": ("thiết bị tự báo", "device"),
    "discovery": ("dò quét mạng", "network discovery"),
    "manual": ("nhập tay", "entered by hand"),
    "import": ("nhập từ tệp", "imported"),
}
YES_NO: Final[dict[bool, tuple[str, str]]] = {True: ("có", "yes"), False: ("không", "no")}
_WORDS: Final[dict[str, Mapping[str, tuple[str, str]]]] = {
    "kind": KIND_WORDS,
    "status": STATUS_WORDS,
    "source": SOURCE_WORDS,
}
_DATE_FORMAT: Final[dict[Language, str]] = {"vi": "dd/mm/yyyy", "en": "yyyy-mm-dd"}
_TIME_FORMAT: Final[dict[Language, str]] = {"vi": "dd/mm/yyyy hh:mm", "en": "yyyy-mm-dd hh:mm"}
_TIME_COLUMNS: Final = ("first_seen", "last_seen")
# Excel counts width in characters of its default font; beyond this a column is a wall.
_MAX_WIDTH: Final = 60
_MIN_WIDTH: Final = 8


def _fold(text: str) -> str:
    """Case, spacing and Unicode form folded: "Đang  sử dụng" typed on a phone (NFD) is
    still "đang sử dụng"."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _column_by_title() -> dict[str, str]:
    titles: dict[str, str] = {}
    for column, words in HEADERS.items():
        titles[_fold(column)] = column
        for word in words:
            titles[_fold(word)] = column
    return titles


_COLUMN_BY_TITLE: Final = _column_by_title()
_CODE_BY_WORD: Final[dict[str, dict[str, str]]] = {
    column: {_fold(text): code for code, words in vocabulary.items() for text in (code, *words)}
    for column, vocabulary in _WORDS.items()
}


def header_title(column: str, language: Language) -> str:
    return HEADERS[column][LANGUAGES.index(language)]


def _word(column: str, code: str, language: Language) -> str:
    words = _WORDS[column].get(code)
    return code if words is None else words[LANGUAGES.index(language)]


# --- export ---------------------------------------------------------------------------------


def _assets_for_export(session: Session, site_id: str | None) -> Iterator[Asset]:
    query = select(Asset).order_by(Asset.id)
    if site_id is not None:
        query = query.where(Asset.site_id.in_(site_subtree_ids(session, site_id)))
    yield from session.scalars(query)


def _escaped(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _cell_text(asset: Asset, column: str) -> str:
    value: object = asset.mac_list if column == "macs" else getattr(asset, column)
    if column == "registered":
        return "yes" if value else "no"
    if column == "macs":
        assert isinstance(value, list)
        return " ".join(value)
    return _escaped(render_value(value) or "")


def export_rows(session: Session, site_id: str | None = None) -> Iterator[list[str]]:
    """The CSV's rows: column codes and value codes, for scripts and other systems."""
    yield list(COLUMNS)
    for asset in _assets_for_export(session, site_id):
        yield [_cell_text(asset, column) for column in COLUMNS]


def export_assets_csv(session: Session, site_id: str | None = None) -> bytes:
    """UTF-8 with a BOM: without it Excel reads Vietnamese text as Windows-1252 mojibake."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(export_rows(session, site_id))
    return buffer.getvalue().encode("utf-8-sig")


SheetValue = str | int | date | datetime | None


def _sheet_value(asset: Asset, column: str, language: Language, zone: ZoneInfo) -> SheetValue:
    """A cell as a person reads it: words, not codes; real dates in local time."""
    value: object = asset.mac_list if column == "macs" else getattr(asset, column)
    if value is None:
        return None
    if column == "registered":
        return YES_NO[bool(value)][LANGUAGES.index(language)]
    if column in _WORDS:
        return _word(column, str(value), language)
    if column == "macs":
        assert isinstance(value, list)
        return " ".join(value) or None
    if column in _TIME_COLUMNS and isinstance(value, datetime):
        # Excel has no time zones: the wall-clock time of the school, to the second.
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(zone).replace(tzinfo=None, microsecond=0)
    if isinstance(value, date | int) and not isinstance(value, bool):
        return value
    return _escaped(str(value))


def _write_sheet(
    sheet: Worksheet,
    columns: tuple[str, ...],
    rows: Iterator[list[SheetValue]],
    language: Language,
) -> None:
    """Header in bold, frozen, filterable; dates as dates; every column as wide as it needs."""
    widths = [len(header_title(column, language)) + 3 for column in columns]  # filter arrow
    for column_number, column in enumerate(columns, start=1):
        title = sheet.cell(row=1, column=column_number, value=header_title(column, language))
        title.font = Font(bold=True)
        title.alignment = Alignment(vertical="top", wrap_text=False)
    row_number = 1
    for row_number, row in enumerate(rows, start=2):
        for column_number, (column, value) in enumerate(zip(columns, row, strict=True), start=1):
            cell: Cell = sheet.cell(row=row_number, column=column_number)
            _fill(cell, column, value, language)
            shown = (
                len(value.strftime("%d/%m/%Y %H:%M"))
                if isinstance(value, date)
                else len(str(value or ""))
            )
            widths[column_number - 1] = max(widths[column_number - 1], shown + 1)
    for column_number, width in enumerate(widths, start=1):
        letter = get_column_letter(column_number)
        sheet.column_dimensions[letter].width = max(_MIN_WIDTH, min(_MAX_WIDTH, width))
    last = f"{get_column_letter(len(columns))}{max(row_number, 1)}"
    sheet.auto_filter.ref = f"A1:{last}"
    sheet.freeze_panes = "A2"


def _fill(cell: Cell, column: str, value: SheetValue, language: Language) -> None:
    if value is None:
        return
    if isinstance(value, datetime):
        cell.value = value
        cell.number_format = _TIME_FORMAT[language]
    elif isinstance(value, date):
        cell.value = value
        cell.number_format = _DATE_FORMAT[language]
    elif isinstance(value, int):
        cell.value = value
    else:
        # Explicit string type: openpyxl would otherwise turn "=..." into a formula and
        # Excel would turn serials like "00123" into numbers.
        cell.value = value
        cell.data_type = "s"


def export_assets_xlsx(
    session: Session,
    site_id: str | None = None,
    *,
    language: Language = "vi",
    zone: ZoneInfo = DEFAULT_CALENDAR.zone,
) -> bytes:
    """The register as a spreadsheet for people: titles and words in ``language``, dates as
    Excel dates in the schools' time zone (the reports' zone). ``import_assets`` reads it
    back unchanged."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Tài sản" if language == "vi" else "Assets"
    rows = (
        [_sheet_value(asset, column, language, zone) for column in COLUMNS]
        for asset in _assets_for_export(session, site_id)
    )
    _write_sheet(sheet, COLUMNS, rows, language)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# --- template -------------------------------------------------------------------------------

TEMPLATE_COLUMNS: Final = tuple(column for column in COLUMNS if column not in EXPORT_ONLY_COLUMNS)
# (what the column holds, allowed values or an example), (Vietnamese, English).
_GUIDE: Final[dict[str, tuple[tuple[str, str], tuple[str, str]]]] = {
    "asset_tag": (
        (
            "Mã tài sản dán trên thiết bị; không trùng nhau. "
            "Dòng có mã đã có sẽ cập nhật tài sản đó.",
            "The tag stuck on the equipment; unique. A row with a known tag updates that asset.",
        ),
        ("Ví dụ: TB-0001", "Example: TB-0001"),
    ),
    "kind": (
        (
            "Loại thiết bị; bắt buộc với tài sản mới.",
            "Kind of equipment; required for a new asset.",
        ),
        ("", ""),
    ),
    "name": (("Tên gọi của tài sản.", "What people call the asset."), ("", "")),
    "vendor": (("Hãng sản xuất.", "Manufacturer."), ("Ví dụ: Epson", "Example: Epson")),
    "model": (("Mẫu máy.", "Model."), ("", "")),
    "serial": (
        (
            "Số sê-ri trên nhãn của hãng; giữ nguyên số 0 ở đầu.",
            "The maker's serial number; leading zeros are kept.",
        ),
        ("", ""),
    ),
    "macs": (
        (
            "Địa chỉ MAC, nhiều địa chỉ cách nhau bởi dấu cách hoặc dấu phẩy.",
            "MAC addresses, several separated by spaces or commas.",
        ),
        ("Ví dụ: AA:BB:CC:00:00:01", "Example: AA:BB:CC:00:00:01"),
    ),
    "device_id": (
        (
            "Mã thiết bị do phần mềm giám sát đặt; thường để trống.",
            "The id the monitoring software gives the device; usually left empty.",
        ),
        ("", ""),
    ),
    "site_id": (
        ("Mã địa điểm (trường) trong CampusWatch.", "The site (school) id in CampusWatch."),
        ("Ví dụ: hcm-q1-thcs-a", "Example: hcm-q1-thcs-a"),
    ),
    "room": (
        ("Phòng đặt thiết bị.", "The room the equipment is in."),
        ("Ví dụ: A101", "Example: A101"),
    ),
    "owner": (
        ("Người chịu trách nhiệm về thiết bị.", "The person responsible for the equipment."),
        ("Ví dụ: cô Nguyễn Thị Hạnh", "Example: Ms Nguyen Thi Hanh"),
    ),
    "status": (("Tình trạng sử dụng.", "Lifecycle status."), ("", "")),
    "registered": (
        ("Người quản lý đã xác nhận vào sổ chưa.", "Whether a facilities manager accepted it."),
        ("", ""),
    ),
    "purchase_date": (
        ("Ngày mua.", "Purchase date."),
        (
            "Ngày/tháng/năm (31/12/2024), năm-tháng-ngày hoặc ô ngày của Excel",
            "dd/mm/yyyy (31/12/2024), yyyy-mm-dd or an Excel date cell",
        ),
    ),
    "warranty_end": (
        ("Ngày hết hạn bảo hành.", "End of warranty."),
        (
            "Ngày/tháng/năm, năm-tháng-ngày hoặc ô ngày của Excel",
            "dd/mm/yyyy, yyyy-mm-dd or an Excel date cell",
        ),
    ),
    "security_level": (
        (
            "Cấp độ an toàn hệ thống thông tin (Nghị định 85/2016).",
            "Information system security level (Decree 85/2016).",
        ),
        ("1, 2, 3, 4 hoặc 5", "1, 2, 3, 4 or 5"),
    ),
    "protection_plan_approved_on": (
        (
            "Ngày phê duyệt phương án bảo vệ hệ thống thông tin.",
            "Date the information system's protection plan was approved.",
        ),
        (
            "Ngày/tháng/năm, năm-tháng-ngày hoặc ô ngày của Excel",
            "dd/mm/yyyy, yyyy-mm-dd or an Excel date cell",
        ),
    ),
    "os_name": (
        (
            "Hệ điều hành; phần mềm giám sát tự cập nhật.",
            "Operating system; agents keep it current.",
        ),
        ("", ""),
    ),
    "os_version": (("Phiên bản hệ điều hành.", "Operating system version."), ("", "")),
    "firmware_version": (("Phiên bản firmware.", "Firmware version."), ("", "")),
    "notes": (("Ghi chú tự do.", "Free notes."), ("", "")),
}
_SAMPLE: Final[dict[str, object]] = {
    "asset_tag": "TB-0001",
    "kind": "projector",
    "name": "Máy chiếu phòng A101",
    "vendor": "Epson",
    "model": "EB-X51",
    "serial": "X5LK012345",
    "macs": "AA:BB:CC:00:00:01",
    "room": "A101",
    "owner": "Nguyễn Thị Hạnh",
    "status": "in_service",
    "registered": True,
    "purchase_date": date(2024, 8, 15),
    "warranty_end": date(2027, 8, 15),
}


def _allowed(column: str, language: Language) -> str:
    at = LANGUAGES.index(language)
    if column in _WORDS:
        return "; ".join(words[at] for words in _WORDS[column].values())
    if column == "registered":
        return " / ".join(YES_NO[flag][at] for flag in (True, False))
    return _GUIDE[column][1][at]


def import_template_xlsx(*, language: Language = "vi") -> bytes:
    """An empty register to fill in: the columns import reads, one example row (delete it or
    overwrite it), and a guide sheet saying what each column holds and what it accepts."""
    at = LANGUAGES.index(language)
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Tài sản" if language == "vi" else "Assets"
    sample: list[SheetValue] = []
    for column in TEMPLATE_COLUMNS:
        value = _SAMPLE.get(column)
        if column == "registered":
            sample.append(YES_NO[bool(value)][at])
        elif column in _WORDS and isinstance(value, str):
            sample.append(_word(column, value, language))
        else:
            sample.append(value if isinstance(value, str | date) else None)
    _write_sheet(sheet, TEMPLATE_COLUMNS, iter([sample]), language)
    guide = workbook.create_sheet("Hướng dẫn" if language == "vi" else "Guide")
    titles = (
        ("Cột", "Nội dung", "Giá trị được chấp nhận")
        if language == "vi"
        else ("Column", "What it holds", "Accepted values")
    )
    guide.append(titles)
    for cell in guide[1]:
        cell.font = Font(bold=True)
    for column in TEMPLATE_COLUMNS:
        guide.append(
            [header_title(column, language), _GUIDE[column][0][at], _allowed(column, language)]
        )
    note = (
        "Dòng 2 của trang đầu là ví dụ: sửa hoặc xoá trước khi nhập. Ô trống xoá giá trị "
        "(trừ loại, tình trạng, đã vào sổ, MAC, mã thiết bị). Tiêu đề và từ ngữ tiếng Việt "
        "hoặc tiếng Anh đều được."
        if language == "vi"
        else "Row 2 of the first sheet is an example: change or delete it before importing. "
        "An empty cell clears a value (except kind, status, registered, MACs, device id). "
        "Titles and words may be Vietnamese or English."
    )
    guide.append([])
    guide.append([note])
    for letter, width in zip("ABC", (30, 70, 60), strict=True):
        guide.column_dimensions[letter].width = width
    for row in guide.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    guide.freeze_panes = "A2"
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
        # An Excel date cell: the register's dates are days, and its times are export-only.
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


_EXCEL_SERIAL: Final = re.compile(r"[1-9][0-9]{4}(?:\.0+)?")
_YES_NO_CODES: Final = {
    _fold(word): "true" if flag else "false" for flag, words in YES_NO.items() for word in words
}


def _from_sheet(column: str, text: str) -> str:
    """A cell as people write it, as the validators take it: words back to codes (either
    language), a date number Excel left in a General cell back to a date. Anything else is
    passed on unchanged for the validator to refuse with its own message."""
    if not text:
        return text
    if column in _CODE_BY_WORD:
        return _CODE_BY_WORD[column].get(_fold(text), text)
    if column == "registered":
        return _YES_NO_CODES.get(_fold(text), text)
    if column in DATE_FIELDS and _EXCEL_SERIAL.fullmatch(text):
        # 10000–99999 days after 1899-12-30: 1927–2173, never a plausible typed number.
        converted = from_excel(float(text))
        if isinstance(converted, datetime):
            return converted.date().isoformat()
    return text


def _word_error(column: str, value: str) -> str | None:
    """For a word the sheet's reader typed and import does not know: the words it does know,
    in both languages, rather than the register's codes."""
    vocabulary = _WORDS.get(column)
    if vocabulary is None or not value or value in vocabulary:
        return None
    known = ", ".join(f"{vi} / {en}" for vi, en in vocabulary.values())
    return f"unknown {HEADERS[column][1].lower()} {value!r}; use one of: {known}"


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
    # Titles in either language (an export read by people) or the column codes (the CSV).
    header = [_COLUMN_BY_TITLE.get(_fold(cell), cell.strip().lower()) for cell in header_cells]
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
            name: _from_sheet(name, _unescape(cells[index].strip()) if index < len(cells) else "")
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
            RowError(row_number, key, _word_error(key, values.get(key, "")) or text)
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
