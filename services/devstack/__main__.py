"""rcs-stack (`make run`): the whole system on emulated hardware, until Ctrl-C.

Uses the broker at RCS_MQTT_HOST:RCS_MQTT_PORT if one answers, otherwise starts Mosquitto there with
the project's config and ACL and a fresh random password per user (mosquitto/acl): each service then
logs in as its own user (RCS_MQTT_USERNAME/RCS_MQTT_PASSWORD in its environment), and the operator's
login is written to run/operator.env (mode 0600) for rcs-ctl and other tools. Then starts the STM32
emulator behind a pseudo-terminal and every service, each as its own process configured only by
stand.yaml and RCS_* variables, exactly as compose or a person at a shell would. If any of them
exits, everything is stopped: a half-running stand is worse than a stopped one.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from services.common.lifecycle import stop_requested
from services.common.logs import setup_logging
from services.common.settings import PROJECT_ROOT, load_settings
from services.devstack import credentials, firmware_board
from services.devstack.broker import Broker, broker_answers

log = logging.getLogger("rcs.stack")

# (name, python module) in start order; stopped in reverse.
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


def _start(
    name: str, module: str, args: list[str], env: dict[str, str], argv: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m module args`, or `argv` when given."""
    log.info("starting %s", name)
    # Own process group: Ctrl-C reaches only this launcher, which then stops everything in order.
    return subprocess.Popen(argv or [sys.executable, "-m", module, *args], env=env, process_group=0)


def _stop_all(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Stop in reverse start order, each before the next, so no service sees its hardware vanish."""
    for name, process in reversed(processes):
        if process.poll() is None:
            log.info("stopping %s", name)
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within 10 s; killing it", name)
            process.kill()
            process.wait()


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
    env = dict(os.environ)
    env.setdefault("RCS_DATA_DIR", str(Path(settings.data_dir).resolve()))
    # The gateway's tokens: the operator's own if set, else fresh ones for this run (printed below).
    operator_token = env.setdefault("RCS_OPERATOR_TOKEN", secrets.token_urlsafe(24))
    env.setdefault("RCS_VIEWER_TOKEN", secrets.token_urlsafe(24))

    broker: Broker | None = None
    logins: dict[str, str] = {}
    operator_env = run_dir / "operator.env"
    host, port = settings.mqtt.host, settings.mqtt.port
    if broker_answers(host, port, timeout=1.0):
        log.info("using the MQTT broker already answering on %s:%d", host, port)
        log.warning(
            "this broker's logins and ACL are not this project's: unless it enforces mosquitto/acl, "
            "anyone who can reach it can command the valves (rcs/stm32/cmd/#)"
        )
        operator_env.unlink(missing_ok=True)  # a previous run's login is not valid here
    else:
        broker = Broker(port=port, host="127.0.0.1" if host in ("localhost", "127.0.0.1") else host)
        broker.start()
        logins = broker.credentials
        credentials.write_private(
            operator_env, credentials.env_text("operator", logins["operator"], host=host, port=port)
        )
        log.info("started Mosquitto on %s:%d (mosquitto/mosquitto.conf, mosquitto/acl)", broker.host, port)

    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    stop = stop_requested()
    try:
        if not args.hardware:
            for name, module, port_variable in EMULATORS:
                link = run_dir / name.removesuffix("-emulator")
                env[port_variable] = str(link)
                emulator_env = {k: v for k, v in env.items() if k not in _LOGIN}  # no MQTT
                firmware = name == "stm32-emulator" and settings.stm32.emulator == "firmware"
                argv = firmware_board.command(settings, link) if firmware else None
                processes.append((name, _start(name, module, ["--link", str(link)], emulator_env, argv)))
        for name, module in SERVICES:
            processes.append((name, _start(name, module, [], _service_env(env, name, logins))))
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
                if logins
                else "  MQTT logins: those of the existing broker (RCS_MQTT_USERNAME/PASSWORD)\n"
            )
            + "  stop:      Ctrl-C\n",
            flush=True,
        )
        while not stop.wait(0.5):
            exited = [(name, p.returncode) for name, p in processes if p.poll() is not None]
            if exited:
                log.error("%s exited (code %s): stopping everything", *exited[0])
                break
    finally:
        _stop_all(processes)
        if broker is not None:
            broker.close()
            operator_env.unlink(missing_ok=True)  # its password died with the broker
        log.info("stopped")


if __name__ == "__main__":
    main()
