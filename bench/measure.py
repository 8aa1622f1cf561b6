"""What every benchmark uses: child processes logged in to the benchmark's own broker, the acquiring
stand (broker, STM32 emulator, acquisition), CPU time from /proc, liveness waits, where results go."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.devstack.broker import Broker, free_port

RESULTS = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (no extra dependency)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_until(predicate: Callable[[], object], what: str, timeout: float, poll_s: float = 0.1) -> None:
    """Poll until `predicate()` is truthy; RuntimeError after `timeout` (a liveness bound only)."""
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll_s)


class Child:
    """`python <args>` with `env`, its output in `<workdir>/<name>.log`."""

    def __init__(self, name: str, args: Sequence[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.exit_code: int | None = None
        self.log = workdir / f"{name}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM, as make run and compose stop it (SIGCONT first, in case it was paused);
        `exit_code` 0 = a clean stop."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.exit_code = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.exit_code = self.process.wait()
        self._log_file.close()


def service(module: str, name: str, broker: Broker, user: str, workdir: Path, **env: str) -> Child:
    """`python -m <module>` logged in to `broker` as `user`."""
    mqtt = broker.settings(user)
    assert mqtt.password is not None
    child = dict(
        os.environ,
        RCS_MQTT_HOST=mqtt.host,
        RCS_MQTT_PORT=str(mqtt.port),
        RCS_MQTT_USERNAME=user,
        RCS_MQTT_PASSWORD=mqtt.password.get_secret_value(),
        RCS_DATA_DIR=str(workdir),
    )
    child.update(env)
    return Child(name, ["-m", module], workdir, child)


def acquiring_stand(stack: contextlib.ExitStack, workdir: Path) -> tuple[Broker, Child, Child]:
    """A broker with the project's config and logins, the STM32 emulator and rcs-acquisition, each
    stopped by `stack` (in reverse)."""
    link = workdir / "stm32"
    broker = Broker(port=free_port())
    stack.callback(broker.close)
    broker.start()
    emulator = Child(
        "emulator",
        ["-m", "services.emulators.stm32", "--link", str(link)],
        workdir,
        dict(os.environ, RCS_DATA_DIR=str(workdir)),
    )
    stack.callback(emulator.stop)
    acquisition = service(
        "services.acquisition",
        "acquisition",
        broker,
        "acquisition",
        workdir,
        RCS_STM32_PORT=str(link),
        RCS_ACQUISITION_METRICS_PORT="0",
    )
    stack.callback(acquisition.stop)
    return broker, emulator, acquisition


def start_gateway(
    stack: contextlib.ExitStack, broker: Broker, workdir: Path, **env: str
) -> tuple[Child, int]:
    """rcs-gateway with auth on, listening on a free loopback port, stopped by `stack`; it and its port."""
    port = free_port()
    child = service(
        "services.gateway",
        "gateway",
        broker,
        "gateway",
        workdir,
        RCS_HTTP_HOST="127.0.0.1",
        RCS_HTTP_PORT=str(port),
        RCS_AUTH="on",
        **env,
    )
    stack.callback(child.stop)
    return child, port


@dataclass
class Workdir:
    """A benchmark's temporary folder: its config and its services' logs."""

    path: Path
    config: Path
    keep: bool = False  # keep the folder after the run, for its logs

    def check_exits(self, children: Iterable[Child]) -> None:
        """Say which services did not stop cleanly, and keep their logs."""
        unclean = [f"{c.name} exited with {c.exit_code}" for c in children if c.exit_code != 0]
        if unclean:
            print(f"{'; '.join(unclean)}: service logs kept in {self.path}", file=sys.stderr)
            self.keep = True


@contextlib.contextmanager
def bench_workdir(prefix: str, write_config: Callable[[Path], Path]) -> Iterator[Workdir]:
    """A temporary folder with the config `write_config` writes in it, named by RCS_CONFIG (for this
    process and its children) while the block runs; removed afterwards unless the run failed or a
    service exited uncleanly, so their logs stay to read."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    work = Workdir(path, write_config(path))
    previous_config = os.environ.get("RCS_CONFIG")
    os.environ["RCS_CONFIG"] = str(work.config)
    try:
        yield work
    except BaseException:
        print(f"benchmark failed; service logs kept in {path}", file=sys.stderr)
        work.keep = True
        raise
    finally:
        if previous_config is None:
            os.environ.pop("RCS_CONFIG", None)
        else:
            os.environ["RCS_CONFIG"] = previous_config
        if not work.keep:
            shutil.rmtree(path, ignore_errors=True)
