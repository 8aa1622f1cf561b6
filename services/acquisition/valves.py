"""The valve output path: actuation's commands to the STM32, the device's answers back, and making
the valves safe on acquisition's own authority.

Commands arrive on `rcs/stm32/cmd/valves` and `rcs/stm32/cmd/go_safe` (QoS 1, published only by
actuation: the broker's ACL); each is answered once on `rcs/stm32/valve_ack` (valve_wire.py), from the
device's answer (matched by device_valves.py) or at once when it is not executed (expired, bad mask,
link down). A malformed or retained command is never executed and never answered (it has no
trustworthy cmd_no); it is counted and logged. An empty payload (clearing a retained message) is
ignored.

Threads. Commands arrive on paho's network thread, which only validates them and hands them to one
"valve-commands" thread over a blocking queue (woken at once: no polling delay). That thread writes
to the port: a write takes the link's lock and may block for up to its 0.5 s write timeout when the
device stops reading, which must not stall paho's thread (it also carries actuation's status, RPC
requests and these acknowledgements). One writer also keeps the order of writes, which the text
protocol's answers are matched by. Answers arrive on the serial link's thread.

Making safe. When acquisition loses the broker, sees actuation's retained status say offline, or
stops, it checks on the writer thread, after executing every command received before, whether a
valve may be open: the device's latest report (binary STATUS or any acknowledgement) is not
all-closed or is unknown (text protocol before the first acknowledgement), or the newest unanswered
command opens a valve. If so it commands GO_SAFE itself (cmd_no from its own range 0xFF00..0xFFFF,
which actuation does not use), answers it on the ack topic like any command, and publishes an event
`{ts, service: "acquisition", kind: "go_safe", reason, cmd_no, sent, valves}` on `rcs/events` through
`publish_event` (acquisition's EventOutbox: held while the broker is gone, published once the logger
and the gateway are back, services/common/event_outbox.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.acquisition.device_valves import DeviceValves
from services.acquisition.text_protocol import TextAck
from services.acquisition.valve_wire import (
    Result,
    ValveCommand,
    ack_payload,
    binary_answer,
    parse_go_safe,
    parse_valves,
    text_ack_mask,
    text_answer,
)
from services.common import topics
from services.common.audit import event_payload
from services.common.codec import WireFormatError, unpack_map
from services.common.logs import Throttled
from services.common.mqtt import Message
from services.common.stm32_wire import ValveAckFrame

log = logging.getLogger("rcs.acquisition.valves")

OWN_CMD_FIRST, OWN_CMD_LAST = 0xFF00, 0xFFFF  # acquisition's own GO_SAFE commands
JOIN_TIMEOUT_S = 2.0

Publish = Callable[..., bool]  # MqttClient.publish


@dataclass
class ValveStats:
    commands: int = 0  # valid commands received (executed or not)
    expired: int = 0  # not executed: deadline passed (on arrival or before the write)
    malformed: int = 0  # not executed, not answered: undecodable, missing fields, retained
    refused: int = 0  # not executed: mask beyond the configured valves
    not_connected: int = 0  # not executed: no STM32 link, or the write failed
    written: int = 0  # commands written to the port (including own go-safes)
    acks: int = 0  # device answers published
    unanswered: int = 0  # written commands the device never answered (forgotten)
    unmatched: int = 0  # device answers matching no command (text protocol: no cmd_no to publish)
    own_go_safe: int = 0  # go-safes acquisition commanded on its own


class _Stop:
    pass


@dataclass(frozen=True)
class _MakeSafe:
    reason: str


_STOP = _Stop()


class ValveControl:
    """See the module docstring. `set_valves(cmd_no, mask)` / `go_safe(cmd_no)` write to the link
    (SerialLink's methods: False when not connected or the write failed)."""

    def __init__(
        self,
        n_valves: int,
        publish: Publish,
        *,
        set_valves: Callable[[int, int], bool],
        go_safe: Callable[[int], bool],
        publish_event: Callable[[bytes], None],
    ) -> None:
        self._n_valves = n_valves
        self._publish = publish
        self._publish_event = publish_event
        self._set_valves = set_valves
        self._go_safe = go_safe
        self._lock = threading.Lock()
        self._device = DeviceValves()  # the device's outputs and the commands it has not answered
        self._protocol: str | None = None  # of the connected link, None while down
        self._own_cmd_no = OWN_CMD_LAST  # the next one is OWN_CMD_FIRST
        self._make_safe_queued = False
        self._stopping = False
        self._jobs: queue.SimpleQueue[ValveCommand | _MakeSafe | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stats = ValveStats()  # but acks, unanswered and unmatched: counted by self._device
        self._problems = Throttled(log)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="valve-commands", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Command GO_SAFE if a valve may be open (nobody could close it once this service is gone;
        with the text protocol nothing else ever would), execute what is queued, stop the writer.
        Call while the link still runs; commands arriving from now on are answered not_connected."""
        with self._lock:
            connected = self._protocol is not None
        if connected:
            self.make_safe("acquisition is stopping")
        with self._lock:
            self._stopping = True
        self._jobs.put(_STOP)
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)

    @property
    def stats(self) -> ValveStats:
        with self._lock:
            device = self._device
            return dataclasses.replace(
                self._stats, acks=device.acks, unanswered=device.unanswered, unmatched=device.unmatched
            )

    # --- MQTT (paho's network thread) -------------------------------------------------------

    def on_valves_message(self, message: Message) -> None:
        self._on_command(message, parse_valves)

    def on_go_safe_message(self, message: Message) -> None:
        self._on_command(message, parse_go_safe)

    def on_actuation_status(self, message: Message) -> None:
        """Actuation's retained status: offline (its Last Will, or a stop) -> make safe."""
        if not message.payload:
            return  # the retained status was cleared: no news
        try:
            status = unpack_map(message.payload)
        except WireFormatError as exc:
            self._problems.warning("status", "undecodable actuation status on %s: %s", message.topic, exc)
            return
        if status.get("state") == "offline":
            self.make_safe(f"actuation is offline ({status.get('reason', 'no reason given')})")

    def on_broker(self, connected: bool) -> None:
        if not connected:
            self.make_safe("acquisition lost the MQTT broker")

    # --- serial link thread -----------------------------------------------------------------

    def on_connection(self, protocol: str | None) -> None:
        """The link (re)connected with `protocol`, or went down (None): earlier commands will not be
        answered any more, and the device's outputs are unknown until it reports them."""
        with self._lock:
            forgotten = self._device.link_changed()
            self._protocol = protocol
        if forgotten:
            log.warning("STM32 link %s: %d valve command(s) left unanswered", protocol or "down", forgotten)

    def on_device_valves(self, mask: int) -> None:
        """The outputs the device reports driving now (binary STATUS)."""
        with self._lock:
            self._device.mask = mask

    def on_ack(self, ack: ValveAckFrame | TextAck) -> None:
        if isinstance(ack, ValveAckFrame):
            self._on_binary_ack(ack)
        else:
            self._on_text_ack(ack)

    # --- making safe ---------------------------------------------------------------------------

    def make_safe(self, reason: str) -> None:
        """Command GO_SAFE on acquisition's own authority if a valve may be open. Never blocks.

        Decided on the writer thread, after every command received before this call: one of them
        may still open a valve."""
        with self._lock:
            if self._stopping or self._make_safe_queued:
                return
            self._make_safe_queued = True
        self._jobs.put(_MakeSafe(reason))

    # --- commands (paho's thread) and the writer thread ------------------------------------------

    def _on_command(self, message: Message, parse: Callable[[bytes], ValveCommand]) -> None:
        topic = message.topic
        if not message.payload:
            return  # someone clearing a retained message: not a command
        if message.retain:
            self._count("malformed")
            self._problems.warning(f"retained:{topic}", "ignored a retained command on %s", topic)
            return
        try:
            command = parse(message.payload)
        except WireFormatError as exc:
            self._count("malformed")
            self._problems.warning(f"malformed:{topic}", "ignored a malformed command on %s: %s", topic, exc)
            return
        self._count("commands")
        if command.mask is not None and command.mask >> self._n_valves:
            self._count("refused")
            self._answer(
                command.cmd_no,
                "refused_bad_mask",
                f"mask {command.mask:#x} has bits beyond the {self._n_valves} configured valves: not sent",
            )
            return
        with self._lock:
            stopping = self._stopping
        if stopping:
            self._count("not_connected")
            self._answer(command.cmd_no, "not_connected", "not sent: acquisition is stopping")
        elif not self._expired(command):
            self._jobs.put(command)

    def _expired(self, command: ValveCommand) -> bool:
        late = time.time() - command.deadline
        if late <= 0:
            return False
        self._count("expired")
        self._problems.warning(
            "expired", "did not execute %s: %.3f s past its deadline", command.describe(), late
        )
        self._answer(command.cmd_no, "expired", f"not executed: {late:.3f} s past its deadline")
        return True

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if isinstance(job, _Stop):
                return
            try:
                if isinstance(job, _MakeSafe):
                    self._make_safe(job.reason)
                else:
                    self._execute(job)
            except Exception:  # a bug must cost this job, not the valve path
                log.exception("valve job %s failed", job)

    def _make_safe(self, reason: str) -> None:
        with self._lock:
            self._make_safe_queued = False
            connected = self._protocol is not None
            needed = connected and self._device.may_be_open()
            valves_before = self._device.mask
            if needed:
                self._own_cmd_no = OWN_CMD_FIRST if self._own_cmd_no >= OWN_CMD_LAST else self._own_cmd_no + 1
            cmd_no = self._own_cmd_no
        if not connected:
            self._problems.warning("make-safe-no-link", "%s; the STM32 link is down: nothing to do", reason)
            return
        if not needed:
            log.info("%s; every valve is closed", reason)
            return
        log.warning("%s while valves may be open: commanding GO_SAFE (cmd_no %#06x)", reason, cmd_no)
        sent = self._execute(ValveCommand(cmd_no, None, math.inf, reason, own=True))
        self._count("own_go_safe")
        event = {"reason": reason, "cmd_no": cmd_no, "sent": sent, "valves": valves_before}
        self._publish_event(event_payload("acquisition", "go_safe", event))

    def _execute(self, command: ValveCommand) -> bool:
        """Write `command` unless it expired; whether it was written. Writer thread only."""
        if not command.own and self._expired(command):
            return False
        with self._lock:  # registered before the write: the answer may arrive before write() returns
            entry = self._device.writing(command)
        if command.mask is None:
            sent = self._go_safe(command.cmd_no)
        else:
            sent = self._set_valves(command.cmd_no, command.mask)
        with self._lock:
            if sent:
                self._stats.written += 1
            else:
                self._stats.not_connected += 1
                self._device.not_written(entry)
        if sent:
            log.info("sent %s", command.describe())
        else:
            self._problems.warning(
                "not-connected", "could not send %s: STM32 not connected", command.describe()
            )
            self._answer(command.cmd_no, "not_connected", "not sent: the STM32 link is down")
        return sent

    # --- answers -------------------------------------------------------------------------------

    def _answer(self, cmd_no: int, result: Result, text: str, valves: int | None = None) -> None:
        self._publish(topics.STM32_VALVE_ACK, ack_payload(cmd_no, result, text, valves), qos=1)

    def _on_binary_ack(self, ack: ValveAckFrame) -> None:
        with self._lock:
            command = self._device.binary_answer(ack)
        result, text = binary_answer(ack, command)
        self._answer(ack.cmd_no, result, text, ack.valves)

    def _on_text_ack(self, ack: TextAck) -> None:
        mask = text_ack_mask(ack, self._n_valves)
        with self._lock:
            command = self._device.text_answer(mask)
        if command is None:
            prefix = "ACK" if ack.ok else "NACK"
            self._problems.warning("unmatched", "STM32 answer matching no command: %s: %s", prefix, ack.text)
            return
        result, text = text_answer(ack, command)
        self._answer(command.cmd_no, result, text, mask)

    def _count(self, key: str) -> None:
        with self._lock:
            setattr(self._stats, key, getattr(self._stats, key) + 1)
