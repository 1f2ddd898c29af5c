"""Webhook destination against a real HTTP receiver that checks the signature itself."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from campuswatch.collector.forward.base import (
    DestinationRejected,
    DestinationUnavailable,
    OutboxItem,
)
from campuswatch.collector.forward.webhook import WebhookDestination, verify_signature
from tests.collector.forward.receivers import WebhookReceiver
from tests.collector.forward.samples import OPENED_AT, av_disabled
from tests.collector.forward.test_json_formats import assert_valid_detection_finding

SECRET = "k9V2-soc-hanoi-7f3a51c0e2"


def items(count: int) -> list[OutboxItem]:
    return [
        OutboxItem(i, "soc", av_disabled(alert_id=i, event_id=f"evt-{i}"), 1, OPENED_AT)
        for i in range(1, count + 1)
    ]


def expected_signature(timestamp: str, body: bytes) -> str:
    # Computed here from the documented rule, not with the product's helper.
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def test_ecs_batch_is_a_signed_json_array(webhook_receiver: WebhookReceiver) -> None:
    destination = WebhookDestination(
        webhook_receiver.url, hmac_secret=SECRET, headers={"Authorization": "Bearer abc123xyz"}
    )
    destination.send(items(2))
    (request,) = webhook_receiver.inbox.wait_for(lambda r: len(r) == 1)
    timestamp = request.headers["X-CampusWatch-Timestamp"]
    assert request.headers["X-CampusWatch-Signature"] == expected_signature(timestamp, request.body)
    assert request.headers["Authorization"] == "Bearer abc123xyz"
    assert request.headers["Content-Type"].startswith("application/json")
    documents = request.json()
    assert [d["event"]["id"] for d in documents] == ["evt-1", "evt-2"]
    assert documents[0]["event"]["kind"] == "alert"
    assert documents[0]["labels"]["school_id"] == "thcs-nguyen-du-cau-giay"
    assert documents[0]["message"].startswith("Bảo vệ")  # UTF-8, not \\u escapes
    assert "Bảo vệ".encode() in request.body
    destination.close()


def test_ocsf_as_ndjson(webhook_receiver: WebhookReceiver) -> None:
    destination = WebhookDestination(
        webhook_receiver.url, document_format="ocsf", body_framing="ndjson", hmac_secret=SECRET
    )
    destination.send(items(3))
    (request,) = webhook_receiver.inbox.wait_for(lambda r: len(r) == 1)
    assert request.headers["Content-Type"].startswith("application/x-ndjson")
    lines = request.body.decode().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert_valid_detection_finding(json.loads(line))
    destination.close()


def test_receiver_side_verification_refuses_tampering_and_replays() -> None:
    body = b'[{"a":1}]'
    signature = expected_signature("1700000000", body)
    secret = SECRET.encode()
    assert verify_signature(secret, "1700000000", body, signature, now=1700000100)
    assert not verify_signature(secret, "1700000000", body + b" ", signature, now=1700000100)
    assert not verify_signature(secret, "1700000000", body, signature, now=1700001000)
    assert not verify_signature(secret, "not-a-number", body, signature, now=1700000000)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, DestinationUnavailable),
        (503, DestinationUnavailable),
        (429, DestinationUnavailable),
        (401, DestinationUnavailable),  # rotated token: fix the config, keep the alerts
        (302, DestinationUnavailable),  # redirects are not followed with signed alerts
        (400, DestinationRejected),
        (422, DestinationRejected),
    ],
)
def test_status_codes_map_to_retry_or_reject(
    webhook_receiver: WebhookReceiver, status: int, error: type[Exception]
) -> None:
    webhook_receiver.statuses.append(status)
    destination = WebhookDestination(webhook_receiver.url)
    with pytest.raises(error, match=str(status)):
        destination.send(items(1))
    destination.close()


def test_unreachable_receiver_is_unavailable() -> None:
    destination = WebhookDestination("http://127.0.0.1:9/none", timeout_s=2)
    with pytest.raises(DestinationUnavailable):
        destination.send(items(1))
    destination.close()
