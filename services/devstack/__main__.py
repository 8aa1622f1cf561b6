"""rcs-stack (`make run`): the whole system on emulated hardware, until Ctrl-C.

Uses the broker at RCS_MQTT_HOST:RCS_MQTT_PORT if one answers, otherwise starts Mosquitto there with
the project's config and ACL and a fresh random password per user (mosquitto/acl): each service then
logs in as its own user (RCS_MQTT_USERNAME/RCS_MQTT_PASSWORD in its environment), and the operator's
login is written to run/operator.env (mode 0600) for rcs-ctl and other tools. Then starts the STM32
emulator behind a pseudo-terminal and every service, each as its own process configured only by
stand.yaml and RCS_* variables, exactly as compose or a person at a shell would.

A process that exits is restarted, as compose restarts a container (services/devstack/supervisor.py:
Docker's backoff, and a crash-loop limit beyond which it stays stopped), while the rest of the stand
keeps running: stopping everything because one helper crashed would close the valves without the
abort's vent and purge, and stop the recording. Each exit and restart is logged and published on
rcs/events as the `stack` user (service "stack"), and the stack's retained status (rcs/status/stack)
lists every process. Ctrl-C (or SIGTERM) stops everything in reverse start order.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from pydantic import SecretStr

from services.common.lifecycle import stop_requested
from services.common.logs import setup_logging
from services.common.mqtt import MqttClient
from services.common.settings import PROJECT_ROOT, MqttSettings, Settings, load_settings
from services.devstack import credentials, firmware_board
from services.devstack.broker import Broker, broker_answers
from services.devstack.supervisor import RestartPolicy, Supervisor, python_module

log = logging.getLogger("rcs.stack")

# (name, python module, the RCS_* variable naming its serial link) in start order; stopped in reverse.
EMULATORS = (
    ("stm32-emulator", "services.emulators.stm32", "RCS_STM32_PORT"),
    ("arduino-emulator", "services.emulators.arduino", "RCS_ARDUINO_PORT"),
)
SERVICES = (
    ("acquisition", "services.acquisition"),
    ("actuation", "services.actuation"),
    ("logger", "services.logger"),
    ("gateway", "services.gateway"),
)
_LOGIN = ("RCS_MQTT_USERNAME", "RCS_MQTT_PASSWORD")
POLL_S = 0.2


def _service_env(env: dict[str, str], name: str, logins: dict[str, str]) -> dict[str, str]:
    """`env` with the MQTT login of the user named like the service, when this stack made them."""
    if not logins:
        return env  # an existing broker: whatever login the caller's environment holds
    child = {k: v for k, v in env.items() if k not in _LOGIN}
    if name in logins:
        child.update(RCS_MQTT_USERNAME=name, RCS_MQTT_PASSWORD=logins[name])
    else:
        log.warning("%s has no MQTT user in mosquitto/acl: it connects anonymously (read-only)", name)
    return child


def _stack_client(mqtt: MqttSettings, logins: dict[str, str]) -> MqttClient | None:
    """The stack's own MQTT client for its events and status, as `stack` when this stack made the
    logins, else with the caller's login (None without one: anonymous clients may not publish; the
    broker refuses rcs/status/stack to another user, the events it takes from any named user)."""
    if logins:
        mqtt = mqtt.model_copy(
            update={"username": credentials.STACK_USER, "password": SecretStr(logins[credentials.STACK_USER])}
        )
    elif mqtt.username is None:
        log.warning("no MQTT login (RCS_MQTT_USERNAME): service exits and restarts are only logged")
        return None
    return MqttClient(mqtt, "stack")


def _environment(data_dir: Path) -> dict[str, str]:
    """The children's environment: ours, with the data directory and the gateway's tokens set (the
    operator's own if set, else fresh ones for this run, printed by `_print_banner`)."""
    env = dict(os.environ)
    env.setdefault("RCS_DATA_DIR", str(data_dir.resolve()))
    env.setdefault("RCS_OPERATOR_TOKEN", secrets.token_urlsafe(24))
    env.setdefault("RCS_VIEWER_TOKEN", secrets.token_urlsafe(24))
    return env


def _broker(settings: Settings, operator_env: Path) -> tuple[Broker | None, dict[str, str]]:
    """(the broker this stack started or None, the MQTT logins it made: none with an existing broker)."""
    host, port = settings.mqtt.host, settings.mqtt.port
    if broker_answers(host, port, timeout=1.0):
        log.info("using the MQTT broker already answering on %s:%d", host, port)
        log.warning(
            "this broker's logins and ACL are not this project's: unless it enforces mosquitto/acl, "
            "anyone who can reach it can command the valves (rcs/stm32/cmd/#)"
        )
        operator_env.unlink(missing_ok=True)  # a previous run's login is not valid here
        return None, {}
    broker = Broker(port=port, host="127.0.0.1" if host in ("localhost", "127.0.0.1") else host)
    broker.start()
    logins = broker.credentials
    credentials.write_private(
        operator_env, credentials.env_text("operator", logins["operator"], host=host, port=port)
    )
    log.info("started Mosquitto on %s:%d (mosquitto/mosquitto.conf, mosquitto/acl)", broker.host, port)
    return broker, logins


def _start_emulators(supervisor: Supervisor, settings: Settings, env: dict[str, str], run_dir: Path) -> None:
    """Each emulator behind its pty link in `run_dir`, named in `env` (RCS_*_PORT) for the services."""
    for name, module, port_variable in EMULATORS:
        link = run_dir / name.removesuffix("-emulator")
        env[port_variable] = str(link)
        emulator_env = {k: v for k, v in env.items() if k not in _LOGIN}  # no MQTT
        firmware = name == "stm32-emulator" and settings.stm32.emulator == "firmware"
        command = (
            firmware_board.command(settings, link) if firmware else python_module(module, "--link", str(link))
        )
        supervisor.start(name, command, emulator_env)


def _print_banner(settings: Settings, env: dict[str, str], operator_env: Path | None) -> None:
    """Where everything is, for the person who started the stack."""
    host, port = settings.mqtt.host, settings.mqtt.port
    operator_token = env["RCS_OPERATOR_TOKEN"]
    print(
        f"\nrcs is running: telemetry on mqtt://{host}:{port}/rcs/telemetry/sensors\n"
        f"  watch it:  {sys.executable} -m services.devstack.watch\n"
        f"  command:   {Path(sys.executable).parent / 'rcs-ctl'} --help  (arming needs `rcs-ctl hold`)\n"
        f"  dashboard: http://localhost:{settings.http_port}/#token={operator_token}\n"
        f"  gateway:   http://localhost:{settings.http_port}/  (REST /api/..., WebSocket /ws, /docs)\n"
        f"  operator token: {operator_token}  (Authorization: Bearer ..., or /ws?token=...)\n"
        f"  metrics:   http://localhost:{settings.acquisition.metrics_port}/metrics (acquisition)\n"
        + (
            f"  operator login (rcs-ctl reads it): {operator_env}\n"
            if operator_env is not None
            else "  MQTT logins: those of the existing broker (RCS_MQTT_USERNAME/PASSWORD)\n"
        )
        + "  stop:      Ctrl-C\n",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the whole rcs system")
    parser.add_argument(
        "--hardware",
        action="store_true",
        help="real STM32 and Arduino (RCS_STM32_PORT / RCS_ARDUINO_PORT or auto-detect), no emulators",
    )
    args = parser.parse_args()
    settings = load_settings()
    setup_logging("stack", settings.log_level, settings.log_format)

    run_dir = PROJECT_ROOT / "run"
    run_dir.mkdir(exist_ok=True)
    env = _environment(settings.data_dir)
    operator_env = run_dir / "operator.env"
    broker, logins = _broker(settings, operator_env)

    stop = stop_requested()
    events = _stack_client(settings.mqtt, logins)
    if events is not None:
        events.start()
    supervisor = Supervisor(events, RestartPolicy())
    try:
        if not args.hardware:
            _start_emulators(supervisor, settings, env, run_dir)
        for name, module in SERVICES:
            supervisor.start(name, python_module(module), _service_env(env, name, logins))
        _print_banner(settings, env, operator_env if logins else None)
        while not stop.wait(POLL_S):
            supervisor.poll()
    finally:
        supervisor.stop_all()
        if events is not None:
            events.stop()
        if broker is not None:
            broker.close()
            operator_env.unlink(missing_ok=True)  # its password died with the broker
        log.info("stopped")


if __name__ == "__main__":
    main()
