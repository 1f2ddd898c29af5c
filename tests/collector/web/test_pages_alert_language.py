"""Alert pages show a shipped rule's alert in the reader's language, switchable at any time."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from campuswatch.collector.db.models import Device
from campuswatch.collector.rules.engine import RuleEngine
from campuswatch.collector.rules.loader import load_rule_pack
from campuswatch.collector.rules.model import RulePack
from campuswatch.collector.web.rendering import format_number
from tests.collector.rules.test_engine import msg
from tests.collector.web.catalogue import untranslated_left, visible_text
from tests.collector.web.conftest import WebApp
from tests.collector.web.test_pages import ORIGIN

RULES = Path(__file__).resolve().parents[3] / "rules"


def raise_shipped_alert(web: WebApp, rule_file: str, **message: object) -> None:
    pack = load_rule_pack(RULES)
    chosen = [loaded for loaded in pack.rules if loaded.path.stem == rule_file]
    engine = RuleEngine(RulePack.of(chosen, RULES))
    signals = engine.process(msg(0, **message))
    assert [signal.status for signal in signals] == ["firing"]
    web.manager.process(signals, signals[0].at)


def test_vietnamese_pages_show_the_rules_vietnamese_title_summary_and_description(
    web: WebApp,
) -> None:
    raise_shipped_alert(
        web,
        "av_realtime_off",
        kind="av",
        site="q1-b",
        device_id="pc-b1",
        status="at_risk",
        products=[{"name": "Defender", "source": "defender", "realtime_protection": False}],
    )
    client = web.login("admin")
    client.cookies.set("cw_lang", "vi")
    queue = client.get("/ui/alerts")
    assert queue.status_code == 200
    assert "Bảo vệ thời gian thực đã tắt" in queue.text
    assert "Bảo vệ thời gian thực đã tắt trên pc-b1 tại q1-b" in queue.text
    assert "Real-time protection off" not in queue.text
    alert_id = next(
        int(part.split('"')[0])
        for part in queue.text.split('href="/ui/alerts/')[1:]
        if part.split('"')[0].isdigit() and "Bảo vệ thời gian thực đã tắt" in part[:300]
    )
    detail = client.get(f"/ui/alerts/{alert_id}")
    assert detail.status_code == 200
    text = visible_text(detail.text)
    assert "Bảo vệ thời gian thực đã tắt trên pc-b1 tại q1-b" in text
    assert "Phần mềm diệt virus vẫn chạy nhưng không quét tệp" in text
    assert "Bật lại bảo vệ thời gian thực" in text
    assert "Real-time protection off" not in text and "does not scan files" not in text
    assert untranslated_left(text) == []

    # The same stored alert, read by someone who switched to English.
    client.cookies.set("cw_lang", "en")
    english = visible_text(client.get(f"/ui/alerts/{alert_id}").text)
    assert "Real-time protection off on pc-b1 at q1-b" in english
    assert "does not scan files as they are opened" in english
    assert "Bảo vệ thời gian thực đã tắt" not in english


def test_silence_durations_are_plural_correct_in_each_language(web: WebApp) -> None:
    client = web.login("admin")
    client.cookies.set("cw_lang", "en")
    english = client.get(f"/ui/alerts/{web.alert_ids['q1']}").text
    assert '<option value="1" >1 hour</option>' in english
    assert ">4 hours</option>" in english
    assert "1 hours" not in english
    client.cookies.set("cw_lang", "vi")
    vietnamese = client.get(f"/ui/alerts/{web.alert_ids['q1']}").text
    assert '<option value="1" >1 giờ</option>' in vietnamese
    assert ">4 giờ</option>" in vietnamese


def test_one_result_and_one_open_alert_are_singular(web: WebApp) -> None:
    client = web.login("admin")
    client.cookies.set("cw_lang", "en")
    page = visible_text(client.get("/ui/alerts", params={"site_id": "q3-c"}).text)
    assert "1 result, page 1 of 1" in page and "1 results" not in page
    client.cookies.set("cw_lang", "vi")
    page = visible_text(client.get("/ui/alerts", params={"site_id": "q3-c"}).text)
    assert "1 kết quả, trang 1/1" in page


def test_a_clock_difference_that_rounds_to_zero_shows_no_sign(web: WebApp) -> None:
    with web.sessions() as session:
        device = session.scalars(select(Device).where(Device.device_id == "pc-a1")).one()
        device.clock_skew_s = -0.04
        session.commit()
    client = web.login("admin")
    for language, expected in (("en", "0 s"), ("vi", "0 giây")):
        client.cookies.set("cw_lang", language)
        page = visible_text(client.get("/ui/devices/pc-a1").text)
        assert expected in page and "-0 " not in page, page
    assert format_number(-0.04, 1, "en") == "0"
    assert format_number(-0.0, 0, "vi") == "0"
    assert format_number(-0.06, 1, "en") == "-0.1"
    assert format_number(-0.06, 1, "vi") == "-0,1"


def test_a_login_lockout_of_one_minute_says_minute(web: WebApp) -> None:
    from campuswatch.collector.web.login_limits import LOGIN_LIMITER_KEY, LoginLimiter
    from tests.collector.web.test_login_limits import Clock, client_from

    clock = Clock()
    # Counted in memory: the wording is under test here, not where the counts are kept.
    web.context.extras[LOGIN_LIMITER_KEY] = LoginLimiter(
        per_account=5, per_address=20, window_s=900, lockout_s=900, clock=clock
    )
    for language, one, many in (
        ("en", "Try again in 1 minute.", "Try again in 15 minutes."),
        ("vi", "1 phút", "15 phút"),
    ):
        clock.now += 10_000  # a fresh lockout for each language
        client = client_from(web, f"10.0.9.{len(language)}", language)
        for n in range(5):
            client.post(
                "/ui/login", data={"username": "admin", "password": f"x{n}"}, headers=ORIGIN
            )
        refused = client.post(
            "/ui/login", data={"username": "admin", "password": "y"}, headers=ORIGIN
        )
        assert refused.status_code == 429 and many in visible_text(refused.text)
        clock.now += 900 - 30  # 30 s of the lockout left
        refused = client.post(
            "/ui/login", data={"username": "admin", "password": "y"}, headers=ORIGIN
        )
        assert refused.status_code == 429
        assert one in visible_text(refused.text) and "1 minutes" not in refused.text
