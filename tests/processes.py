"""A service as a child process, configured only by RCS_* variables, as make run and compose start it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from services.common.settings import PROJECT_ROOT, MqttSettings, Settings
from services.emulators.arduino import ArduinoEmulator
from services.emulators.stm32 import Stm32Emulator
from tests.conftest import wait_until

_LOGIN = ("RCS_MQTT_USERNAME", "RCS_MQTT_PASSWORD")
# Tests check behaviour, not timing (bench/ measures that): on a loaded 2-core CI machine the round
# trip actuation -> broker -> acquisition -> STM32 -> back can exceed stand.yaml's 250 ms ack deadline,
# and the telemetry pause the deadman allows (500 ms) passes now and then during a hot fire. Tests of
# the deadman's telemetry limit set their own.
# The go/no-go checklist of stand.yaml asks for every service, the logger and a recent tare, which most
# tests' stands do not have: they get one their emulated STM32 satisfies (tests of the checklist itself
# pass their own RCS_CHECKLIST, e.g. stand.yaml's).
TEST_CHECKLIST = [
    {"id": "stm32", "kind": "stm32_connected"},
    {"id": "valves-closed", "kind": "valves_closed"},
]
_TEST_DEFAULTS = {
    "RCS_ACTUATION_ACK_TIMEOUT_MS": "2000",
    "RCS_ACTUATION_TELEMETRY_STALE_MS": "2000",
    "RCS_CHECKLIST": json.dumps(TEST_CHECKLIST),
}


class ServiceProcess:
    """`python -m <module>` logged in as `mqtt`'s user; its output goes to `<tmp>/<name>.log`.

    As a context manager it is stopped on leaving the block, which then asserts a clean exit (code 0,
    with the end of its log as the message) unless the test already ended it itself (`stop()` to check
    another code, `kill()`) or the block failed (that failure is the one to report).
    """

    def __init__(self, module: str, name: str, mqtt: MqttSettings, tmp: Path, **env: str) -> None:
        child = {k: v for k, v in os.environ.items() if k not in _LOGIN}
        child.update(
            _TEST_DEFAULTS
            | {"RCS_MQTT_HOST": mqtt.host, "RCS_MQTT_PORT": str(mqtt.port), "RCS_DATA_DIR": str(tmp)}
            | env
        )
        if mqtt.username is not None:
            child["RCS_MQTT_USERNAME"] = mqtt.username
        if mqtt.password is not None:
            child["RCS_MQTT_PASSWORD"] = mqtt.password.get_secret_value()
        self.name = name
        self.ended_by_test = False
        self.log = tmp / f"{name}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module], env=child, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.ended_by_test:
            return
        code = self.stop()
        if exc_type is None:
            assert code == 0, f"{self.name} exited with code {code}:\n{self.tail()}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> int:
        """SIGTERM, as make run and compose stop it; the exit code (0 = clean)."""
        self.ended_by_test = True
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # hung: SIGABRT makes faulthandler log every thread's stack
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            code = -signal.SIGKILL  # reported as a kill, whatever ended it
        self._log_file.close()
        return code

    def kill(self) -> None:
        """SIGKILL: no clean exit to expect."""
        self.ended_by_test = True
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._log_file.close()


class Acquisition(ServiceProcess):
    """rcs-acquisition on the STM32 link at `port`; `mqtt` must be the `acquisition` user."""

    def __init__(self, mqtt: MqttSettings, port: Path, tmp: Path, **env: str) -> None:
        super().__init__(
            "services.acquisition",
            "acquisition",
            mqtt,
            tmp,
            RCS_STM32_PORT=str(port),
            RCS_ACQUISITION_METRICS_PORT="0",
            RCS_ACQUISITION_RING_SECONDS="60",
            **env,
        )


class Actuation(ServiceProcess):
    """rcs-actuation with the motor Arduino at `arduino`; `mqtt` must be the `actuation` user."""

    def __init__(self, mqtt: MqttSettings, arduino: Path, tmp: Path, **env: str) -> None:
        super().__init__(
            "services.actuation",
            "actuation",
            mqtt,
            tmp,
            RCS_ARDUINO_PORT=str(arduino),
            RCS_ACTUATION_METRICS_PORT="0",
            **env,
        )


class Logger(ServiceProcess):
    """rcs-logger recording to `data_dir`; `mqtt` must be the `logger` user."""

    def __init__(self, mqtt: MqttSettings, tmp: Path, data_dir: Path, **env: str) -> None:
        super().__init__(
            "services.logger",
            "logger",
            mqtt,
            tmp,
            RCS_DATA_DIR=str(data_dir),
            RCS_LOGGER_METRICS_PORT="0",
            **env,
        )


class Gateway(ServiceProcess):
    """rcs-gateway on 127.0.0.1:`port` (`RCS_HTTP_PORT`); `mqtt` must be the `gateway` user.

    Started again on the same port (a restart), a page that was open reconnects to it; give each
    start its own `name` to keep each one's log (`<tmp>/<name>.log`).
    """

    def __init__(self, mqtt: MqttSettings, tmp: Path, port: int, name: str = "gateway", **env: str) -> None:
        super().__init__("services.gateway", name, mqtt, tmp, RCS_HTTP_PORT=str(port), **env)
        self.port = port

    def stop(self) -> int:
        """As ServiceProcess.stop; uvicorn re-raises the SIGTERM it handled once it has shut down
        cleanly (so the exit status shows the signal): that exit is reported as 0."""
        code = super().stop()
        return 0 if code == -signal.SIGTERM else code


@dataclass
class CliOutcome:
    returncode: int | None = None
    stderr: str = ""


@contextmanager
def emulator_cli(module: str, link: Path, *args: str, timeout_s: float) -> Iterator[CliOutcome]:
    """`python -m <module> --link <link> <args>` as make run starts it: the block runs once the link
    exists, then SIGTERM stops it and the outcome holds its exit code and stderr."""
    outcome = CliOutcome()
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--link", str(link), *args], cwd=PROJECT_ROOT, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: link.exists() or process.poll() is not None, timeout_s, f"a link from {module}")
        assert process.poll() is None, f"no link from {module}: it exited"
        yield outcome
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=timeout_s)
        outcome.returncode, outcome.stderr = process.returncode, stderr.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def emulated_devices(
    stack: ExitStack,
    settings: Settings,
    mqtt_as: Callable[[str], MqttSettings],
    tmp: Path,
    **actuation_env: str,
) -> tuple[Stm32Emulator, ArduinoEmulator, Acquisition]:
    """The STM32 and Arduino emulators behind pseudo-terminals in `tmp`, with rcs-acquisition and
    rcs-actuation (with `actuation_env`) on them, each stopped by `stack` (in reverse)."""
    stm32 = Stm32Emulator(settings, link_path=tmp / "stm32")
    arduino = ArduinoEmulator(settings, link_path=tmp / "arduino", speed_factor=4.0)
    stm32.start()
    stack.callback(stm32.stop)
    arduino.start()
    stack.callback(arduino.stop)
    acquisition = stack.enter_context(Acquisition(mqtt_as("acquisition"), tmp / "stm32", tmp))
    stack.enter_context(Actuation(mqtt_as("actuation"), tmp / "arduino", tmp, **actuation_env))
    return stm32, arduino, acquisition
