"""Every MQTT topic of the system, in one place (docs/protocol.md describes each)."""

TELEMETRY = "rcs/telemetry/sensors"
TELEMETRY_META = "rcs/telemetry/sensors/meta"
EVENTS = "rcs/events/+"  # subscribe: every login's events (each login may publish on its own only)

STATE_STM32 = "rcs/state/stm32"
STATE_VALVES = "rcs/state/valves"
STATE_MOTORS = "rcs/state/motors"
STATE_SYSTEM = "rcs/state/system"
STATE_ALARMS = "rcs/state/alarms"
STATE_RUN = "rcs/state/run"  # the active test run and the last one (actuation)

# actuation -> acquisition (the broker's ACL lets only actuation publish here)
STM32_VALVES = "rcs/stm32/cmd/valves"
STM32_GO_SAFE = "rcs/stm32/cmd/go_safe"
# acquisition -> actuation: the device's answer to a valve write
STM32_VALVE_ACK = "rcs/stm32/valve_ack"

OPERATOR_HEARTBEAT = "rcs/operator/heartbeat"

ACQ_BUFFER_STATUS = "rcs/rpc/acquisition/buffer_status"
ACQ_HISTORY = "rcs/rpc/acquisition/history"
ACQ_HISTORY_REDUCED = "rcs/rpc/acquisition/history_reduced"

LOGGER_SAVE = "rcs/rpc/logger/save"  # rotate now; the reply names the file
LOGGER_STATUS = "rcs/rpc/logger/status"
LOGGER_RUNS = "rcs/rpc/logger/runs"  # the recorded runs, newest first
LOGGER_RUN = "rcs/rpc/logger/run"  # one run's run.json


def actuation(command: str) -> str:
    """Request topic of an actuation command: valves, valve, motor, sequence, cancel, hold, resume, arm,
    disarm, abort, alarms, ack, run_start, run_stop."""
    return f"rcs/rpc/actuation/{command}"


def events(login: str) -> str:
    """Where the MQTT user `login` publishes its audit events (the broker's ACL: nobody else)."""
    return f"rcs/events/{login}"


def login_of(topic: str) -> str:
    """The MQTT user that published on `topic`, a topic of `events(login)` or `request(address, login)`."""
    return topic.rsplit("/", 1)[1]


def is_event(topic: str) -> bool:
    return topic.startswith("rcs/events/") and topic.count("/") == 2


def request(address: str, login: str) -> str:
    """The topic on which the MQTT user `login` sends a request to `address` (e.g. `actuation("arm")`);
    the broker's ACL lets each user publish requests only under its own name."""
    return f"{address}/{login}"


def status(service: str) -> str:
    """Retained online/offline status of a service; its Last Will says offline."""
    return f"rcs/status/{service}"


def replies(reply_id: str) -> str:
    """Where a client receives the answers to its requests (its MQTT v5 Response Topic); `reply_id`
    is random and never the client id (`MqttClient.reply_id`)."""
    return f"rcs/reply/{reply_id}"
