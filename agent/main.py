"""Assembling an agent from settings: identity, probes, runner."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from campuswatch.agent.identity import Identity, read_hardware_facts, resolve_identity
from campuswatch.agent.probes import Probe, ProbeContext
from campuswatch.agent.runner import AgentRunner
from campuswatch.agent.settings import AgentSettings
from campuswatch.wire.messages import (
    AvMessage,
    EventMessage,
    HealthMessage,
    InventoryMessage,
    Message,
    NetMessage,
    kind_of,
)

log = logging.getLogger(__name__)
UNASSIGNED_SITE = "unassigned"


def default_probes() -> list[Probe]:
    from campuswatch.agent.probes.av import AvProbe
    from campuswatch.agent.probes.health import HealthProbe
    from campuswatch.agent.probes.inventory import InventoryProbe
    from campuswatch.agent.probes.net import NetProbe

    return [InventoryProbe(), AvProbe(), NetProbe(), HealthProbe()]


def _site(settings: AgentSettings) -> str:
    if settings.site:
        return settings.site
    log.warning("no site configured; reporting under %r until one is set", UNASSIGNED_SITE)
    return UNASSIGNED_SITE


def _identity(settings: AgentSettings) -> Identity:
    return resolve_identity(
        settings.resolved_state_dir(),
        read_hardware_facts(),
        configured_device_id=settings.device_id,
    )


def apply_enrolment(
    settings: AgentSettings, identity: Identity
) -> tuple[AgentSettings, str, Identity]:
    """Settings, site and identity with this machine's enrolled broker login, if it has one.

    A login configured by hand (``mqtt.username``) wins: enrolment is then not used.
    Raises ``EnrolmentError`` when the machine must enrol and cannot.
    """
    if settings.mqtt.username:
        return settings, _site(settings), identity
    state_dir = settings.resolved_state_dir()
    never_enrolled = not (state_dir / "enrolment.json").exists()  # enrolment.ENROLMENT_FILE
    if never_enrolled and not (settings.enrolment.server and settings.enrolment.token):
        # Most lab PCs: a plain broker login. The enrolment code (HTTP, hashing, the wire's
        # enrolment schema) is then never imported.
        return settings, _site(settings), identity
    from campuswatch.agent.enrolment import enrolment_for

    enrolment, identity = enrolment_for(
        settings.resolved_state_dir(),
        identity,
        server_url=settings.enrolment.server,
        token=settings.enrolment.token,
        ca_file=settings.enrolment.ca_file,
        configured_device_id=settings.device_id,
    )
    if enrolment is None:
        return settings, _site(settings), identity
    if settings.site and settings.site != enrolment.site:
        log.warning(
            "site %r in the settings differs from the enrolled site %r; the broker only "
            "accepts the enrolled one, so it is used",
            settings.site,
            enrolment.site,
        )
    mqtt = msgspec.structs.replace(
        settings.mqtt,
        broker=enrolment.broker_url,
        username=enrolment.username,
        password=enrolment.password,
        ca_file=settings.mqtt.ca_file or enrolment.ca_file,
    )
    return msgspec.structs.replace(settings, mqtt=mqtt), enrolment.site, identity


def build_runner(settings: AgentSettings, probes: Sequence[Probe] | None = None) -> AgentRunner:
    # Enrolling may give this machine a new id (the collector found a clone).
    settings, site, identity = apply_enrolment(settings, _identity(settings))
    return AgentRunner(
        settings,
        identity,
        site,
        list(probes) if probes is not None else default_probes(),
        state_dir=settings.resolved_state_dir(),
        device_type="server" if _looks_like_server() else "pc",
    )


def collect_once(settings: AgentSettings) -> list[Message]:
    identity = _identity(settings)
    context = ProbeContext(device_id=identity.device_id, site=_site(settings), settings=settings)
    return [probe.collect(context) for probe in default_probes()]


def broker_status(settings: AgentSettings, device_id: str, timeout_s: float = 5.0) -> str:
    """One line for ``agent once``: can this PC reach its broker and log in, right now?

    Uses the login ``agent run`` would use (settings, else the stored enrolment) under a
    client id of its own, so a running agent on this PC is not knocked off the broker.
    """
    from campuswatch.agent.enrolment import load_enrolment
    from campuswatch.wire.mqtt import BrokerUrlError, MqttConnection, TlsOptions, parse_broker_url

    mqtt = settings.mqtt
    if not mqtt.username:
        stored = load_enrolment(settings.resolved_state_dir())
        if stored is not None and stored.device_id == device_id:
            mqtt = msgspec.structs.replace(
                mqtt,
                broker=stored.broker_url,
                username=stored.username,
                password=stored.password,
                ca_file=mqtt.ca_file or stored.ca_file,
            )
    try:
        broker = parse_broker_url(mqtt.broker)
    except BrokerUrlError as exc:
        return f"broker: {exc}"
    connection = MqttConnection(
        f"cw-agent-{device_id}-check",
        broker,
        username=mqtt.username,
        password=mqtt.password,
        tls=TlsOptions(mqtt.ca_file, mqtt.cert_file, mqtt.key_file, mqtt.tls_insecure),
        keepalive_s=mqtt.keepalive_s,
        reconnect_min_s=timeout_s,
        reconnect_max_s=timeout_s,
    )
    connection.start()
    deadline = time.monotonic() + timeout_s
    while (
        not connection.connected and connection.last_error is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    connected, reason = connection.connected, connection.last_error
    connection.stop()
    if connected:
        return f"broker: {broker} reachable, login accepted"
    return f"broker: {broker} {reason or f'did not answer within {timeout_s:g} s'}"


def _looks_like_server() -> bool:
    if sys.platform == "win32":
        import platform

        return "server" in platform.release().lower() or "server" in platform.version().lower()
    return False


def summarise(messages: Iterable[Message]) -> list[str]:
    """A short human reading of what the agent would send."""
    lines: list[str] = []
    for message in messages:
        problems = ", ".join(f"{e.probe}: {e.reason} ({e.detail})" for e in _errors(message))
        suffix = f"  [problems: {problems}]" if problems else ""
        if isinstance(message, AvMessage):
            names = ", ".join(p.name for p in message.products) or "none"
            lines.append(f"antivirus: {message.status} (products: {names}){suffix}")
        elif isinstance(message, NetMessage):
            lines.append(
                f"network: internet {'ok' if message.internet_ok else 'NOT ok'}, "
                f"latency {message.latency_ms} ms, loss {message.loss_pct} %{suffix}"
            )
        elif isinstance(message, HealthMessage):
            lines.append(
                f"health: cpu {message.cpu_pct} %, memory {message.memory_pct} %, "
                f"agent RSS {(message.agent_rss_bytes or 0) // 1_000_000} MB{suffix}"
            )
        elif isinstance(message, InventoryMessage):
            os_name = message.os.name if message.os else "?"
            lines.append(
                f"inventory: {message.hostname} {os_name}, "
                f"{len(message.software or [])} packages, {len(message.interfaces)} NICs{suffix}"
            )
        elif isinstance(message, EventMessage):
            lines.append(f"event {message.event_type}: {message.message}")
        else:
            lines.append(f"{kind_of(message)} message")
    return lines


def _errors(message: Message) -> list[Any]:
    return list(getattr(message, "errors", []) or [])
