"""rcs-actuation: the only command authority — valves, motors, sequences, arming, interlocks, abort.

Wiring: MQTT callbacks and request handlers never decide anything; they post jobs to the control
thread, whose jobs (`authority.Authority`) own the safety core (`core.StandCore`), the red-line
monitor and the deadman. Valve patterns the core decides are sent to acquisition
(`rcs/stm32/cmd/valves`), which writes them to the STM32 and returns the device's acknowledgement;
only an acknowledgement changes the published valve state. Motors are driven by the motor
controller's own thread (the Arduino link).

This module only wires: `authority` is what the control thread does, `commands` the request
handlers (one table), `publish` every event and state topic, `motors` the Arduino link.

Abort never waits behind anything (docs/safety.md §5.2): abort requests arrive on a second MQTT
connection of their own (the "priority" connection, which also carries every valve write and its
acknowledgement, so a flood of requests and replies on the main connection cannot delay them), are
served by workers of their own, answer every command still queued "superseded by abort", and run on
the control thread before any job waiting there. Other commands wait in a bounded queue: beyond
`actuation.command_queue` they are refused at once ("busy: …"), never queued.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict

from services.actuation.authority import DEADMAN_PERIOD_S, ActuationStats, Authority
from services.actuation.checklist_view import ChecklistView
from services.actuation.commands import Commands
from services.actuation.control import ControlThread
from services.actuation.motors import MotorController
from services.actuation.publish import StatePublisher
from services.actuation.readiness import Readiness
from services.actuation.valve_map import ValveMap
from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.heartbeat import BadHeartbeatError, parse_heartbeat
from services.common.lifecycle import run_service
from services.common.logs import DropMalformed, Throttled
from services.common.metrics import counters
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcServer
from services.common.settings import Settings, config_file

SERVICE = "actuation"
PRIORITY_CONNECT_WAIT_S = 5.0
log = logging.getLogger("rcs.actuation")


class Actuation:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.valve_map = ValveMap(settings)
        self.stats = ActuationStats()
        self._problems = Throttled(log)
        self._decode = DropMalformed(self.stats, "malformed_total", self._problems)

        self.mqtt = MqttClient(settings.mqtt, SERVICE)
        self.priority_mqtt = MqttClient(
            settings.mqtt, SERVICE, client_id=f"{self.mqtt.client_id}-priority", announce=False
        )
        self.publisher = StatePublisher(self.mqtt, SERVICE, self.valve_map)
        self.motors = MotorController(
            settings, on_state=self.publisher.motors, on_event=self.publisher.motor_event
        )
        self.authority = Authority(
            settings,
            valve_map=self.valve_map,
            publisher=self.publisher,
            valve_link=self.priority_mqtt,
            stats=self.stats,
            problems=self._problems,
            decode=self._decode,
            motors=self.motors,
            post=self._post_control,
        )
        self.control = ControlThread(self.authority.on_wake, max_sleep_s=DEADMAN_PERIOD_S)
        bound = settings.actuation.command_queue
        self.command_server = RpcServer(self.mqtt, workers=4, max_queued=bound)
        self.motor_server = RpcServer(self.mqtt, workers=2, max_queued=bound)  # slow moves apart
        self.abort_server = RpcServer(self.priority_mqtt, workers=2)
        self.rpc = RpcClient(self.mqtt)  # actuation asks acquisition (tare) and the logger (checklist)
        self.readiness = Readiness(
            authority=self.authority,
            control=self.control,
            view=ChecklistView(settings, self.mqtt, self.rpc),
            rpc=self.rpc,
            publisher=self.publisher,
            stats=self.stats,
            configured=bool(settings.checklist),
        )
        self.commands = Commands(
            settings,
            authority=self.authority,
            control=self.control,
            motors=self.motors,
            valve_map=self.valve_map,
            publisher=self.publisher,
            stats=self.stats,
            queues=(self.command_server, self.motor_server),
            readiness=self.readiness,
        )

        self.mqtt.subscribe(topics.TELEMETRY, self._on_telemetry)
        self.priority_mqtt.subscribe(topics.STM32_VALVE_ACK, self._on_ack, qos=1)
        self.mqtt.subscribe(topics.STATE_STM32, self._on_stm32_state, qos=1)
        self.mqtt.subscribe(topics.OPERATOR_HEARTBEAT, self._on_heartbeat)
        self.mqtt.subscribe(topics.status("acquisition"), self._on_acquisition_status, qos=1)
        self.mqtt.add_connection_listener(self._on_broker)
        self.priority_mqtt.add_connection_listener(self._on_broker)
        for name, handler in self.commands.routine.items():
            self.command_server.serve(topics.actuation(name), handler)
        self.motor_server.serve(topics.actuation("motor"), self.commands.motor)
        # reads of the checklist (a console may poll it) never take a command worker
        self.read_server = RpcServer(self.mqtt, workers=1, max_queued=16)
        self.read_server.serve(topics.actuation("checklist"), self.readiness.checklist)
        self.abort_server.serve(topics.actuation("abort"), self.commands.abort)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.control.start()
        # The abort subscription is up before the main connection announces this service online.
        self.priority_mqtt.start()
        if not self.priority_mqtt.wait_connected(PRIORITY_CONNECT_WAIT_S):
            log.warning("priority connection not up yet; it keeps reconnecting in the background")
        self.mqtt.start()
        self.motors.start()
        log.info(
            "actuation ready: %s, abort sequence %r",
            self.authority.core.state,
            self.settings.abort_sequence_name,
        )

    def stop(self) -> None:
        self.motors.stop()
        self.command_server.close()
        self.motor_server.close()
        self.abort_server.close()
        self.read_server.close()
        self.rpc.close()
        self.control.stop()
        self.mqtt.stop()
        self.priority_mqtt.stop()

    def _post_control(self, job: Callable[[], None]) -> None:
        """A job for the control thread (bound late: the control thread is made after the authority)."""
        self.control.post(job)

    # --- MQTT callbacks (paho's thread: post, don't decide) ----------------------------------

    def _on_telemetry(self, message: Message) -> None:
        payload = message.payload
        self.control.post(lambda: self.authority.telemetry(payload))

    def _on_ack(self, message: Message) -> None:
        ack = self._decode(unpack_map, message.payload, "ack", "valve acknowledgement")
        if ack is None:
            return
        self.control.post(lambda: self.authority.valve_ack(ack))

    def _on_heartbeat(self, message: Message) -> None:
        try:
            parse_heartbeat(message.payload, time.time(), self.settings.actuation.operator_timeout_s)
        except BadHeartbeatError as exc:
            self.stats.bad_heartbeats_total += 1
            self._problems.warning(f"heartbeat:{exc.kind}", "ignored an operator heartbeat: %s", exc)
            return
        self.control.post(lambda: self.authority.deadman.operator_heartbeat(time.monotonic()))

    def _on_stm32_state(self, message: Message) -> None:
        try:
            state = unpack_map(message.payload)
        except WireFormatError:
            return  # an empty payload clears the retained state; acquisition publishes it again
        valves = state.get("valves")
        if state.get("connected") is True and isinstance(valves, int) and not isinstance(valves, bool):
            self.control.post(lambda: self.authority.device_report(valves))

    def _on_acquisition_status(self, message: Message) -> None:
        try:
            online = unpack_map(message.payload).get("state") == "online"
        except WireFormatError:
            online = False
        self.control.post(lambda: self.authority.deadman.acquisition_status(online, time.monotonic()))

    def _on_broker(self, connected: bool) -> None:
        if connected:
            self.control.post(lambda: self.publisher.republish(self.authority.core, self.motors.state))
        else:
            self.control.post(lambda: self.authority.broker_lost(SERVICE))

    def metrics(self) -> dict[str, float]:
        return {
            **asdict(self.stats),
            **counters(self.command_server.stats, "command_requests"),
            **counters(self.motor_server.stats, "motor_requests"),
            **counters(self.abort_server.stats, "abort_requests"),
            **counters(self.read_server.stats, "read_requests"),
            "command_queue": float(self.command_server.queued),
            "armed": float(self.authority.core.armed),
            "pending_writes": float(len(self.authority.pending)),
            "arduino_connected": float(self.motors.state.connected),
        }


def build(settings: Settings) -> Actuation:
    """The service; a configuration its safety checks refuse stops it with their lines, no traceback."""
    try:
        return Actuation(settings)
    except ValueError as exc:  # StandCore: sequences the interlocks refuse, unguarded valves
        raise SystemExit(f"{SERVICE}: refusing to start, {config_file()}: {exc}") from None


def main() -> None:
    run_service(SERVICE, build, lambda settings: settings.actuation.metrics_port)


if __name__ == "__main__":
    main()
