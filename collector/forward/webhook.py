"""HTTPS JSON delivery (ECS or OCSF documents) with an HMAC signature over the exact body.

Signature: ``X-CampusWatch-Signature: sha256=<hex HMAC-SHA256(secret, TIMESTAMP + "." + BODY)>``
with ``X-CampusWatch-Timestamp: TIMESTAMP`` (Unix seconds). Signing the timestamp with the
body lets a receiver refuse replays older than a few minutes; signing the raw bytes (not a
re-serialised object) means the receiver verifies exactly what arrived.

Body: a JSON array of documents (``application/json``, default) or one document per line
(``application/x-ndjson``, what Elasticsearch/Logstash-style bulk receivers like).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import httpx

from campuswatch.collector.forward import PRODUCT, PRODUCT_VERSION, VENDOR
from campuswatch.collector.forward.base import (
    DestinationRejected,
    DestinationUnavailable,
    OutboxItem,
)
from campuswatch.collector.forward.json_formats import render_ecs, render_ocsf

DocumentFormat = Literal["ecs", "ocsf"]
BodyFraming = Literal["json_array", "ndjson"]

SIGNATURE_HEADER: Final = "X-CampusWatch-Signature"
TIMESTAMP_HEADER: Final = "X-CampusWatch-Timestamp"
# The content is at fault only for these; everything else (401/403 from a rotated token,
# 404 from a moved endpoint, 429, 5xx) is fixed on the receiving side, so alerts wait.
REJECTING_STATUSES: Final = frozenset({400, 413, 415, 422})


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    max_age_s: float = 300.0,
) -> bool:
    """What a receiver does: constant-time compare, and refuse stale or future timestamps."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookDestination:
    def __init__(
        self,
        url: str,
        *,
        document_format: DocumentFormat = "ecs",
        body_framing: BodyFraming = "json_array",
        hmac_secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        verify_tls: bool = True,
        ca_file: str | None = None,
        vendor: str = VENDOR,
        product: str = PRODUCT,
        product_version: str = PRODUCT_VERSION,
        language: str = "en",
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.document_format: DocumentFormat = document_format
        self.body_framing: BodyFraming = body_framing
        self.language = language
        self._secret = hmac_secret.encode("utf-8") if hmac_secret else None
        self._product = (vendor, product, product_version)
        self._clock = clock
        verify: bool | str = (ca_file or True) if verify_tls else False
        self._client = httpx.Client(
            headers={"User-Agent": f"{product}/{product_version}", **(headers or {})},
            timeout=timeout_s,
            verify=verify,
            # A redirect could send signed alerts somewhere unintended; treat it as an error.
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"WebhookDestination({self.url})"

    def render_body(self, batch: Sequence[OutboxItem]) -> tuple[bytes, str]:
        vendor, product, version = self._product
        render = render_ecs if self.document_format == "ecs" else render_ocsf
        documents: list[dict[str, Any]] = [
            render(
                item.notification,
                vendor=vendor,
                product=product,
                version=version,
                language=self.language,
            )
            for item in batch
        ]
        if self.body_framing == "ndjson":
            lines = (json.dumps(d, ensure_ascii=False, separators=(",", ":")) for d in documents)
            return ("\n".join(lines) + "\n").encode("utf-8"), "application/x-ndjson"
        body = json.dumps(documents, ensure_ascii=False, separators=(",", ":"))
        return body.encode("utf-8"), "application/json"

    def send(self, batch: Sequence[OutboxItem]) -> None:
        if not batch:
            return
        body, content_type = self.render_body(batch)
        headers = {"Content-Type": f"{content_type}; charset=utf-8"}
        if self._secret is not None:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DestinationUnavailable(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return
        detail = f"{self.url}: HTTP {response.status_code} {response.text[:200]!r}"
        if response.status_code in REJECTING_STATUSES:
            raise DestinationRejected(detail)
        raise DestinationUnavailable(detail)

    def close(self) -> None:
        self._client.close()
