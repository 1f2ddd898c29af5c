"""The antivirus probe: Security Center / Defender on Windows, ClamAV elsewhere.

The parsers live in ``av_windows`` and ``av_clamav``; this module picks the platform and
turns the products into the one-word ``status`` the coverage KPI counts.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from campuswatch.agent.probes import ProbeContext
from campuswatch.wire.messages import AvMessage, AvProduct, ProbeError


def product_protects(product: AvProduct) -> bool:
    """Does this product actively protect the machine right now?

    A passive Defender next to a third-party product is not "disabled" but is also not the
    protection; real-time scanning is required where the platform offers it (Windows). ClamAV
    on a Linux lab PC is counted as protecting with fresh signatures even without on-access
    scanning, which Debian does not enable by default; rules can still flag ``realtime=0``.
    """
    if product.enabled is False or product.mode in ("passive", "disabled"):
        return False
    if product.signatures_up_to_date is not True:
        return False
    if product.source == "clamav":
        return True
    return product.realtime_protection is True


def av_status(products: list[AvProduct], errors: list[ProbeError]) -> str:
    if any(product_protects(product) for product in products):
        return "protected"
    if products:
        return "at_risk"
    return "error" if errors else "no_av"


class AvProbe:
    name = "av"
    kind = "av"

    def __init__(self, platform: str = sys.platform) -> None:
        self._platform = platform

    def collect(self, context: ProbeContext) -> AvMessage:
        now = datetime.now(UTC)
        products: list[AvProduct]
        errors: list[ProbeError]
        if self._platform == "win32":
            from campuswatch.agent.probes.av_windows import collect_windows_av

            products, errors = collect_windows_av(context, now)
        else:
            from campuswatch.agent.probes.av_clamav import collect_clamav

            products, errors = collect_clamav(context, now)
        return AvMessage(
            device_id=context.device_id,
            site=context.site,
            status=av_status(products, errors),  # type: ignore[arg-type]
            products=products,
            errors=errors,
        )
