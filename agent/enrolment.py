"""Enrolment on the agent side: trade the school's token for this PC's own broker login.

``campuswatch agent enroll --server URL --token T`` (or ``[enrolment]`` in the config file,
for disk images) calls the collector's ``POST /api/v1/enrol`` with the device id and hashed
hardware facts, and keeps the answer in ``enrolment.json`` (mode 0600) in the state dir;
``agent run`` then connects with it. The standard library's ``urllib`` does the HTTP: the
agent's memory budget has no room for an HTTP client library.

Clones: when the collector says the id is enrolled by another machine (``clone``), or when
the agent finds its own state dir came from another machine (``identity``), this machine
takes a new id and enrols on its own, with the token kept from the first enrolment.

Re-enrolling an id this machine already holds (``agent enroll`` again, a new token) sends its
current broker password as proof: the collector refuses to re-issue an existing id without
it (``already_enrolled``) unless an administrator approved the re-enrolment.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from campuswatch import __version__
from campuswatch.agent.identity import (
    HardwareFacts,
    Identity,
    read_hardware_facts,
    reidentify,
    resolve_identity,
)
from campuswatch.wire.enrolment import (
    ENROL_PATH,
    EnrolRequest,
    EnrolResponse,
    MachineFacts,
    decode_refusal,
    decode_response,
)

log = logging.getLogger(__name__)
ENROLMENT_FILE: Final = "enrolment.json"
BROKER_CA_FILE: Final = "broker-ca.pem"


class EnrolmentError(Exception):
    """Enrolment failed; ``reason`` is the collector's refusal code or ``unreachable``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class StoredEnrolment:
    device_id: str
    site: str
    username: str
    password: str
    broker_url: str
    ca_file: str | None
    server_url: str
    token: str | None
    """Kept so that a clone of this disk can enrol on its own while the token is valid."""
    enrolled_at: str


def load_enrolment(state_dir: Path) -> StoredEnrolment | None:
    path = state_dir / ENROLMENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StoredEnrolment(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.error("enrolment file %s is unusable (%s); enrol again", path, exc)
        return None


def _write_private(path: Path, text: str) -> None:
    """Write a secret: 0600 from the first byte, replaced in one rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def request_enrolment(
    server_url: str,
    request: EnrolRequest,
    *,
    ca_file: str | None = None,
    timeout_s: float = 30.0,
) -> EnrolResponse:
    """One ``POST /api/v1/enrol``; raises ``EnrolmentError`` with the collector's reason."""
    # Imported here: urllib.request pulls in http.client and email (~1 MB) that a running
    # agent, already enrolled, never needs.
    import ssl
    import urllib.error
    import urllib.request

    url = server_url.rstrip("/") + ENROL_PATH
    if not url.startswith(("https://", "http://")):
        raise EnrolmentError("invalid", f"server URL {server_url!r} must start with https://")
    http_request = urllib.request.Request(
        url,
        data=msgspec.json.encode(request),
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"campuswatch-agent/{__version__}",
        },
        method="POST",
    )
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(http_request, timeout=timeout_s, context=context) as reply:
            body = reply.read(1024 * 1024)
    except urllib.error.HTTPError as error:
        refusal = decode_refusal(error.read(64 * 1024))
        if refusal is not None:
            raise EnrolmentError(refusal.reason, refusal.detail) from None
        raise EnrolmentError("http", f"{url} answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, ssl.SSLError) as error:
        reason = getattr(error, "reason", error)
        raise EnrolmentError("unreachable", f"cannot reach {url}: {reason}") from None
    try:
        return decode_response(body)
    except ValueError as exc:
        raise EnrolmentError("http", str(exc)) from None


def _request_for(
    token: str, device_id: str, facts: HardwareFacts, *, proof: str | None = None
) -> EnrolRequest:
    machine = MachineFacts.from_plain(facts.product_uuid, facts.machine_id, facts.macs)
    return EnrolRequest(
        broker_password=proof,
        token=token,
        device_id=device_id,
        product_uuid_sha256=machine.product_uuid_sha256,
        machine_id_sha256=machine.machine_id_sha256,
        mac_sha256=sorted(machine.mac_sha256),
        hostname=socket.gethostname()[:255] or None,
        agent_version=__version__,
    )


def enrol(
    state_dir: Path,
    server_url: str,
    token: str,
    *,
    ca_file: str | None = None,
    configured_device_id: str | None = None,
    facts: HardwareFacts | None = None,
    keep_token: bool = True,
) -> tuple[StoredEnrolment, Identity]:
    """Enrol this machine (taking a new id once if the collector calls it a clone) and save;
    returns the enrolment and the identity it was granted for."""
    facts = facts if facts is not None else read_hardware_facts()
    identity = resolve_identity(state_dir, facts, configured_device_id=configured_device_id)
    stored = load_enrolment(state_dir)
    # This machine's own login for this id, if it has one: the proof of a re-enrolment.
    proof = (
        stored.password if stored is not None and stored.device_id == identity.device_id else None
    )
    try:
        granted = request_enrolment(
            server_url,
            _request_for(token, identity.device_id, facts, proof=proof),
            ca_file=ca_file,
        )
    except EnrolmentError as error:
        if error.reason != "clone":
            raise
        if configured_device_id:
            raise EnrolmentError(
                "clone",
                f"{error.detail}; the id {configured_device_id} is set in the configuration, "
                "so remove device_id there or choose another",
            ) from None
        identity = reidentify(state_dir, facts, identity.device_id, note=error.detail)
        log.warning("collector reports a clone: enrolling as new device %s", identity.device_id)
        granted = request_enrolment(
            server_url, _request_for(token, identity.device_id, facts), ca_file=ca_file
        )
    return _save(state_dir, granted, server_url, token if keep_token else None), identity


def _save(
    state_dir: Path, granted: EnrolResponse, server_url: str, token: str | None
) -> StoredEnrolment:
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_file: str | None = None
    if granted.ca_pem:
        ca_path = state_dir / BROKER_CA_FILE
        ca_path.write_text(granted.ca_pem, encoding="ascii")
        ca_file = str(ca_path)
    stored = StoredEnrolment(
        device_id=granted.device_id,
        site=granted.site,
        username=granted.username,
        password=granted.password,
        broker_url=granted.broker_url,
        ca_file=ca_file,
        server_url=server_url,
        token=token,
        enrolled_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_private(state_dir / ENROLMENT_FILE, json.dumps(asdict(stored), indent=2) + "\n")
    return stored


def enrolment_for(
    state_dir: Path,
    identity: Identity,
    *,
    server_url: str | None,
    token: str | None,
    ca_file: str | None,
    configured_device_id: str | None,
    facts: HardwareFacts | None = None,
) -> tuple[StoredEnrolment | None, Identity]:
    """The enrolment ``agent run`` should use: the stored one if it is this machine's,
    otherwise a fresh one when a server and token are known (config, or the stored file).

    Raises ``EnrolmentError`` when this machine must enrol but cannot.
    """
    stored = load_enrolment(state_dir)
    if stored is not None and stored.device_id == identity.device_id:
        return stored, identity
    if stored is not None:
        log.warning(
            "the stored enrolment is for device %s, this machine is %s (cloned disk?): "
            "enrolling on its own",
            stored.device_id,
            identity.device_id,
        )
    server = server_url or (stored.server_url if stored else None)
    secret = token or (stored.token if stored else None)
    if not server or not secret:
        if stored is None:
            return None, identity  # never enrolled: plain settings (no enrolment in use)
        raise EnrolmentError(
            "identity",
            f"this machine ({identity.device_id}) carries the enrolment of {stored.device_id} "
            "and must enrol on its own: campuswatch agent enroll --server URL --token TOKEN",
        )
    return enrol(
        state_dir,
        server,
        secret,
        ca_file=ca_file,
        configured_device_id=configured_device_id,
        facts=facts,
    )
