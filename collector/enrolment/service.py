"""Enrolment: tokens per school, per-device broker logins, revocation, clone refusal.

The flow mirrors Fleet's enroll secrets and Wazuh's ``authd`` passwords: IT staff create a
token for a school (expiring, usage-limited) and put it on the lab PCs or in the golden
image; each agent trades it once for its *own* MQTT user name and password, which the broker
ACL pins to ``cw/v1/{school}/{device}/…``. The token is a shared secret of the school, the
password is a secret of one machine, so revoking one PC never touches the others.

Clones: a device id already enrolled by a machine with different hardware is refused with
``clone``; the agent then takes a new id and enrols on its own (``agent.enrolment``).

No takeover: a token enrols only into its own school, and an id that already exists — an
enrolment, a login made with ``campuswatch broker add-device``, or a revoked device — is never
re-issued on the strength of a token and hardware hashes alone (MAC addresses are visible to
anyone on the LAN). Re-enrolment needs the device's current broker password (the agent sends
it) and its own school's token, or an administrator's approval naming the school
(``approve_reenrolment``); a revoked id stays refused until an administrator reinstates it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from prometheus_client.core import CounterMetricFamily, Metric
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.broker.credentials import (
    BrokerCredentials,
    CredentialsError,
    DeviceRevokedError,
    ReenrolmentApproval,
    ReenrolmentRefusedError,
)
from campuswatch.collector.db.models import Site
from campuswatch.collector.enrolment.models import Enrolment, EnrolmentToken
from campuswatch.wire.enrolment import (
    REFUSAL_REASONS,
    EnrolRequest,
    EnrolResponse,
    MachineFacts,
    RefusalReason,
)
from campuswatch.wire.ids import utc_now

log = logging.getLogger(__name__)

TOKEN_PREFIX: Final = "cwe_"
MAX_TOKEN_LIFETIME: Final = timedelta(days=90)
APPROVAL_LIFETIME: Final = timedelta(hours=72)
MAX_APPROVAL_LIFETIME: Final = timedelta(days=30)


class EnrolmentRefused(Exception):
    """An enrolment the collector will not grant; ``reason`` is the wire code."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: RefusalReason = reason
        self.detail = detail


class EnrolmentNotFound(LookupError):
    pass


def hash_enrolment_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_state(token: EnrolmentToken, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= now:
        return "expired"
    if token.uses >= token.max_uses:
        return "exhausted"
    return "active"


@dataclass(frozen=True, slots=True)
class NewToken:
    row: EnrolmentToken
    token: str
    """Shown once; only its hash is stored."""


class EnrolmentService:
    """Owns the enrolment tables and keeps the broker's accounts in step with them."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        broker_dir: Path | None,
        agent_broker_url: str | None,
    ) -> None:
        self.sessions = sessions
        self.broker_dir = broker_dir
        self.agent_broker_url = agent_broker_url
        self.outcomes: Counter[str] = Counter()
        self._outcomes_lock = threading.Lock()

    # --- tokens ------------------------------------------------------------------------

    def create_token(
        self,
        session: Session,
        *,
        site_id: str,
        lifetime: timedelta,
        max_uses: int,
        created_by: str,
        note: str = "",
    ) -> NewToken:
        self._broker()  # a token nobody can use is worse than a clear error now
        if session.get(Site, site_id) is None:
            raise EnrolmentNotFound(f"site {site_id!r} does not exist")
        if not timedelta(0) < lifetime <= MAX_TOKEN_LIFETIME:
            raise ValueError(
                f"lifetime must be between 1 second and {MAX_TOKEN_LIFETIME.days} days"
            )
        if max_uses < 1:
            raise ValueError("max_uses must be at least 1")
        plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utc_now()
        row = EnrolmentToken(
            token_hash=hash_enrolment_token(plain),
            site_id=site_id,
            note=note,
            created_by=created_by,
            created_at=now,
            expires_at=now + lifetime,
            max_uses=max_uses,
            uses=0,
        )
        session.add(row)
        session.flush()
        log.info("enrolment token %d created for site %s by %s", row.id, site_id, created_by)
        return NewToken(row, plain)

    def revoke_token(self, session: Session, token_id: int) -> EnrolmentToken:
        row = session.get(EnrolmentToken, token_id)
        if row is None:
            raise EnrolmentNotFound(f"enrolment token {token_id} does not exist")
        row.revoked_at = row.revoked_at or utc_now()
        return row

    # --- enrolment ---------------------------------------------------------------------

    def enrol(self, request: EnrolRequest) -> EnrolResponse:
        """Grant ``request`` its own broker login or raise ``EnrolmentRefused``."""
        try:
            response = self._enrol(request)
        except EnrolmentRefused as refusal:
            self._count(refusal.reason)
            log.warning(
                "enrolment of %s refused: %s (%s)",
                request.device_id,
                refusal.reason,
                refusal.detail,
            )
            raise
        self._count("enrolled")
        return response

    def _enrol(self, request: EnrolRequest) -> EnrolResponse:
        machine = MachineFacts.from_request(request)
        now = utc_now()
        with self.sessions() as session:
            token = session.scalar(
                select(EnrolmentToken).where(
                    EnrolmentToken.token_hash == hash_enrolment_token(request.token)
                )
            )
            if token is None:
                raise EnrolmentRefused("token_unknown", "the enrolment token is not known")
            state = token_state(token, now)
            if state != "active":
                raise EnrolmentRefused(
                    f"token_{state}",  # type: ignore[arg-type]
                    f"the enrolment token is {state}; ask IT staff for a new one",
                )
            credentials, broker_url = self._broker()
            enrolment = session.get(Enrolment, request.device_id)
            if (enrolment is not None and enrolment.revoked_at is not None) or (
                credentials.revocation(request.device_id) is not None
            ):
                raise EnrolmentRefused(
                    "device_revoked",
                    f"device {request.device_id} was revoked; an administrator must reinstate it",
                )
            if (
                enrolment is not None
                and enrolment.machine
                and not MachineFacts.from_json(enrolment.machine).is_same_machine(machine)
            ):
                enrolment.clone_attempts += 1
                session.commit()
                raise EnrolmentRefused(
                    "clone",
                    f"device id {request.device_id} is enrolled by another machine "
                    "(cloned disk image?); take a new id and enrol again",
                )
            # Claim one use atomically: two PCs racing for the last use cannot both win.
            claimed = session.execute(
                update(EnrolmentToken)
                .where(EnrolmentToken.id == token.id, EnrolmentToken.uses < EnrolmentToken.max_uses)
                .values(uses=EnrolmentToken.uses + 1, last_used_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                raise EnrolmentRefused("token_exhausted", "the enrolment token is used up")
            site_id = token.site_id
            known = enrolment is not None
            if enrolment is None:
                enrolment = Enrolment(
                    device_id=request.device_id,
                    site_id=site_id,
                    machine=machine.as_json(),
                    enrolled_at=now,
                    enrol_count=0,
                    clone_attempts=0,
                )
                session.add(enrolment)
            elif enrolment.site_id != site_id:
                log.info(
                    "device %s moves from site %s to %s by re-enrolment",
                    request.device_id,
                    enrolment.site_id,
                    site_id,
                )
            enrolment.site_id = site_id
            enrolment.machine = machine.as_json()
            enrolment.hostname = request.hostname
            enrolment.agent_version = request.agent_version
            enrolment.token_id = token.id
            enrolment.last_enrolled_at = now
            enrolment.enrol_count += 1
            session.flush()
            # The broker account last, just before commit: if it is refused or fails, nothing
            # is granted and the token use is rolled back with the rest. The store decides
            # "new, proven or approved" under its own lock.
            try:
                password = credentials.enrol_device(
                    site_id, request.device_id, proof=request.broker_password, enrolled=known
                )
            except DeviceRevokedError as exc:
                session.rollback()
                raise EnrolmentRefused("device_revoked", str(exc)) from None
            except ReenrolmentRefusedError as exc:
                session.rollback()
                raise EnrolmentRefused("already_enrolled", str(exc)) from None
            except CredentialsError as exc:
                session.rollback()
                raise EnrolmentRefused("invalid", str(exc)) from None
            session.commit()
        log.info("device %s enrolled at site %s", request.device_id, site_id)
        return EnrolResponse(
            device_id=request.device_id,
            site=site_id,
            username=request.device_id,
            password=password,
            broker_url=broker_url,
            ca_pem=self._ca_pem(),
        )

    def device_sites(self, session: Session, device_id: str) -> set[str] | None:
        """Every site ``device_id`` currently belongs to — its enrolment record, its broker
        login, its revocation — or None when neither the register nor the broker knows it.

        Scope checks use all of them: a login moved by hand must not slip out of a check."""
        sites: set[str] = set()
        known = False
        enrolment = session.get(Enrolment, device_id)
        if enrolment is not None:
            known = True
            sites.add(enrolment.site_id)
        if self.broker_dir is not None:
            store = BrokerCredentials(self.broker_dir)
            account = next((a for a in store.list() if a.username == device_id), None)
            revocation = store.revocation(device_id)
            for holder in (account, revocation):
                if holder is not None and holder.role != "collector":
                    known = True
                    sites.add(holder.site or "")
        return sites if known else None

    def revoke_device(self, session: Session, device_id: str, *, by: str, note: str) -> Enrolment:
        """Revoke the device's broker login (Mosquitto drops it at once) and keep the record."""
        enrolment = session.get(Enrolment, device_id)
        had_account, account_site = False, ""
        if self.broker_dir is not None:
            store = BrokerCredentials(self.broker_dir)
            account = next((a for a in store.list() if a.username == device_id), None)
            account_site = (account.site or "") if account else ""
            had_account = store.revoke_device(device_id)
        if enrolment is None:
            if not had_account:
                raise EnrolmentNotFound(f"device {device_id!r} has no enrolment and no login")
            # Enrolled by hand (``campuswatch broker add-device``): keep a record anyway.
            enrolment = Enrolment(
                device_id=device_id,
                site_id=account_site,
                machine={},
                enrol_count=0,
                clone_attempts=0,
            )
            session.add(enrolment)
        enrolment.revoked_at = utc_now()
        enrolment.revoked_by = by
        enrolment.revoke_note = note
        self._count("revoked")
        log.warning("device %s revoked by %s: %s", device_id, by, note or "(no note)")
        return enrolment

    def reinstate_device(self, session: Session, device_id: str, *, by: str) -> Enrolment:
        """Allow a revoked device to enrol again into its own site (it gets no login until
        it does): the revocation is lifted and one re-enrolment there is approved."""
        enrolment = session.get(Enrolment, device_id)
        revocation = None
        if self.broker_dir is not None:
            revocation = BrokerCredentials(self.broker_dir).revocation(device_id)
        if (enrolment is None or enrolment.revoked_at is None) and revocation is None:
            raise EnrolmentNotFound(f"device {device_id!r} is not revoked")
        if enrolment is None:
            # Revoked with ``campuswatch broker revoke-device``: keep a record from now on.
            enrolment = Enrolment(
                device_id=device_id,
                site_id=revocation.site if revocation and revocation.site else "",
                machine={},
                enrol_count=0,
                clone_attempts=0,
            )
            session.add(enrolment)
        enrolment.revoked_at = None
        enrolment.revoke_note = f"reinstated by {by}"
        enrolment.revoked_by = None
        if self.broker_dir is not None:
            store = BrokerCredentials(self.broker_dir)
            store.reinstate_device(device_id, by=by)
            if enrolment.site_id:
                store.approve_reenrolment(
                    device_id, enrolment.site_id, by=by, lifetime=APPROVAL_LIFETIME
                )
        return enrolment

    def approve_reenrolment(
        self, session: Session, device_id: str, *, site_id: str, by: str, lifetime: timedelta
    ) -> ReenrolmentApproval:
        """Let the next enrolment of ``device_id`` with a token of ``site_id`` replace its
        login, without proof: a PC re-imaged (login lost) or moved to another school."""
        credentials, _ = self._broker()
        if not timedelta(0) < lifetime <= MAX_APPROVAL_LIFETIME:
            raise ValueError(
                f"lifetime must be between 1 second and {MAX_APPROVAL_LIFETIME.days} days"
            )
        if session.get(Site, site_id) is None:
            raise ValueError(f"site {site_id!r} does not exist")
        enrolment = session.get(Enrolment, device_id)
        if (enrolment is not None and enrolment.revoked_at is not None) or (
            credentials.revocation(device_id) is not None
        ):
            raise ValueError(f"device {device_id!r} is revoked: reinstate it instead")
        return credentials.approve_reenrolment(device_id, site_id, by=by, lifetime=lifetime)

    def metrics(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "campuswatch_enrolment_requests",
            "Enrolment requests and revocations by outcome",
            labels=["outcome"],
        )
        with self._outcomes_lock:
            counts = dict(self.outcomes)
        for outcome in ("enrolled", "revoked", *REFUSAL_REASONS):
            family.add_metric([outcome], counts.get(outcome, 0))
        yield family

    # --- internals ---------------------------------------------------------------------

    def _broker(self) -> tuple[BrokerCredentials, str]:
        if self.broker_dir is None or not self.agent_broker_url:
            raise EnrolmentRefused(
                "not_configured",
                "enrolment is not configured on this collector (set CW_COLLECTOR_BROKER_DIR "
                "and CW_COLLECTOR_AGENT_BROKER_URL)",
            )
        return BrokerCredentials(self.broker_dir), self.agent_broker_url

    def _ca_pem(self) -> str | None:
        if self.broker_dir is None:
            return None
        try:
            return (self.broker_dir / "ca.pem").read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return None

    def _count(self, outcome: str) -> None:
        with self._outcomes_lock:
            self.outcomes[outcome] += 1
