"""What the API asks: filtered, scoped, paged alert lists and one alert with its evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertManager, AlertNotFound
from campuswatch.collector.register.assets import site_subtree_ids
from campuswatch.collector.signals import Evidence
from tests.collector.alerts.conftest import SCHOOL, T0, signal


@pytest.fixture
def populated(manager: AlertManager) -> AlertManager:
    batch = [signal(f"pc-{n:02}", at=T0 + timedelta(minutes=n)) for n in range(12)]
    batch += [
        signal("cam-1", rule="camera-offline", level="high", site="lab-1"),
        signal("srv-1", rule="malware-found", level="critical", site="other-school",
               summary="EICAR_TEST found in C:\\Users\\100%_sure"),
    ]  # fmt: skip
    manager.process(batch, T0 + timedelta(minutes=12))
    return manager


def test_filters_page_and_total(populated: AlertManager, factory: sessionmaker[Session]) -> None:
    with factory() as session:
        rows, total = populated.list_alerts(session, page=2, page_size=5)
        assert total == 14 and len(rows) == 5
        page_one, _ = populated.list_alerts(session, page=1, page_size=5)
        assert page_one[0].device_id == "pc-11"  # newest activity first
        _, high_or_worse = populated.list_alerts(session, level=["high", "critical"])
        assert high_or_worse == 2
        rows, total = populated.list_alerts(session, rule_id="camera-offline", state="firing")
        assert [row.device_id for row in rows] == ["cam-1"] and total == 1
        _, resolved = populated.list_alerts(session, state="resolved")
        assert resolved == 0
        _, recent = populated.list_alerts(session, since=T0 + timedelta(minutes=10))
        assert recent == 2  # pc-10 and pc-11
        rows, _ = populated.list_alerts(session, device_id="pc-03")
        assert [row.device_id for row in rows] == ["pc-03"]


def test_scope_limits_to_a_site_subtree(
    populated: AlertManager, factory: sessionmaker[Session]
) -> None:
    with factory() as session:
        scope = site_subtree_ids(session, SCHOOL)
        _, in_school = populated.list_alerts(session, site_ids=scope)
        _, in_room = populated.list_alerts(session, site_ids=["lab-1"])
        _, nothing = populated.list_alerts(session, site_ids=[])
    assert (in_school, in_room, nothing) == (13, 1, 0)


def test_search_is_case_insensitive_and_treats_wildcards_literally(
    populated: AlertManager, factory: sessionmaker[Session]
) -> None:
    with factory() as session:
        rows, _ = populated.list_alerts(session, search="eicar")
        assert [row.device_id for row in rows] == ["srv-1"]
        _, percent = populated.list_alerts(session, search="100%_")
        _, underscore = populated.list_alerts(session, search="pc_0")
    assert (percent, underscore) == (1, 0)


def test_bad_paging_values_are_clamped(
    populated: AlertManager, factory: sessionmaker[Session]
) -> None:
    with factory() as session:
        rows, total = populated.list_alerts(session, page=-3, page_size=0)
    assert (len(rows), total) == (1, 14)


def test_get_alert_returns_evidence_newest_first_and_audit(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    evidence = tuple(
        Evidence(f"m{n}", "av", T0 + timedelta(seconds=n), {"age": n}) for n in range(3)
    )
    manager.process([signal(evidence=evidence)], T0)
    with factory() as session:
        [row], _ = manager.list_alerts(session)
        detail = manager.get_alert(session, row.id)
        assert [item.message_id for item in detail.evidence] == ["m2", "m1", "m0"]
        assert [entry.action for entry in detail.audit] == ["opened"]
        with pytest.raises(AlertNotFound):
            manager.get_alert(session, row.id + 99)


def test_search_finds_an_alert_by_its_vietnamese_text_in_any_case_and_without_accents(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    """A SOC analyst in Hà Nội searches in Vietnamese, as the UI shows the alert: the stored
    texts count, not only the English summary; capitals and missing accents do not matter
    (typing Vietnamese without its marks is common), on SQLite as on PostgreSQL."""
    texts = {
        "en": {"title": "Antivirus signatures out of date", "summary": "pc-01: 9 days old"},
        "vi": {"title": "Chữ ký virus đã cũ", "summary": "Máy pc-01: chữ ký 9 ngày tuổi"},
    }
    manager.process([replace(signal(), texts=texts), signal("pc-02")], T0)
    with factory() as session:
        found = {
            query: [row.device_id for row in manager.list_alerts(session, search=query)[0]]
            for query in ("chữ ký", "CHỮ KÝ", "chu ky", "ĐÃ CŨ", "9 ngày")
        }
    assert found == {query: ["pc-01"] for query in found}
