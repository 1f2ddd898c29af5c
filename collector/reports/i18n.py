"""The reports' own small catalogue (vi, en) and number formatting per language.

Kept here rather than in the web UI's gettext catalogues because reports are rendered
offline (scheduler, CLI) and the archive must not change wording when the UI is edited.
Vietnamese writes 87,5 % and 1.234; English 87.5 % and 1,234.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Final, Literal

Lang = Literal["vi", "en"]
LANGUAGES: Final[tuple[Lang, ...]] = ("vi", "en")

CATALOGUE: Final[dict[str, dict[Lang, str]]] = {
    # KPI names
    "av_coverage": {
        "vi": "Máy tính có phần mềm diệt virus hoạt động",
        "en": "Computers protected by antivirus",
    },
    "broadband": {
        "vi": "Trường có Internet băng rộng (cáp quang/4G/5G) hoạt động",
        "en": "Schools on working broadband (fibre/4G/5G)",
    },
    "digital_records": {
        "vi": "Thiết bị được quản lý bằng hồ sơ số",
        "en": "Equipment managed by digital records",
    },
    "information_systems": {
        "vi": "Hệ thống thông tin đã phân loại cấp độ và có phương án bảo vệ được phê duyệt",
        "en": "Information systems classified with an approved protection plan",
    },
    "alerts": {"vi": "Cảnh báo an ninh", "en": "Security alerts"},
    "outages": {"vi": "Số lần mất kết nối Internet", "en": "Internet outages"},
    "outage_minutes": {"vi": "Tổng thời gian mất kết nối (phút)", "en": "Outage time (minutes)"},
    "assets_added": {"vi": "Thiết bị mới ghi nhận", "en": "Assets added"},
    "assets_lost": {"vi": "Thiết bị bị mất", "en": "Assets lost"},
    "assets_retired": {"vi": "Thiết bị thanh lý", "en": "Assets retired"},
    # KPI parts
    "at_risk": {"vi": "có nguy cơ", "en": "at risk"},
    "stale_signatures": {"vi": "mẫu nhận diện cũ", "en": "stale signatures"},
    "no_av": {"vi": "không có phần mềm", "en": "no antivirus"},
    "error": {"vi": "lỗi kiểm tra", "en": "check failed"},
    "no_report": {"vi": "không có báo cáo", "en": "no report"},
    "declared": {"vi": "đã khai báo đường truyền", "en": "uplink declared"},
    "reachable": {"vi": "kết nối được", "en": "reachable"},
    "reachable_header": {"vi": "Kết nối được", "en": "Reachable"},
    "not_declared": {"vi": "chưa khai báo", "en": "not declared"},
    # alert levels
    "info": {"vi": "thông tin", "en": "info"},
    "low": {"vi": "thấp", "en": "low"},
    "medium": {"vi": "trung bình", "en": "medium"},
    "high": {"vi": "cao", "en": "high"},
    "critical": {"vi": "nghiêm trọng", "en": "critical"},
    # headings and columns
    "scope": {"vi": "Phạm vi", "en": "Scope"},
    "all_sites": {"vi": "Toàn bộ đơn vị", "en": "All sites"},
    "period": {"vi": "Kỳ báo cáo", "en": "Period"},
    "generated": {"vi": "Ngày lập", "en": "Generated"},
    "kpi_heading": {"vi": "Chỉ tiêu kế hoạch", "en": "Plan targets"},
    "indicator": {"vi": "Chỉ tiêu", "en": "Indicator"},
    "result": {"vi": "Kết quả", "en": "Result"},
    "value": {"vi": "Giá trị", "en": "Value"},
    "previous": {"vi": "Kỳ trước", "en": "Previous"},
    "trend": {"vi": "Xu hướng", "en": "Trend"},
    "target": {"vi": "Mục tiêu", "en": "Target"},
    "status": {"vi": "Đánh giá", "en": "Status"},
    "details": {"vi": "Chi tiết", "en": "Breakdown"},
    "pass": {"vi": "Đạt", "en": "Met"},
    "fail": {"vi": "Chưa đạt", "en": "Not met"},
    "improved": {"vi": "tốt hơn", "en": "better"},
    "worsened": {"vi": "kém hơn", "en": "worse"},
    "unchanged": {"vi": "không đổi", "en": "unchanged"},
    "alerts_heading": {"vi": "Cảnh báo theo mức độ", "en": "Alerts by level"},
    "level": {"vi": "Mức độ", "en": "Level"},
    "count": {"vi": "Số lượng", "en": "Count"},
    "ack_median": {"vi": "Thời gian xác nhận (trung vị)", "en": "Time to acknowledge (median)"},
    "ack_p90": {"vi": "Thời gian xác nhận (P90)", "en": "Time to acknowledge (p90)"},
    "acknowledged": {"vi": "Đã xác nhận", "en": "Acknowledged"},
    "unacknowledged": {"vi": "Chưa xác nhận", "en": "Not acknowledged"},
    "auto_resolved": {"vi": "Tự hết trước khi xác nhận", "en": "Cleared before acknowledgement"},
    "schools_heading": {"vi": "Số liệu theo trường", "en": "Figures per school"},
    "school": {"vi": "Trường", "en": "School"},
    "uplink": {"vi": "Đường truyền", "en": "Uplink"},
    "computers_protected": {"vi": "Máy tính được bảo vệ", "en": "Computers protected"},
    "assets_registered": {"vi": "Thiết bị có hồ sơ số", "en": "Assets with records"},
    "systems_classified": {"vi": "HTTT đã phân loại", "en": "Systems classified"},
    "yes": {"vi": "có", "en": "yes"},
    "no": {"vi": "không", "en": "no"},
    "unknown_value": {"vi": "chưa rõ", "en": "unknown"},
    "kpi_sheet": {"vi": "Chỉ tiêu", "en": "KPIs"},
    "schools_sheet": {"vi": "Các trường", "en": "Schools"},
    "notes_heading": {"vi": "Ghi chú", "en": "Notes"},
    "note_live": {
        "vi": "Tỷ lệ diệt virus và băng rộng đo theo trạng thái thiết bị lúc {time}.",
        "en": "Antivirus and broadband are the devices' state at {time}.",
    },
    "note_register": {
        "vi": "Hồ sơ số và hệ thống thông tin tính theo sổ tài sản tại {time}.",
        "en": "Digital records and information systems are the register as of {time}.",
    },
    "note_outages": {
        "vi": "Mất kết nối: mọi máy báo cáo đều không ra được Internet (dữ liệu chuỗi thời gian).",
        "en": "Outage: every reporting device found the Internet unreachable (time series).",
    },
    "note_no_outages": {
        "vi": "Không có dữ liệu chuỗi thời gian nên không thống kê mất kết nối.",
        "en": "No time-series store was given, so outages are not reported.",
    },
    "note_no_snapshot": {
        "vi": "Không có số liệu lưu hằng ngày trong kỳ này nên không báo cáo tỷ lệ diệt virus "
        "và băng rộng (không lấy số liệu hiện tại thay cho kỳ đã đóng).",
        "en": "No daily snapshot was recorded in this period, so antivirus and broadband are "
        "not reported (today's figures never stand in for a closed period).",
    },
    "note_partial": {
        "vi": "CampusWatch bắt đầu ghi nhận lúc {date}: số liệu chỉ tính từ thời điểm đó.",
        "en": "CampusWatch started recording on {date}: the figures cover only the time since.",
    },
    "note_no_data": {
        "vi": "Kỳ này kết thúc trước khi CampusWatch bắt đầu ghi nhận ({date}): không có số liệu.",
        "en": "This period ended before CampusWatch started recording ({date}): no data.",
    },
    "partial_banner": {
        "vi": "Số liệu một phần: từ {date}",
        "en": "Partial data: from {date}",
    },
    "no_data_banner": {
        "vi": "Không có số liệu: kỳ kết thúc trước khi lắp đặt ({date})",
        "en": "No data: the period ended before the install ({date})",
    },
    "numerator": {"vi": "Tử số", "en": "Numerator"},
    "denominator": {"vi": "Mẫu số", "en": "Denominator"},
    "computers": {"vi": "Số máy tính", "en": "Computers"},
    "share_column": {"vi": "Tỷ lệ", "en": "Share"},
    "assets_column": {"vi": "Số thiết bị", "en": "Assets"},
    "systems_column": {"vi": "Số HTTT", "en": "Information systems"},
    "minutes_unit": {"vi": "phút", "en": "min"},
    "hours_unit": {"vi": "giờ", "en": "h"},
    "uplink_fibre": {"vi": "cáp quang", "en": "fibre"},
    "uplink_4g": {"vi": "4G", "en": "4G"},
    "uplink_5g": {"vi": "5G", "en": "5G"},
    "uplink_adsl": {"vi": "ADSL", "en": "ADSL"},
    "uplink_satellite": {"vi": "vệ tinh", "en": "satellite"},
    "uplink_other": {"vi": "khác", "en": "other"},
    "uplink_unknown": {"vi": "chưa rõ", "en": "unknown"},
    "uplink_none": {"vi": "chưa khai báo", "en": "not declared"},
}


def t(key: str, lang: str) -> str:
    """The text for ``key``; a missing key is a bug, so it raises instead of leaking a key."""
    return CATALOGUE[key]["vi" if lang == "vi" else "en"]


def number(value: float | Decimal, lang: str, decimals: int = 0) -> str:
    if round(value, decimals) == 0:
        value = 0  # -0.04 with one decimal reads "0.0": a sign on zero only puzzles
    text = f"{value:,.{decimals}f}"
    if lang == "vi":
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


TENTH: Final = Decimal("0.1")


def percent_points(
    numerator: float | Fraction | Decimal, denominator: float | Fraction | Decimal = 1
) -> Decimal | None:
    """THE rounding rule of every share CampusWatch shows (UI, wall, HTML, PDF, XLSX):
    percent, half-up to one decimal, computed exactly from the fraction (1583 / 2000 is
    79.15 % → 79.2 %, never 79.1 % because the float 0.7915 is 0.79149999…).

    One exception keeps a target honest: a share below 100 % never shows as 100.0 % (99.96 %
    is 99.9 %), and one above 0 never shows as 0.0 % — a rounded pass must not hide a PC.
    None for 0 of 0 (nothing to measure).
    """
    whole = _exact(denominator)
    if whole == 0:
        return None
    share = _exact(numerator) / whole * 100
    points = Decimal(share.numerator) / Decimal(share.denominator)
    rounded = points.quantize(TENTH, rounding=ROUND_HALF_UP)
    if rounded == 100 and share < 100:
        return Decimal("99.9")
    if rounded == 0 and share > 0:
        return TENTH
    return rounded


def _exact(value: float | Fraction | Decimal) -> Fraction:
    # A float goes through its shortest repr: 0.7915 means 0.7915, not 0.79149999….
    if isinstance(value, float):
        return Fraction(Decimal(repr(value)))
    return Fraction(value)


def points_text(points: Decimal | float | None, lang: str) -> str:
    """An already rounded percentage (``percent_points``) as "79.2 %" / "79,2 %"."""
    if points is None:
        return "—"
    tenths = Decimal(repr(points)) if isinstance(points, float) else points
    return f"{number(tenths.quantize(TENTH, rounding=ROUND_DOWN), lang, 1)} %"


def percent(value: float | None, lang: str) -> str:
    """A ratio 0.875 → "87.5 %" / "87,5 %" by the one rule (``percent_points``)."""
    return "—" if value is None else points_text(percent_points(value), lang)


def share_text(numerator: float, denominator: float, lang: str) -> str:
    """``numerator / denominator`` as a percentage by the one rule, exactly ("—" for 0/0)."""
    return points_text(percent_points(numerator, denominator), lang)


def duration(seconds: float | None, lang: str) -> str:
    if seconds is None:
        return "—"
    minutes = seconds / 60
    if minutes < 120:
        return f"{number(minutes, lang, 1)} {t('minutes_unit', lang)}"
    return f"{number(minutes / 60, lang, 1)} {t('hours_unit', lang)}"
