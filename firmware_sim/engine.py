"""The simulation engine: schedules every device's reports on the simulated clock, applies
the scenario's timeline, obeys commands, and hands messages to a transport.

Everything runs on one thread (the MQTT pool's, or the test's), so devices need no locks.
Reports are due at fixed simulated times (start + phase + k × interval), never at "whenever
the loop got round to it", which is what makes a seeded run repeat itself exactly.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from campuswatch.firmware_sim.device import Happening, Moment, SimDevice, stable_fraction
from campuswatch.firmware_sim.fleet import Fleet
from campuswatch.firmware_sim.labpc import LabPc
from campuswatch.firmware_sim.scenario import Scenario, Step
from campuswatch.firmware_sim.schoolday import SimClock
from campuswatch.firmware_sim.transport import Transport, online_state
from campuswatch.wire.codec import WireRejection, decode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import CommandMessage, DiscoveredHost, Message, kind_of
from campuswatch.wire.mqtt import ReceivedMessage

log = logging.getLogger(__name__)
REBOOT_S: Final = 20.0
"""Simulated seconds a device stays away during a reboot or firmware update."""


@dataclass(slots=True)
class SimStats:
    sent_total: int = 0
    refused_total: int = 0
    sent_by_kind: Counter[str] = field(default_factory=Counter)
    steps_done: int = 0
    commands_total: int = 0
    bad_commands_total: int = 0


class Simulator:
    def __init__(
        self,
        fleet: Fleet,
        transport: Transport,
        clock: SimClock,
        *,
        seed: int,
        interval_s: float = 60.0,
        scenario: Scenario | None = None,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the report interval must be positive")
        self.fleet = fleet
        self.transport = transport
        self.clock = clock
        self.seed = seed
        self.interval_s = interval_s
        self.scenario = scenario
        self.wall_clock = wall_clock
        self.stats = SimStats()
        self.powered: set[int] = set()
        self.stolen: set[int] = set()
        self.rebooting: set[int] = set()
        self._by_index: dict[int, SimDevice] = {}
        self._last_report: dict[int, float] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._now_s = 0.0
        self._next_index = (
            max(
                [d.index for d in fleet.devices] + [s.index for s in fleet.scanners.values()],
                default=0,
            )
            + 1
        )
        transport.on_birth = self._birth
        transport.on_command = self._command

    # --- setup -------------------------------------------------------------------------

    @property
    def devices(self) -> list[SimDevice]:
        return [*self.fleet.devices, *self.fleet.scanners.values()]

    def start(self) -> None:
        # Grouped once: asking the fleet per school is a pass over every device per school,
        # 33 million steps for a district of 100,000 devices in 333 schools.
        by_site: dict[str, list[SimDevice]] = {}
        for device in self.fleet.devices:
            by_site.setdefault(device.site, []).append(device)
        for site, scanner in self.fleet.scanners.items():
            scanner.see(by_site.get(site, []))
        for device in self.devices:
            self._add(device)
        if self.scenario is not None:
            for number, step in enumerate(self.scenario.steps):
                self._at(step.at_s, functools.partial(self._apply, step, number))

    def _add(self, device: SimDevice) -> None:
        self._by_index[device.index] = device
        self.transport.add(device)
        self.powered.add(device.index)
        self.transport.bring_online(device)
        # Spread first reports over one interval, fixed per device, so a fleet of 10,000 does
        # not report in one burst and reruns report in the same order.
        phase = stable_fraction(self.seed, device.index, "phase") * self.interval_s
        self._at(self._now_s + phase, functools.partial(self._scheduled_report, device))

    def _at(self, due_s: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (due_s, next(self._sequence), action))

    # --- running -----------------------------------------------------------------------

    def step(self) -> float:
        """Run everything due by now; return real seconds until the next thing is due."""
        now_s = self.clock.elapsed_s()
        while self._queue and self._queue[0][0] <= now_s:
            due_s, _, action = heapq.heappop(self._queue)
            self._now_s = max(self._now_s, due_s)
            action()
        self._now_s = max(self._now_s, now_s)
        if not self._queue:
            return 1.0
        return self.clock.real_seconds_until(self._queue[0][0])

    def shutdown(self) -> None:
        """Every device leaves cleanly, as at the end of a school day's power-down."""
        for device in self.devices:
            if self.transport.is_online(device):
                self.transport.take_offline(device, "shutdown")
        self.transport.close()

    def run_for(self, sim_seconds: float, *, step_s: float = 1.0) -> None:
        """Drive a manual clock forward (tests): no sleeping, simulated time only."""
        end = self.clock.elapsed_s() + sim_seconds
        while self.clock.elapsed_s() < end:
            self.clock.advance(min(step_s, end - self.clock.elapsed_s()))
            self.step()

    def moment(self, device: SimDevice | None = None) -> Moment:
        sim = self.clock.start + timedelta(seconds=self._now_s)
        elapsed = 0.0
        if device is not None and device.index in self._last_report:
            elapsed = self._now_s - self._last_report[device.index]
        return Moment(sim=sim, wall=self.wall_clock(), elapsed_s=elapsed)

    def _send(self, device: SimDevice, message: Message) -> None:
        if self.transport.send(device, message):
            self.stats.sent_total += 1
            self.stats.sent_by_kind[kind_of(message)] += 1
        else:
            self.stats.refused_total += 1

    def _scheduled_report(self, device: SimDevice) -> None:
        self._report(device)
        if device.index not in self.stolen:
            self._at(
                self._now_s + self.interval_s, functools.partial(self._scheduled_report, device)
            )

    def _report(self, device: SimDevice) -> None:
        if not self.transport.is_online(device):
            return
        moment = self.moment(device)
        self._last_report[device.index] = self._now_s
        for message in device.report(moment):
            self._send(device, message)

    def _birth(self, device: SimDevice) -> None:
        """Retained hello and state, then inventory: what the agent sends on every connect."""
        moment = self.moment()
        self._send(device, device.hello(moment, self.interval_s))
        state = online_state(device)
        state.ts = moment.wall
        self._send(device, state)
        self._send(device, device.inventory(moment))

    # --- commands ----------------------------------------------------------------------

    def _command(self, device: SimDevice, received: ReceivedMessage) -> None:
        try:
            decoded = decode_message(received.topic, received.payload)
        except WireRejection as exc:
            self.stats.bad_commands_total += 1
            log.warning("ignoring malformed command for %s: %s", device.device_id, exc)
            return
        command = decoded.message
        if not isinstance(command, CommandMessage):
            return
        self.stats.commands_total += 1
        moment = self.moment(device)
        if command.command == "identify":
            self._send(
                device,
                device.event(
                    moment,
                    Happening(
                        "identify",
                        "info",
                        "identifying: LED blinking for 30 s",
                        {"by": command.issued_by or "unknown"},
                    ),
                ),
            )
        elif command.command == "reboot":
            self._restart(device)
        elif command.command == "refresh_inventory":
            self._send(device, device.inventory(moment))
        elif command.command in ("run_probes", "rescan"):
            self._report(device)
        else:
            self._send(
                device,
                device.event(
                    moment,
                    Happening(
                        "command_rejected",
                        "low",
                        f"{command.command} is not supported by this device",
                        {"command": command.command},
                    ),
                ),
            )

    def _restart(self, device: SimDevice) -> None:
        if device.index in self.rebooting or not self.transport.is_online(device):
            return
        self.rebooting.add(device.index)
        self.transport.take_offline(device, "restart")
        self._at(self._now_s + REBOOT_S, functools.partial(self._back_from_restart, device))

    def _back_from_restart(self, device: SimDevice) -> None:
        self.rebooting.discard(device.index)
        self._sync(device)

    def _sync(self, device: SimDevice) -> None:
        """Bring a device up if nothing keeps it down."""
        up = (
            device.index in self.powered
            and device.index not in self.stolen
            and device.index not in self.rebooting
        )
        if up:
            self.transport.bring_online(device)

    # --- scenario ----------------------------------------------------------------------

    def _apply(self, step: Step, number: int) -> None:
        rng = random.Random(f"campuswatch-sim-step:{self.seed}:{number}")
        chosen = step.select.choose(self._candidates(step), rng)
        log.info(
            "scenario step %d (%s) at %.0f s: %d device(s)",
            number,
            step.action,
            step.at_s,
            len(chosen),
        )
        self.stats.steps_done += 1
        handler = getattr(self, f"_do_{step.action}")
        undo = handler(step, chosen, rng)
        if step.for_s is not None and undo is not None:
            self._at(self._now_s + step.for_s, undo)

    def _candidates(self, step: Step) -> list[SimDevice]:
        devices = [d for d in self.fleet.devices if d.index not in self.stolen]
        if step.action in (
            "malware_detected",
            "av_signatures_stale",
            "av_realtime_off",
            "cloned_pcs",
        ):
            return [d for d in devices if isinstance(d, LabPc)]
        return devices

    def _do_power_cut(
        self, step: Step, chosen: list[SimDevice], rng: random.Random
    ) -> Callable[[], None]:
        for device in chosen:
            self.powered.discard(device.index)
            self.transport.take_offline(device, "abrupt")

        def restore() -> None:
            for device in chosen:
                self.powered.add(device.index)
                self._sync(device)

        return restore

    def _sites(self, chosen: list[SimDevice]) -> list[str]:
        return sorted({device.site for device in chosen})

    def _do_uplink_down(
        self, step: Step, chosen: list[SimDevice], rng: random.Random
    ) -> Callable[[], None]:
        sites = self._sites(chosen)
        for site in sites:
            self.transport.set_uplink(site, False)

        def restore() -> None:
            for site in sites:
                self.transport.set_uplink(site, True)

        return restore

    def _do_uplink_up(self, step: Step, chosen: list[SimDevice], rng: random.Random) -> None:
        for site in self._sites(chosen):
            self.transport.set_uplink(site, True)

    def _do_firmware_rollout(self, step: Step, chosen: list[SimDevice], rng: random.Random) -> None:
        version = str(step.parameters["to_version"])
        spread = float(step.parameters.get("spread", 0.0))
        for position, device in enumerate(chosen):
            delay = spread * position / max(1, len(chosen))
            self._at(self._now_s + delay, functools.partial(self._update_firmware, device, version))

    def _update_firmware(self, device: SimDevice, version: str) -> None:
        if device.firmware_version == version or device.index in self.stolen:
            return
        previous, device.firmware_version = device.firmware_version, version
        device.pending_happenings.append(
            Happening(
                "firmware_updated",
                "info",
                f"firmware {previous} -> {version}",
                {"from": previous, "to": version},
            )
        )
        self._restart(device)

    def _do_device_stolen(self, step: Step, chosen: list[SimDevice], rng: random.Random) -> None:
        # Unplugged and carried away: the connection dies without DISCONNECT, so the broker
        # fires the Last Will, and the device never returns. The scanner stops seeing it.
        for device in chosen:
            self.stolen.add(device.index)
            self.transport.take_offline(device, "abrupt")
        for site, scanner in self.fleet.scanners.items():
            scanner.see([d for d in self.fleet.in_school(site) if d.index not in self.stolen])

    def _do_rogue_device(self, step: Step, chosen: list[SimDevice], rng: random.Random) -> None:
        for site in self._sites(chosen):
            scanner = self.fleet.scanners[site]
            # A locally administered MAC (02:…) is what a phone hotspot or a cheap dongle shows.
            mac = str(
                step.parameters.get("mac")
                or "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))
            )
            ip = str(
                step.parameters.get("ip") or f"10.{scanner.school % 250}.99.{rng.randrange(2, 250)}"
            )
            scanner.add_rogue(
                DiscoveredHost(
                    ip=ip,
                    mac=mac,
                    vendor=str(step.parameters["vendor"]) if "vendor" in step.parameters else None,
                    hostname=str(step.parameters["hostname"])
                    if "hostname" in step.parameters
                    else None,
                    open_ports=[22, 80],
                )
            )
            self._report(scanner)

    def _do_cloned_pcs(self, step: Step, chosen: list[SimDevice], rng: random.Random) -> None:
        for device in chosen:
            assert isinstance(device, LabPc)
            twin = device.clone(self._next_index, self.seed)
            self._next_index += 1
            self.fleet.devices.append(twin)
            self._add(twin)

    def _do_malware_detected(self, step: Step, chosen: list[SimDevice], rng: random.Random) -> None:
        threat = str(step.parameters.get("threat", "Trojan:Win32/Wacatac.B!ml"))
        count = int(step.parameters.get("threats", 1))
        for device in chosen:
            assert isinstance(device, LabPc)
            device.infect(threat, count)
            self._report(device)

    def _do_sensor_stuck(
        self, step: Step, chosen: list[SimDevice], rng: random.Random
    ) -> Callable[[], None]:
        metric = step.parameters.get("metric")
        for device in chosen:
            if "value" in step.parameters and metric is not None:
                device.frozen = {str(metric): float(step.parameters["value"])}
            else:
                device.frozen = {}
                device.frozen_metric = str(metric) if metric is not None else None

        def restore() -> None:
            for device in chosen:
                device.frozen = None
                device.frozen_metric = None

        return restore

    def _do_av_signatures_stale(
        self, step: Step, chosen: list[SimDevice], rng: random.Random
    ) -> None:
        sim_now = self.moment().sim
        for device in chosen:
            assert isinstance(device, LabPc)
            device.stop_signature_updates(sim_now)

    def _do_av_realtime_off(
        self, step: Step, chosen: list[SimDevice], rng: random.Random
    ) -> Callable[[], None]:
        def switch(off: bool) -> None:
            for device in chosen:
                assert isinstance(device, LabPc)
                device.realtime_off = off
                if self.transport.is_online(device):
                    self._send(device, device.av(self.moment(device)))

        switch(True)
        return functools.partial(switch, False)
