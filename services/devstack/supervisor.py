"""rcs-stack's supervision: restart a process that exited, with backoff and a crash-loop limit.

`RestartPolicy`/`RestartTracker` are the policy (pure, no clock of their own); `Supervisor` applies
it to the stack's child processes and reports what it does.

The backoff is Docker's (what compose's `restart: unless-stopped` does to the same services): the
first restart after `backoff_min_s`, each further one after twice the previous delay up to
`backoff_max_s`; a service that ran `healthy_after_s` before exiting starts over at the minimum.
On top of that, a service that exited more than `max_restarts` times within `window_s` is in a crash
loop: rcs-stack gives up on it (it stays stopped, loudly) instead of retrying forever, while the rest
of the stand keeps running. Docker has no such limit; docs/deployment.md says what that means.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from services.common import topics
from services.common.audit import event_payload
from services.common.mqtt import MqttClient

log = logging.getLogger("rcs.stack")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    backoff_min_s: float = 0.1
    backoff_max_s: float = 60.0
    healthy_after_s: float = 10.0
    max_restarts: int = 5
    window_s: float = 60.0


class RestartTracker:
    """One service's exits, and the policy's answer to each: restart after a delay, or give up."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._exits: deque[float] = deque()
        self._delay = 0.0  # the last delay given; 0 = none yet (or reset by a healthy run)

    @property
    def restarts_in_window(self) -> int:
        """Exits counted towards the crash-loop limit (within the last `window_s` of the last exit)."""
        return len(self._exits)

    def on_exit(self, *, started: float, exited: float) -> float | None:
        """The delay before restarting a service that ran from `started` to `exited` (monotonic
        seconds), or None when this exit exceeds the crash-loop limit: do not restart it."""
        policy = self._policy
        self._exits.append(exited)
        while self._exits and self._exits[0] <= exited - policy.window_s:
            self._exits.popleft()
        if len(self._exits) > policy.max_restarts:
            return None
        if exited - started >= policy.healthy_after_s:
            self._delay = 0.0
        self._delay = min(policy.backoff_max_s, 2 * self._delay if self._delay else policy.backoff_min_s)
        return self._delay


@dataclass
class Supervised:
    """One child process of the stack, started again by `Supervisor.poll` when it exits."""

    name: str
    command: list[str]
    env: dict[str, str]
    tracker: RestartTracker
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    restart_at: float | None = None  # monotonic time of the next start, while waiting for it
    given_up: bool = False
    exit_code: int | None = None

    def start(self) -> None:
        log.info("starting %s", self.name)
        # Own process group: Ctrl-C reaches only this launcher, which then stops everything in order.
        self.process = subprocess.Popen(self.command, env=self.env, process_group=0)
        self.started = time.monotonic()
        self.restart_at = None

    def state(self) -> dict[str, Any]:
        running = self.process is not None and self.process.poll() is None
        return {
            "state": "running" if running else "given_up" if self.given_up else "restarting",
            "pid": self.process.pid if running and self.process is not None else None,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
        }


def python_module(module: str, *args: str) -> list[str]:
    """The command line running `module` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class Supervisor:
    """Starts the stack's processes and keeps them running; `events` (the stack's MQTT client)
    publishes each exit and restart on rcs/events and every process's state in its retained status."""

    def __init__(self, events: MqttClient | None, policy: RestartPolicy) -> None:
        self.children: list[Supervised] = []
        self._events = events
        self._policy = policy

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        """Run `command` (see `python_module`) as `name`, and keep it running."""
        child = Supervised(name, command, env, RestartTracker(self._policy))
        self.children.append(child)
        child.start()
        self._publish_status()

    def poll(self) -> None:
        """Notice exits and start what is due; call it often."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            waiting = child.restart_at is not None or child.given_up
            if not waiting and process is not None and process.poll() is not None:
                self._exited(child, process.returncode, now)
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                child.start()
                assert child.process is not None
                self._publish(
                    "service_restarted", name=child.name, pid=child.process.pid, restarts=child.restarts
                )
                self._publish_status()

    def _exited(self, child: Supervised, code: int, now: float) -> None:
        child.exit_code = code
        delay = child.tracker.on_exit(started=child.started, exited=now)
        if delay is None:
            child.given_up = True
            log.critical(
                "%s exited (code %s) %d times within %.0f s: crash loop, NOT restarting it; the rest of "
                "the stand keeps running (fix it, then restart rcs-stack)",
                child.name,
                code,
                child.tracker.restarts_in_window,
                self._policy.window_s,
            )
            self._publish(
                "service_given_up", name=child.name, code=code, exits=child.tracker.restarts_in_window
            )
        else:
            child.restart_at = now + delay
            log.error("%s exited (code %s): restarting it in %.1f s", child.name, code, delay)
            self._publish("service_exited", name=child.name, code=code, restart_in_s=delay)
        self._publish_status()

    def stop_all(self) -> None:
        """Stop in reverse start order, each before the next, so no service sees its hardware vanish."""
        for child in reversed(self.children):
            process = child.process
            if process is None:
                continue
            if process.poll() is None:
                log.info("stopping %s", child.name)
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within 10 s; killing it", child.name)
                process.kill()
                process.wait()

    def _publish(self, kind: str, **fields: Any) -> None:
        if self._events is not None:
            self._events.publish(
                topics.events(self._events.login), event_payload("stack", kind, fields), qos=1
            )

    def _publish_status(self) -> None:
        if self._events is not None:
            self._events.set_status(services={child.name: child.state() for child in self.children})
