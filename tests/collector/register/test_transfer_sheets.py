"""Spreadsheets a facilities manager reads and types: localized XLSX export, the template,
and imports typed the Vietnamese way (issue 19 item 2)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Asset, Site
from campuswatch.collector.register.assets import create_asset
from campuswatch.collector.register.transfer import (
    COLUMNS,
    EXPORT_ONLY_COLUMNS,
    Language,
    export_assets_xlsx,
    import_assets,
    import_template_xlsx,
)

SCHOOL = "hcm-q1-thcs-a"


def _seed(session: Session) -> Asset:
    session.add(Site(id=SCHOOL, level="school", name="THCS Nguyễn Du"))
    session.flush()
    projector = create_asset(
        session,
        {
            "asset_tag": "TB-0001",
            "kind": "projector",
            "name": "Máy chiếu phòng 12A",
            "serial": "0012345",
            "macs": "AA:BB:CC:00:00:01",
            "site_id": SCHOOL,
            "room": "12A",
            "status": "in_repair",
            "purchase_date": "2023-08-15",
            "security_level": 2,
        },
        actor="cô Hạnh",
    )
    # 2025-03-01 20:30 UTC is 2025-03-02 03:30 in Vietnam: the day must change too.
    projector.last_seen = datetime(2025, 3, 1, 20, 30, 15, 123456, tzinfo=UTC)
    create_asset(
        session,
        {"kind": "pc", "asset_tag": "TB-0002", "site_id": SCHOOL, "registered": False},
        actor="admin",
    )
    session.commit()
    return projector


def _column(sheet_header: list[object], title: str) -> int:
    return sheet_header.index(title) + 1


def test_xlsx_export_is_a_sheet_people_read(session: Session) -> None:
    _seed(session)
    book = load_workbook(io.BytesIO(export_assets_xlsx(session, language="vi")))
    sheet = book.worksheets[0]
    header = [cell.value for cell in sheet[1]]
    assert header[:3] == ["Mã tài sản", "Loại", "Tên"]
    assert "asset_tag" not in header and "Lần cuối thấy" in header
    row = {title: sheet.cell(row=2, column=_column(header, title)) for title in header}
    assert row["Loại"].value == "máy chiếu"
    assert row["Tình trạng"].value == "đang sửa chữa"
    assert row["Đã vào sổ"].value == "có"
    purchase = row["Ngày mua"]
    assert purchase.is_date and purchase.value == datetime(2023, 8, 15)
    assert purchase.number_format == "dd/mm/yyyy"
    seen = row["Lần cuối thấy"]
    assert seen.is_date and seen.value == datetime(2025, 3, 2, 3, 30, 15)  # local, no µs
    assert seen.number_format == "dd/mm/yyyy hh:mm"
    assert row["Cấp độ an toàn"].value == 2
    assert row["Số sê-ri"].value == "0012345" and row["Số sê-ri"].data_type == "s"
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:{sheet.cell(row=3, column=len(COLUMNS)).coordinate}"
    widths = {letter: dimension.width for letter, dimension in sheet.column_dimensions.items()}
    assert len(widths) == len(COLUMNS) and all(8 <= width <= 60 for width in widths.values())
    assert sheet.cell(row=1, column=1).font.bold


def test_xlsx_export_in_english(session: Session) -> None:
    _seed(session)
    sheet = load_workbook(io.BytesIO(export_assets_xlsx(session, language="en"))).worksheets[0]
    header = [cell.value for cell in sheet[1]]
    assert header[:3] == ["Asset tag", "Kind", "Name"]
    assert sheet.cell(row=2, column=_column(header, "Status")).value == "in repair"
    assert sheet.cell(row=2, column=_column(header, "Purchase date")).number_format == "yyyy-mm-dd"


@pytest.mark.parametrize("language", ["vi", "en"])
def test_xlsx_round_trip_changes_nothing(session: Session, language: Language) -> None:
    _seed(session)
    before = [_facts(asset) for asset in session.scalars(select(Asset).order_by(Asset.id))]
    data = export_assets_xlsx(session, language=language)
    report = import_assets(session, data, "so-tai-san.xlsx")
    assert report.errors == []
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)
    session.commit()
    session.expire_all()
    after = [_facts(asset) for asset in session.scalars(select(Asset).order_by(Asset.id))]
    assert after == before


def _facts(asset: Asset) -> dict[str, object]:
    return {
        column: asset.mac_list if column == "macs" else getattr(asset, column)
        for column in COLUMNS
        if column not in EXPORT_ONLY_COLUMNS
    } | {"version": asset.version}


def _typed_the_vietnamese_way() -> bytes:
    """What a facilities manager types into Excel by hand: Vietnamese headers and words,
    dd/mm/yyyy as text, and one date Excel itself stored as a date."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Mã tài sản", "Loại", "Tên", "Phòng", "Tình trạng", "Đã vào sổ", "Ngày mua",
                  "Hết hạn bảo hành", "Địa điểm"])  # fmt: skip
    sheet.append(["TB-0101", "Máy chiếu", "Máy chiếu 101", "101", "Đang sử dụng", "Có",
                  "05/01/2024", datetime(2027, 1, 31), SCHOOL])  # fmt: skip
    sheet.append(["TB-0102", "máy tính", "PC 102", "102", "đang sửa chữa", "không",
                  "5/9/2023", "2026-12-31", SCHOOL])  # fmt: skip
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_import_typed_the_vietnamese_way(session: Session) -> None:
    session.add(Site(id=SCHOOL, level="school", name="THCS Nguyễn Du"))
    session.commit()
    report = import_assets(session, _typed_the_vietnamese_way(), "nhap-tay.xlsx")
    assert report.errors == [] and report.created == 2
    first = session.scalar(select(Asset).where(Asset.asset_tag == "TB-0101"))
    assert first is not None
    assert (first.kind, first.status, first.registered) == ("projector", "in_service", True)
    assert first.purchase_date == date(2024, 1, 5)  # 5 January: dd/mm, not mm/dd
    assert first.warranty_end == date(2027, 1, 31)
    second = session.scalar(select(Asset).where(Asset.asset_tag == "TB-0102"))
    assert second is not None
    assert (second.kind, second.status, second.registered) == ("pc", "in_repair", False)
    assert second.purchase_date == date(2023, 9, 5)


def test_impossible_dates_and_words_are_row_errors(session: Session) -> None:
    text = "Mã tài sản,Loại,Tình trạng,Ngày mua\nX-1,máy chiếu,hỏng hẳn,31/02/2024\n"
    report = import_assets(session, text.encode(), "x.csv", dry_run=True)
    assert {(e.row, e.column) for e in report.errors} == {(2, "status"), (2, "purchase_date")}
    message = next(e.message for e in report.errors if e.column == "purchase_date")
    assert "DD/MM/YYYY" in message
    status = next(e.message for e in report.errors if e.column == "status")
    assert "'hỏng hẳn'" in status and "đang sửa chữa / in repair" in status


@pytest.mark.parametrize("language", ["vi", "en"])
def test_template_has_a_guide_and_imports_cleanly(
    session: Session, language: Language, tmp_path: Path
) -> None:
    data = import_template_xlsx(language=language)
    book = load_workbook(io.BytesIO(data))
    assert book.sheetnames[1] == ("Hướng dẫn" if language == "vi" else "Guide")
    header = [cell.value for cell in book.worksheets[0][1]]
    assert len(header) == len(COLUMNS) - len(EXPORT_ONLY_COLUMNS)
    guide = [[cell.value for cell in row] for row in book.worksheets[1].iter_rows()]
    described = {row[0] for row in guide[1:]}
    assert set(header) <= described
    status_help = next(row for row in guide if row[0] == header[COLUMNS.index("status")])
    assert ("đang sử dụng" if language == "vi" else "in service") in str(status_help)
    # The sample row is a valid row: the template imports without an error.
    url = f"sqlite:///{tmp_path / 'template.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as fresh:
            report = import_assets(fresh, data, "mau.xlsx", dry_run=True)
            assert report.errors == [] and report.created == 1
    finally:
        engine.dispose()
