"""How simulated devices reach the broker: one connection each, or one gateway per school.

Both transports keep the same promises to the engine: ``on_birth(device)`` runs whenever a
device (re)appears so the engine can send its retained hello, state and inventory; a device
taken down ``abruptly`` makes the broker (or the gateway standing in for it) publish the
retained ``state offline`` with reason ``will``; a clean ``shutdown`` or ``restart`` says so
itself. ``MemoryTransport`` keeps the same promises without a broker, for tests and
``--dry-run``.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from campuswatch.firmware_sim.device import SimDevice
from campuswatch.wire.codec import encode_message
from campuswatch.wire.messages import HelloMessage, Message, StateMessage, kind_of
from campuswatch.wire.mqtt import LastWill, ReceivedMessage
from campuswatch.wire.mqtt_pool import MqttPool, PooledClient
from campuswatch.wire.topics import build_topic, subscription

log = logging.getLogger(__name__)
OfflineHow = Literal["abrupt", "shutdown", "restart"]
RETAINED_KINDS = frozenset({"hello", "state"})
GATEWAY_MAX_INFLIGHT = 1000


def offline_state(
    device: SimDevice, reason: Literal["will", "shutdown", "restart"]
) -> StateMessage:
    return StateMessage(
        device_id=device.device_id, site=device.site, status="offline", reason=reason
    )


def online_state(device: SimDevice) -> StateMessage:
    return StateMessage(
        device_id=device.device_id, site=device.site, status="online", reason="connected"
    )


class Transport(ABC):
    """Tracks which devices should be up and which school uplinks are cut."""

    def __init__(self) -> None:
        self.on_birth: Callable[[SimDevice], None] = lambda device: None
        self.on_command: Callable[[SimDevice, ReceivedMessage], None] = lambda d, m: None
        self.wanted: set[int] = set()
        self.uplink_down: set[str] = set()
        self.devices: dict[int, SimDevice] = {}

    def add(self, device: SimDevice) -> None:
        self.devices[device.index] = device

    def send(self, device: SimDevice, message: Message) -> bool:
        kind = kind_of(message)
        topic = device.topic(kind, build_topic)
        return self._publish(device, topic, encode_message(message), kind in RETAINED_KINDS)

    # --- implemented per transport -----------------------------------------------------

    @abstractmethod
    def is_online(self, device: SimDevice) -> bool:
        """Whether the device's connection is up."""

    @abstractmethod
    def bring_online(self, device: SimDevice) -> None:
        """Connect the device (birth messages follow from its connect)."""

    @abstractmethod
    def take_offline(self, device: SimDevice, how: OfflineHow) -> None:
        """Take the device away: cleanly (goodbye) or abruptly (the broker sends its will)."""

    @abstractmethod
    def set_uplink(self, site: str, up: bool) -> None:
        """Cut or restore a whole school's connection to the broker."""

    @abstractmethod
    def _publish(self, device: SimDevice, topic: str, payload: bytes, retain: bool) -> bool:
        """Publish one encoded message; False if it could not be queued."""

    def close(self) -> None:
        """Close whatever connections are not per device (gateways)."""
        return None  # per-device transports close nothing here


@dataclass(slots=True)
class Published:
    topic: str
    payload: bytes
    retain: bool
    by_broker: bool = False
    """True for a Last Will the broker itself published."""


class MemoryTransport(Transport):
    """Everything a broker would have received, in order, without a broker."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Published] = []

    def is_online(self, device: SimDevice) -> bool:
        return device.index in self.wanted and device.site not in self.uplink_down

    def bring_online(self, device: SimDevice) -> None:
        was = self.is_online(device)
        self.wanted.add(device.index)
        if not was and self.is_online(device):
            self.on_birth(device)

    def take_offline(self, device: SimDevice, how: OfflineHow) -> None:
        if not self.is_online(device):
            self.wanted.discard(device.index)
            return
        self._goodbye(device, how)
        self.wanted.discard(device.index)

    def set_uplink(self, site: str, up: bool) -> None:
        members = [d for d in self.devices.values() if d.site == site and d.index in self.wanted]
        if not up and site not in self.uplink_down:
            for device in members:
                self._goodbye(device, "abrupt")
            self.uplink_down.add(site)
        elif up and site in self.uplink_down:
            self.uplink_down.discard(site)
            for device in members:
                self.on_birth(device)

    def _goodbye(self, device: SimDevice, how: OfflineHow) -> None:
        reason: Literal["will", "shutdown", "restart"] = "will" if how == "abrupt" else how
        message = offline_state(device, reason)
        self.published.append(
            Published(
                device.topic("state", build_topic), encode_message(message), True, how == "abrupt"
            )
        )

    def _publish(self, device: SimDevice, topic: str, payload: bytes, retain: bool) -> bool:
        if not self.is_online(device):
            return False
        self.published.append(Published(topic, payload, retain))
        return True


class PerDeviceTransport(Transport):
    """One MQTT connection per device, each with its own Last Will, all in one pool."""

    def __init__(self, pool: MqttPool) -> None:
        super().__init__()
        self.pool = pool
        self.clients: dict[int, PooledClient] = {}

    def add(self, device: SimDevice) -> None:
        super().add(device)

        def will() -> LastWill:  # a fresh message id for every connection
            return LastWill(
                device.topic("state", build_topic), encode_message(offline_state(device, "will"))
            )

        client = self.pool.add(
            f"cw-sim-{device.index}-{device.device_id}",
            will=will,
            on_connect=functools.partial(self._connected, device),
            on_message=functools.partial(self._received, device),
            connect=False,
        )
        client.subscribe(device.topic("cmd", build_topic), qos=1)
        self.clients[device.index] = client

    def _connected(self, device: SimDevice, client: PooledClient) -> None:
        self.on_birth(device)

    def _received(self, device: SimDevice, client: PooledClient, received: ReceivedMessage) -> None:
        self.on_command(device, received)

    def is_online(self, device: SimDevice) -> bool:
        return self.clients[device.index].connected

    def bring_online(self, device: SimDevice) -> None:
        self.wanted.add(device.index)
        if device.site not in self.uplink_down:
            self.clients[device.index].resume()

    def take_offline(self, device: SimDevice, how: OfflineHow) -> None:
        self.wanted.discard(device.index)
        client = self.clients[device.index]
        if how == "abrupt":
            client.drop()
        else:
            goodbye = offline_state(device, how)
            client.close(final=(device.topic("state", build_topic), encode_message(goodbye)))

    def set_uplink(self, site: str, up: bool) -> None:
        if up:
            self.uplink_down.discard(site)
        else:
            self.uplink_down.add(site)
        for index in sorted(self.wanted):
            device = self.devices[index]
            if device.site != site:
                continue
            if up:
                self.clients[index].resume()
            else:
                # The school's link is cut: TCP dies without DISCONNECT, the broker fires wills.
                self.clients[index].drop()

    def _publish(self, device: SimDevice, topic: str, payload: bytes, retain: bool) -> bool:
        return self.clients[device.index].publish(topic, payload, qos=1, retain=retain)


class GatewayTransport(Transport):
    """One connection per school; the gateway publishes under each device's own topics.

    MQTT allows one Last Will per connection, so the broker can only announce the gateway's
    own death. When a device behind it goes down the gateway publishes that device's
    ``state offline`` (reason ``will``) itself; when the school's uplink is cut it sends its
    devices' offline states as a dying gasp before the link goes, so the collector sees the
    same per-device availability as in per-device mode.
    """

    def __init__(self, pool: MqttPool, software_version: str) -> None:
        super().__init__()
        self.pool = pool
        self.software_version = software_version
        self.gateways: dict[str, PooledClient] = {}
        self._by_site_and_id: dict[tuple[str, str], SimDevice] = {}

    @staticmethod
    def gateway_id(site: str) -> str:
        return f"gw-{site}"[:64]

    def add(self, device: SimDevice) -> None:
        super().add(device)
        self._by_site_and_id[(device.site, device.device_id)] = device
        if device.site in self.gateways:
            return
        site = device.site
        gateway_id = self.gateway_id(site)

        def will() -> LastWill:  # a fresh message id for every connection
            offline = StateMessage(device_id=gateway_id, site=site, status="offline", reason="will")
            return LastWill(build_topic(site, gateway_id, "state"), encode_message(offline))

        client = self.pool.add(
            f"cw-sim-gateway-{site}",
            will=will,
            on_connect=functools.partial(self._gateway_up, site),
            on_message=functools.partial(self._command, site),
            # A gateway carries a whole school: a device's window of 20 would throttle it.
            max_inflight=GATEWAY_MAX_INFLIGHT,
        )
        client.subscribe(subscription(site=site, kind="cmd"), qos=1)
        self.gateways[site] = client

    def close(self) -> None:
        for site, gateway in self.gateways.items():
            gateway_id = self.gateway_id(site)
            goodbye = StateMessage(
                device_id=gateway_id, site=site, status="offline", reason="shutdown"
            )
            gateway.close(final=(build_topic(site, gateway_id, "state"), encode_message(goodbye)))

    def _gateway_up(self, site: str, client: PooledClient) -> None:
        gateway_id = self.gateway_id(site)
        hello = HelloMessage(
            device_id=gateway_id,
            site=site,
            device_type="other",
            software="campuswatch-sim-gateway",
            software_version=self.software_version,
            capabilities=["gateway"],
        )
        online = StateMessage(device_id=gateway_id, site=site, status="online", reason="connected")
        client.publish(build_topic(site, gateway_id, "hello"), encode_message(hello), retain=True)
        client.publish(build_topic(site, gateway_id, "state"), encode_message(online), retain=True)
        for index in sorted(self.wanted):
            device = self.devices[index]
            if device.site == site:
                self.on_birth(device)

    def _command(self, site: str, client: PooledClient, received: ReceivedMessage) -> None:
        device_id = received.topic.split("/")[3] if received.topic.count("/") == 4 else ""
        device = self._by_site_and_id.get((site, device_id))
        if device is not None and device.index in self.wanted:
            self.on_command(device, received)

    def is_online(self, device: SimDevice) -> bool:
        return device.index in self.wanted and self.gateways[device.site].connected

    def bring_online(self, device: SimDevice) -> None:
        was = self.is_online(device)
        self.wanted.add(device.index)
        if not was and self.is_online(device):
            self.on_birth(device)

    def take_offline(self, device: SimDevice, how: OfflineHow) -> None:
        if self.is_online(device):
            reason: Literal["will", "shutdown", "restart"] = "will" if how == "abrupt" else how
            self._publish(
                device,
                device.topic("state", build_topic),
                encode_message(offline_state(device, reason)),
                True,
            )
        self.wanted.discard(device.index)

    def set_uplink(self, site: str, up: bool) -> None:
        gateway = self.gateways[site]
        if up:
            self.uplink_down.discard(site)
            gateway.resume()
            return
        self.uplink_down.add(site)
        for index in sorted(self.wanted):
            device = self.devices[index]
            if device.site == site and gateway.connected:
                payload = encode_message(offline_state(device, "will"))
                gateway.publish(device.topic("state", build_topic), payload, retain=True)
        gateway.drop()

    def _publish(self, device: SimDevice, topic: str, payload: bytes, retain: bool) -> bool:
        if device.index not in self.wanted:
            return False
        return self.gateways[device.site].publish(topic, payload, qos=1, retain=retain)
