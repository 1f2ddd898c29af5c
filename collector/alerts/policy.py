"""Timing, escalation and inhibition settings of the alert lifecycle (Alertmanager defaults).

Pydantic models so the collector's settings class can embed an ``AlertPolicy`` and load it
from its config file with the same validation.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from campuswatch.collector.signals import Level

SITE_UNREACHABLE_TAG: Final = "campuswatch.site_unreachable"
DEVICE_OFFLINE_TAG: Final = "campuswatch.device_offline"
# Rules tagged ``campuswatch.family.<name>`` form a family: on one device (or one site, for
# site alerts) the most severe open alert of a family supersedes the milder ones.
FAMILY_TAG_PREFIX: Final = "campuswatch.family."


def families_of(tags: object) -> set[str]:
    """The family tags among an alert's or signal's tags (damaged rows have none)."""
    if not isinstance(tags, list | tuple):
        return set()
    return {tag for tag in tags if isinstance(tag, str) and tag.startswith(FAMILY_TAG_PREFIX)}


class EscalationStep(BaseModel):
    """After ``after`` of firing without acknowledgement, tell ``notify`` (a forwarder route)."""

    model_config = ConfigDict(frozen=True)

    after: timedelta
    notify: str = Field(min_length=1)
    # Only alerts at this level or above take the step; lower ones skip to the next step.
    level_at_least: Level | None = None


class InhibitionRule(BaseModel):
    """An open source alert mutes open target alerts that share the ``equal`` labels.

    Matchers are label → value equality; the label ``tag`` matches when the alert carries
    that tag (rules tag their alerts, e.g. ``campuswatch.device_offline``).
    """

    model_config = ConfigDict(frozen=True)

    source_match: dict[str, str] = Field(min_length=1)
    target_match: dict[str, str] = Field(min_length=1)
    equal: tuple[str, ...] = ("site_id",)


def _default_inhibitions() -> tuple[InhibitionRule, ...]:
    # A school whose uplink is down makes every device there look offline: one alert about
    # the uplink tells the SOC everything, two hundred device alerts would bury it.
    return (
        InhibitionRule(
            source_match={"tag": SITE_UNREACHABLE_TAG},
            target_match={"tag": DEVICE_OFFLINE_TAG},
            equal=("site_id",),
        ),
    )


def _default_escalations() -> tuple[EscalationStep, ...]:
    return (
        EscalationStep(after=timedelta(minutes=15), level_at_least="high", notify="district"),
        EscalationStep(after=timedelta(minutes=60), notify="province"),
    )


class AlertPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Before the first notification of a group: lets related alerts (and the inhibiting
    # uplink alert) arrive, so the SOC gets one coherent message instead of a burst.
    group_wait: timedelta = timedelta(seconds=30)
    # Between two notifications about new members of an already-notified group.
    group_interval: timedelta = timedelta(minutes=5)
    # Reminder for an alert still firing and not acknowledged.
    repeat_interval: timedelta = timedelta(hours=4)
    # A fingerprint firing again this soon after resolving reopens the same alert.
    flap_window: timedelta = timedelta(minutes=5)
    # Between two "updated" notifications carrying an open alert's new count and last_seen
    # (like group_interval: a PC reporting every minute is not a message a minute).
    update_interval: timedelta = timedelta(minutes=5)
    escalations: tuple[EscalationStep, ...] = Field(default_factory=_default_escalations)
    inhibitions: tuple[InhibitionRule, ...] = Field(default_factory=_default_inhibitions)
    evidence_per_alert: int = Field(default=20, ge=1, le=1000)

    @field_validator("escalations")
    @classmethod
    def _escalations_in_order(cls, steps: tuple[EscalationStep, ...]) -> tuple[EscalationStep, ...]:
        afters = [step.after for step in steps]
        if afters != sorted(afters):
            raise ValueError("escalation steps must be listed in increasing 'after' order")
        return steps
