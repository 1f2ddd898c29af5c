from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Asset, AssetHistory, Site
from campuswatch.collector.register.assets import create_asset
from campuswatch.collector.register.transfer import (
    COLUMNS,
    EXPORT_ONLY_COLUMNS,
    export_assets_csv,
    export_assets_xlsx,
    header_title,
    import_assets,
)


def _seed(session: Session) -> None:
    session.add(Site(id="hcm-q1-thcs-a", level="school", name="THCS Nguyễn Du"))
    session.flush()
    create_asset(
        session,
        {
            "asset_tag": "TB-0001",
            "kind": "projector",
            "name": "Máy chiếu phòng học 12A — Epson",
            "vendor": "Epson",
            "serial": "0012345",
            "macs": "AA:BB:CC:00:00:01",
            "site_id": "hcm-q1-thcs-a",
            "room": "Phòng 12A",
            "purchase_date": "2023-08-15",
            "warranty_end": date(2026, 8, 15),
            "notes": '=HYPERLINK("x") — đã bảo hành',
        },
        actor="cô Hạnh",
    )
    create_asset(
        session,
        {
            "kind": "information_system",
            "asset_tag": "HT-01",
            "name": "Cổng thông tin điện tử trường",
            "security_level": 2,
            "protection_plan_approved_on": "2024-12-01",
            "status": "in_service",
            "registered": False,
        },
        actor="admin",
    )
    session.commit()


def _snapshot(session: Session) -> list[dict[str, object]]:
    rows = []
    for asset in session.scalars(select(Asset).order_by(Asset.asset_tag)):
        rows.append(
            {
                column: (asset.mac_list if column == "macs" else getattr(asset, column))
                for column in COLUMNS
                if column not in EXPORT_ONLY_COLUMNS
            }
        )
    return rows


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_round_trip_into_fresh_database(session: Session, tmp_path: object, fmt: str) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    _seed(session)
    data = export_assets_csv(session) if fmt == "csv" else export_assets_xlsx(session)
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with session_factory(engine)() as fresh:
            fresh.add(Site(id="hcm-q1-thcs-a", level="school", name="THCS Nguyễn Du"))
            fresh.flush()
            report = import_assets(fresh, data, f"assets.{fmt}")
            assert report.errors == []
            assert (report.created, report.updated, report.applied) == (2, 0, True)
            fresh.commit()
            assert _snapshot(fresh) == _snapshot(session)
            actors = set(fresh.scalars(select(AssetHistory.actor)))
            assert f"import:assets.{fmt}:2" in actors and f"import:assets.{fmt}:3" in actors
            # Importing the same file again changes nothing.
            again = import_assets(fresh, data, f"assets.{fmt}")
            assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    finally:
        engine.dispose()


def test_csv_has_bom_vietnamese_and_neutralised_formulas(session: Session) -> None:
    _seed(session)
    data = export_assets_csv(session)
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0]["name"] == "Máy chiếu phòng học 12A — Epson"
    assert rows[0]["serial"] == "0012345"
    assert rows[0]["notes"].startswith("'=")


def test_xlsx_cells_are_text(session: Session) -> None:
    _seed(session)
    sheet = load_workbook(io.BytesIO(export_assets_xlsx(session))).worksheets[0]
    header = [cell.value for cell in sheet[1]]
    assert header == [header_title(column, "vi") for column in COLUMNS]
    serial = sheet.cell(row=2, column=COLUMNS.index("serial") + 1)
    assert serial.value == "0012345" and serial.data_type == "s"


BAD_CSV = """asset_tag,kind,name,macs,status,purchase_date,security_level
A-1,pc,Máy 1,aa:bb:cc:dd:ee:01,in_service,2024-01-05,
A-2,pc,Máy 2,,in_service,31/02/2024,
A-3,pc,Máy 3,,broken,,
A-4,pc,Máy 4,aa:bb:cc:dd:ee:01,in_service,,
A-5,information_system,Hệ thống 5,,in_service,,7

A-6,pc,Máy 6,,in_service,,
"""


def test_dry_run_lists_every_bad_row_and_writes_nothing(session: Session) -> None:
    report = import_assets(session, BAD_CSV.encode(), "bad.csv", dry_run=True)
    found = {(error.row, error.column) for error in report.errors}
    assert found == {(3, "purchase_date"), (4, "status"), (5, "macs"), (6, "security_level")}
    assert not report.applied
    assert session.scalar(select(Asset.id)) is None
    # Blank line 7 keeps its number: the last good row is row 8, counted as "would create".
    assert report.rows == 6 and report.created == 2


def test_strict_import_writes_nothing_when_any_row_is_bad(session: Session) -> None:
    report = import_assets(session, BAD_CSV.encode(), "bad.csv")
    assert report.errors and not report.applied
    assert session.scalar(select(Asset.id)) is None


def test_lenient_import_applies_good_rows(session: Session) -> None:
    report = import_assets(session, BAD_CSV.encode(), "bad.csv", strict=False)
    assert report.applied and len(report.errors) == 4
    tags = set(session.scalars(select(Asset.asset_tag)))
    assert tags == {"A-1", "A-6"}


def test_duplicate_mac_against_database_and_unknown_column(session: Session) -> None:
    create_asset(session, {"kind": "pc", "asset_tag": "X-1", "macs": "aa:bb:cc:dd:ee:09"}, "a")
    clash = "asset_tag,kind,macs\nX-2,pc,AA-BB-CC-DD-EE-09\n"
    report = import_assets(session, clash.encode(), "clash.csv", dry_run=True)
    # The MAC matches X-1 while the tag is new: the row is refused rather than merged.
    assert [(e.row, e.column) for e in report.errors] == [(2, "macs")]
    unknown = import_assets(session, b"asset_tag,colour\nX-3,red\n", "u.csv", dry_run=True)
    assert [(e.row, e.column) for e in unknown.errors] == [(1, "colour")]


def test_garbage_file_is_a_clear_error(session: Session) -> None:
    report = import_assets(session, b"PK\x03\x04not really a zip", "x.xlsx")
    assert len(report.errors) == 1 and "XLSX" in report.errors[0].message
    report = import_assets(session, b"\xff\xfe\x00bad", "x.csv")
    assert len(report.errors) == 1 and "UTF-8" in report.errors[0].message
