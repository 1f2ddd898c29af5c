from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Asset, AssetHistory, AssetMac, Device, Site
from campuswatch.collector.register.assets import (
    AssetConflict,
    AssetValidationError,
    apply_message,
    asset_history,
    create_asset,
    digital_record_coverage,
    edit_asset,
    information_systems_classified,
    list_assets,
    normalize_mac,
)
from campuswatch.wire.messages import (
    DiscoveredHost,
    DiscoveryMessage,
    HardwareInfo,
    HelloMessage,
    InterfaceInfo,
    InventoryMessage,
    OsInfo,
    StateMessage,
)
from tests.collector.register.conftest import T0, decoded

DIGEST = "a" * 64
MAC_PC = "00:1a:2b:3c:4d:5e"
MAC_PC_WIFI = "00:1a:2b:3c:4d:5f"


def inventory(
    *,
    device_id: str = "pc-lab1-01",
    site: str = "hcm-q1-thcs-a",
    minutes: int = 0,
    os_version: str = "10.0.19045",
    serial: str | None = "SN-PC-001",
    hostname: str = "LAB1-PC01",
    macs: tuple[str, ...] = (MAC_PC,),
) -> InventoryMessage:
    return InventoryMessage(
        device_id=device_id,
        site=site,
        ts=T0 + timedelta(minutes=minutes),
        digest=DIGEST,
        hostname=hostname,
        os=OsInfo(name="Windows 10 Pro", version=os_version),
        hardware=HardwareInfo(vendor="Dell Inc.", model="OptiPlex 3080", serial=serial),
        interfaces=[InterfaceInfo(name=f"eth{i}", mac=mac) for i, mac in enumerate(macs)],
    )


def discovery(*hosts: DiscoveredHost, minutes: int = 0) -> DiscoveryMessage:
    return DiscoveryMessage(
        device_id="scanner-01",
        site="hcm-q1-thcs-a",
        ts=T0 + timedelta(minutes=minutes),
        subnet="10.1.0.0/24",
        hosts=list(hosts),
    )


def assets(session: Session) -> list[Asset]:
    return list(session.scalars(select(Asset).order_by(Asset.id)))


def test_unknown_site_is_auto_created(session: Session) -> None:
    apply_message(session, decoded(inventory(site="dn-hc-thpt-b")))
    site = session.get(Site, "dn-hc-thpt-b")
    assert site is not None
    assert site.level == "school" and site.parent_id is None and site.auto_created


def test_inventory_creates_unregistered_agent_asset_with_history(session: Session) -> None:
    message = inventory()
    changes = apply_message(session, decoded(message))
    assert len(changes) == 1 and changes[0].action == "created"
    (asset,) = assets(session)
    assert asset.device_id == "pc-lab1-01"
    assert (asset.name, asset.vendor, asset.serial) == ("LAB1-PC01", "Dell Inc.", "SN-PC-001")
    assert asset.os_name == "Windows 10 Pro" and asset.kind == "pc"
    assert asset.source == "agent" and asset.registered is False
    assert asset.mac_list == [MAC_PC]
    history = asset_history(session, asset.id)
    fields = {row.field for row in history}
    assert {"name", "vendor", "serial", "os_version", "macs"} <= fields
    assert all(row.actor == f"message:{message.id}" for row in history)


def test_device_seen_by_agent_and_by_discovery_is_one_asset(session: Session) -> None:
    apply_message(session, decoded(inventory()))
    changes = apply_message(
        session,
        decoded(discovery(DiscoveredHost(ip="10.1.0.21", mac=MAC_PC.upper()), minutes=5)),
    )
    pcs = [asset for asset in assets(session) if asset.device_id == "pc-lab1-01"]
    assert len(pcs) == 1
    assert not any(change.unknown_device for change in changes)
    assert pcs[0].last_seen == T0 + timedelta(minutes=5, seconds=1)


def test_discovered_first_then_agent_merges_into_one_asset(session: Session) -> None:
    apply_message(session, decoded(discovery(DiscoveredHost(ip="10.1.0.21", mac=MAC_PC_WIFI))))
    apply_message(session, decoded(discovery(DiscoveredHost(ip="10.1.0.22", mac=MAC_PC))))
    apply_message(session, decoded(inventory(macs=(MAC_PC, MAC_PC_WIFI), minutes=1)))
    macs = {entry.mac: entry.asset_id for entry in session.scalars(select(AssetMac))}
    pc = session.scalar(select(Asset).where(Asset.device_id == "pc-lab1-01"))
    assert pc is not None
    assert macs[MAC_PC] == pc.id and macs[MAC_PC_WIFI] == pc.id
    # Only the scanner's own asset and the PC remain: the discovery twin was merged away.
    assert sorted(a.device_id or "" for a in assets(session)) == ["pc-lab1-01", "scanner-01"]


def test_unknown_discovered_host_is_reported(session: Session) -> None:
    changes = apply_message(
        session,
        decoded(
            discovery(
                DiscoveredHost(ip="10.1.0.50", mac="de:ad:be:ef:00:01", vendor="Hikvision"),
                DiscoveredHost(ip="10.1.0.51"),  # no MAC: cannot be identified, skipped
                DiscoveredHost(ip="10.1.0.50", mac="de:ad:be:ef:00:01"),  # duplicate in sweep
            )
        ),
    )
    unknown = [change for change in changes if change.unknown_device]
    assert len(unknown) == 1
    assert (unknown[0].mac, unknown[0].ip) == ("de:ad:be:ef:00:01", "10.1.0.50")
    asset = session.get(Asset, unknown[0].asset_id)
    assert asset is not None
    assert asset.source == "discovery" and not asset.registered and asset.vendor == "Hikvision"
    # The next sweep sees it again: the same asset, still unknown (the alert stays open).
    again = apply_message(
        session,
        decoded(discovery(DiscoveredHost(ip="10.1.0.50", mac="de:ad:be:ef:00:01"), minutes=10)),
    )
    assert [(c.asset_id, c.action, c.unknown_device) for c in again] == [(asset.id, "seen", True)]


def test_ignored_or_registered_host_is_no_longer_unknown(session: Session) -> None:
    phone, camera = "de:ad:be:ef:00:02", "de:ad:be:ef:00:03"
    sweep = discovery(
        DiscoveredHost(ip="10.1.0.60", mac=phone), DiscoveredHost(ip="10.1.0.61", mac=camera)
    )
    first = {c.mac: c for c in apply_message(session, decoded(sweep))}
    edit_asset(session, first[phone].asset_id, {"ignored": "yes"}, "user:facilities", None)
    edit_asset(session, first[camera].asset_id, {"registered": True}, "user:facilities", None)
    later = discovery(
        DiscoveredHost(ip="10.1.0.60", mac=phone),
        DiscoveredHost(ip="10.1.0.61", mac=camera),
        minutes=10,
    )
    verdicts = {
        c.mac: (c.unknown_device, c.ignored, c.registered)
        for c in apply_message(session, decoded(later))
    }
    assert verdicts == {phone: (False, True, False), camera: (False, False, True)}
    history = session.scalars(select(AssetHistory).where(AssetHistory.field == "ignored")).all()
    assert [(h.old_value, h.new_value, h.actor) for h in history] == [
        ("false", "true", "user:facilities")
    ]


def test_same_serial_from_two_routes_is_one_asset(session: Session) -> None:
    apply_message(session, decoded(inventory(device_id="pc-old-id", macs=())))
    hello = HelloMessage(
        device_id="pc-reimaged",
        site="hcm-q1-thcs-a",
        ts=T0 + timedelta(minutes=3),
        device_type="pc",
        software="campuswatch-agent",
        software_version="0.1.0",
        vendor="Dell",
        serial="SN-PC-001",
    )
    apply_message(session, decoded(hello))
    pcs = [asset for asset in assets(session) if asset.serial == "SN-PC-001"]
    assert len(pcs) == 1
    assert pcs[0].device_id == "pc-reimaged"


def test_placeholder_serials_do_not_merge_different_machines(session: Session) -> None:
    junk = "To be filled by O.E.M."
    apply_message(session, decoded(inventory(device_id="pc-a", serial=junk, macs=())))
    apply_message(session, decoded(inventory(device_id="pc-b", serial=junk, macs=())))
    assert len(assets(session)) == 2


def test_manual_edit_survives_agent_report_but_other_fields_update(session: Session) -> None:
    apply_message(session, decoded(inventory()))
    (asset,) = assets(session)
    edit_asset(
        session,
        asset.id,
        {"name": "Máy chủ phòng Tin học 1", "room": "P.201"},
        actor="cô Lan",
        expected_version=asset.version,
    )
    apply_message(session, decoded(inventory(minutes=60, os_version="10.0.22631", hostname="X")))
    assert asset.name == "Máy chủ phòng Tin học 1"
    assert asset.os_version == "10.0.22631"
    assert set(asset.manual_fields) == {"name", "room"}
    actors = [(row.field, row.actor) for row in asset_history(session, asset.id)]
    assert ("name", "cô Lan") in actors and ("room", "cô Lan") in actors


def test_older_message_does_not_overwrite_newer_state(session: Session) -> None:
    apply_message(session, decoded(inventory(minutes=10, os_version="new")))
    apply_message(session, decoded(inventory(minutes=0, os_version="old")))
    (asset,) = assets(session)
    assert asset.os_version == "new"


def test_state_messages_drive_online_and_ignore_stale_ones(session: Session) -> None:
    online = StateMessage(device_id="cam-1", site="hcm-q1-thcs-a", ts=T0, status="online")
    offline = StateMessage(
        device_id="cam-1", site="hcm-q1-thcs-a", ts=T0 + timedelta(minutes=5), status="offline"
    )
    apply_message(session, decoded(offline))
    apply_message(session, decoded(online))  # older, arriving late (retained/backlog)
    device = session.get(Device, "cam-1")
    assert device is not None
    assert device.online is False
    assert device.latest["state"]["status"] == "offline"
    assert device.asset_id is not None


def test_edit_validation_collects_every_error(session: Session) -> None:
    apply_message(session, decoded(inventory()))
    (asset,) = assets(session)
    with pytest.raises(AssetValidationError) as caught:
        edit_asset(
            session,
            asset.id,
            {"security_level": 7, "purchase_date": "31/13/2024", "status": "broken", "x": 1},
            actor="admin",
            expected_version=None,
        )
    assert set(caught.value.errors) == {"security_level", "purchase_date", "status", "x"}


def test_status_lifecycle_and_optimistic_lock(session: Session) -> None:
    apply_message(session, decoded(inventory()))
    (asset,) = assets(session)
    version = asset.version
    edit_asset(session, asset.id, {"status": "retired"}, actor="a", expected_version=version)
    with pytest.raises(AssetValidationError, match="retired to in_service"):
        edit_asset(session, asset.id, {"status": "in_service"}, actor="a", expected_version=None)
    with pytest.raises(AssetConflict):
        edit_asset(session, asset.id, {"notes": "x"}, actor="b", expected_version=version)


def test_mac_of_another_asset_is_refused(session: Session) -> None:
    apply_message(session, decoded(inventory()))
    other = create_asset(session, {"kind": "projector", "name": "Máy chiếu"}, actor="a")
    with pytest.raises(AssetValidationError, match="already belongs"):
        edit_asset(session, other.id, {"macs": MAC_PC}, actor="a", expected_version=None)


def test_list_search_subtree_and_kpis(session: Session) -> None:
    session.add_all(
        [
            Site(id="hcm", level="province", name="TP.HCM"),
            Site(id="hcm-q1", parent_id="hcm", level="district", name="Quận 1"),
            Site(id="hcm-q1-thcs-a", parent_id="hcm-q1", level="school", name="THCS A"),
            Site(id="dn", level="province", name="Đà Nẵng"),
        ]
    )
    session.flush()
    apply_message(session, decoded(inventory()))
    apply_message(session, decoded(inventory(device_id="pc-dn", site="dn", serial="S2", macs=())))
    projector = create_asset(
        session, {"kind": "projector", "name": "Máy chiếu Epson", "site_id": "hcm-q1"}, actor="a"
    )
    create_asset(
        session,
        {
            "kind": "information_system",
            "name": "Cổng thông tin trường",
            "site_id": "hcm-q1-thcs-a",
            "security_level": 2,
            "protection_plan_approved_on": "2025-01-15",
        },
        actor="a",
    )
    create_asset(session, {"kind": "information_system", "name": "Email", "site_id": "hcm"}, "a")
    rows, total = list_assets(session, site_id="hcm")
    assert total == 4 and len(rows) == 4
    rows, total = list_assets(session, search="epson")
    assert [row.id for row in rows] == [projector.id] and total == 1
    rows, total = list_assets(session, search=MAC_PC.replace(":", "-"))
    assert total == 1 and rows[0].device_id == "pc-lab1-01"
    rows, total = list_assets(session, site_id="hcm", page=2, page_size=3)
    assert total == 4 and len(rows) == 1
    assert digital_record_coverage(session, "hcm") == (3, 4)
    assert digital_record_coverage(session) == (3, 5)
    assert information_systems_classified(session, "hcm") == (1, 2)
    ok = information_systems_classified(session, "hcm-q1")
    assert ok == (1, 1)
    assert date(2025, 1, 15) in {a.protection_plan_approved_on for a in assets(session)}


def test_normalize_mac() -> None:
    assert normalize_mac("AA-BB-CC-DD-EE-FF") == "aa:bb:cc:dd:ee:ff"
    assert normalize_mac("aabb.ccdd.eeff") == "aa:bb:cc:dd:ee:ff"
    assert normalize_mac("zz:bb:cc:dd:ee:ff") is None
    assert normalize_mac("aa:bb:cc") is None


def _statements_of_sweep(session: Session, hosts: int, minutes: int) -> list[str]:
    """What one sweep of ``hosts`` hosts asks the database, read with a cold session."""
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.lstrip().upper())

    sweep = discovery(
        *(
            DiscoveredHost(
                ip=f"10.1.{n // 250}.{n % 250}", mac=f"de:ad:be:ef:{n // 256:02x}:{n % 256:02x}"
            )
            for n in range(hosts)
        ),
        minutes=minutes,
    )
    session.commit()
    session.expunge_all()  # a new ingest batch starts with an empty identity map
    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        changes = apply_message(session, decoded(sweep))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len([change for change in changes if change.mac is not None]) == hosts
    return statements


@pytest.mark.parametrize("first_sweep", [True, False], ids=["first sweep", "later sweep"])
def test_a_sweep_reads_its_hosts_together_not_one_by_one(
    session: Session, first_sweep: bool
) -> None:
    # A district's scanners report ~100,000 hosts every few minutes; two lookups for each
    # host was most of the ingest's work while the sweeps arrived.
    if not first_sweep:
        _statements_of_sweep(session, 60, minutes=0)
    few = _statements_of_sweep(session, 20, minutes=10)
    many = _statements_of_sweep(session, 60, minutes=20)
    selects = [len([text for text in run if text.startswith("SELECT")]) for run in (few, many)]
    assert selects[0] == selects[1], selects


def test_a_sweep_sighting_is_not_an_edit(session: Session) -> None:
    # A facilities manager opens a host's page and edits it; the sweeps that see the host
    # meanwhile move its last_seen, but must not make the edit fail as a conflict.
    host = DiscoveredHost(ip="10.1.0.70", mac="de:ad:be:ef:00:70", vendor="Hikvision")
    (created,) = [c for c in apply_message(session, decoded(discovery(host))) if c.mac == host.mac]
    session.commit()
    version = session.get_one(Asset, created.asset_id).version
    changes = apply_message(session, decoded(discovery(host, minutes=10)))
    (seen,) = [change for change in changes if change.mac == host.mac]
    session.commit()
    session.expire_all()
    asset = session.get_one(Asset, created.asset_id)
    assert (seen.action, asset.version) == ("seen", version)
    assert asset.last_seen == T0 + timedelta(minutes=10, seconds=1)
    edit_asset(session, asset.id, {"name": "Gate camera"}, "user:facilities", version)
    session.commit()
    assert session.get_one(Asset, created.asset_id).name == "Gate camera"
