"""Syslog destinations against real receivers: UDP, TCP octet counting, TLS with a test CA."""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.forward.base import DestinationUnavailable, OutboxItem
from campuswatch.collector.forward.models import OutboxEntry
from campuswatch.collector.forward.outbox import Outbox
from campuswatch.collector.forward.runner import DeliveryPolicy, Forwarder, ForwardingTarget
from campuswatch.collector.forward.syslog import SyslogDestination
from campuswatch.collector.signals import AlertNotification
from tests.collector.forward.cef_parser import CefEvent, parse_cef
from tests.collector.forward.receivers import Pki, SyslogReceiver
from tests.collector.forward.samples import OPENED_AT, av_disabled
from tests.support.waiting import wait_until

SYSLOG_LINE = re.compile(rb"<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) - (.*)", re.DOTALL)
FAST_RETRY = DeliveryPolicy(backoff_initial_s=0.2, backoff_max_s=1.0, poll_interval_s=0.1)


def cef_of(datagram: bytes) -> CefEvent:
    match = SYSLOG_LINE.fullmatch(datagram)
    assert match is not None, datagram[:120]
    return parse_cef(match.group(7).decode("utf-8"))


def make_receiver(transport: str, pki: Pki) -> SyslogReceiver:
    context = pki.server_context() if transport == "tls" else None
    receiver = SyslogReceiver(transport, context)
    receiver.start()
    return receiver


def make_destination(transport: str, port: int, pki: Pki) -> SyslogDestination:
    tls: dict[str, Any] = {"ca_file": str(pki.ca_file)} if transport == "tls" else {}
    return SyslogDestination(
        "127.0.0.1",
        port,
        transport=transport,  # type: ignore[arg-type]
        hostname="collector-cau-giay",
        timeout_s=5,
        **tls,
    )


def alerts(count: int) -> list[AlertNotification]:
    return [
        av_disabled(alert_id=100 + i, event_id=f"evt-{i}", device_id=f"pc-lab1-{i:02d}")
        for i in range(count)
    ]


@pytest.fixture
def forwarders() -> Iterator[list[Forwarder]]:
    started: list[Forwarder] = []
    yield started
    for forwarder in started:
        forwarder.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_av_disabled_alerts_arrive_as_cef_over_syslog(
    transport: str,
    pki: Pki,
    sessions: sessionmaker[Session],
    forwarders: list[Forwarder],
) -> None:
    receiver = make_receiver(transport, pki)
    try:
        destination = make_destination(transport, receiver.port, pki)
        forwarder = Forwarder(sessions, [ForwardingTarget("soc", destination, FAST_RETRY)])
        forwarders.append(forwarder)
        with sessions() as session, session.begin():
            Outbox.enqueue(session, alerts(3), ["soc"])
        forwarder.start()
        forwarder.wake()
        received = receiver.inbox.wait_for(lambda items: len(items) >= 3)
        events = sorted((cef_of(m) for m in received), key=lambda e: e.extension["externalId"])
        assert [e.extension["externalId"] for e in events] == ["100", "101", "102"]
        first = events[0]
        assert first.header["signature"] == "av.realtime_off"
        assert first.header["severity"] == "8"
        assert first.extension["deviceExternalId"] == "pc-lab1-00"
        assert first.extension["rt"] == str(int(OPENED_AT.timestamp() * 1000))
        assert first.custom_strings()["schoolId"] == "thcs-nguyen-du-cau-giay"
        assert first.extension["msg"].startswith("Bảo vệ thời gian thực")
        assert SYSLOG_LINE.fullmatch(received[0]).group(1) == b"163"  # type: ignore[union-attr]
        wait_until(lambda: forwarder.stats()["soc"].sent_total >= 3)
        with sessions() as session:
            states = session.scalars(select(OutboxEntry.state)).all()
        assert states == ["delivered"] * 3
        assert forwarder.stats()["soc"].last_success_at is not None
    finally:
        receiver.stop()


def test_tls_refuses_a_server_its_ca_did_not_sign(pki: Pki) -> None:
    receiver = make_receiver("tls", pki)
    try:
        destination = SyslogDestination(
            "127.0.0.1", receiver.port, transport="tls", ca_file=str(pki.other_ca_file)
        )
        item = OutboxItem(1, "soc", av_disabled(), 1, OPENED_AT)
        with pytest.raises(DestinationUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            destination.send([item])
        assert receiver.messages() == []
    finally:
        receiver.stop()


def test_tls_client_certificate_is_presented_when_configured(pki: Pki) -> None:
    context = pki.server_context()
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(pki.ca_file)
    receiver = SyslogReceiver("tls", context)
    receiver.start()
    try:
        without = SyslogDestination(
            "127.0.0.1", receiver.port, transport="tls", ca_file=str(pki.ca_file)
        )
        item = OutboxItem(1, "soc", av_disabled(), 1, OPENED_AT)
        # Under TLS 1.3 the refusal comes after the handshake; it must still be an error.
        with pytest.raises(DestinationUnavailable, match="client certificate"):
            without.send([item])
        # The server certificate doubles as a client certificate for this test's CA.
        with_cert = SyslogDestination(
            "127.0.0.1", receiver.port, transport="tls", ca_file=str(pki.ca_file),
            cert_file=str(pki.server_cert), key_file=str(pki.server_key),
        )  # fmt: skip
        with_cert.send([item])
        receiver.inbox.wait_for(lambda items: len(items) == 1)
        with_cert.close()
    finally:
        receiver.stop()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_receiver_outage_loses_nothing_and_the_backlog_follows(
    transport: str,
    pki: Pki,
    sessions: sessionmaker[Session],
    forwarders: list[Forwarder],
) -> None:
    receiver = make_receiver(transport, pki)
    destination = make_destination(transport, receiver.port, pki)
    forwarder = Forwarder(sessions, [ForwardingTarget("soc", destination, FAST_RETRY)])
    forwarders.append(forwarder)
    forwarder.start()
    batch = alerts(12)
    with sessions() as session, session.begin():
        Outbox.enqueue(session, batch[:2], ["soc"])
    forwarder.wake()
    receiver.inbox.wait_for(lambda items: len(items) == 2)

    def failed_at_least(count: int) -> Callable[[], bool]:
        return lambda: forwarder.stats()["soc"].failed_total >= count

    receiver.stop()  # the SIEM goes away with its connections
    for index in range(2, 12):
        failed_before = forwarder.stats()["soc"].failed_total
        with sessions() as session, session.begin():
            Outbox.enqueue(session, [batch[index]], ["soc"])
        forwarder.wake()
        # Alerts keep coming while nobody listens: each one waits for an attempt that fails
        # with it in the queue (a failed attempt counts every item it carried).
        wait_until(failed_at_least(failed_before + index - 1))
    assert forwarder.stats()["soc"].failed_total > 0
    assert forwarder.stats()["soc"].pending == 10
    assert len(receiver.messages()) == 2

    restarted = dataclasses.replace(receiver, inbox=receiver.inbox, _connections=[])
    restarted.start()
    try:
        received = restarted.inbox.wait_for(lambda items: len(items) >= 12, timeout_s=30)
        ids = sorted(int(cef_of(m).extension["externalId"]) for m in received)
        assert ids == list(range(100, 112))  # every alert, each once
        wait_until(lambda: forwarder.stats()["soc"].pending == 0)
        assert forwarder.stats()["soc"].dead_total == 0
    finally:
        restarted.stop()
