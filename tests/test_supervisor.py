"""rcs-stack's restart policy (Docker's backoff, reset by a healthy run, and a crash-loop limit), and
the Supervisor applying it to real processes."""

from __future__ import annotations

import os
from pathlib import Path

from services.devstack.supervisor import RestartPolicy, RestartTracker, Supervisor, python_module
from tests.conftest import wait_until

POLICY = RestartPolicy(
    backoff_min_s=0.1, backoff_max_s=1.0, healthy_after_s=10.0, max_restarts=5, window_s=60.0
)


def test_backoff_doubles_up_to_its_maximum() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=100, backoff_max_s=1.0))
    delays = [tracker.on_exit(started=t, exited=t + 0.5) for t in range(7)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_a_healthy_run_resets_the_backoff() -> None:
    tracker = RestartTracker(POLICY)
    assert tracker.on_exit(started=0.0, exited=1.0) == 0.1
    assert tracker.on_exit(started=1.1, exited=2.0) == 0.2
    assert tracker.on_exit(started=2.2, exited=30.0) == 0.1  # ran 27.8 s: healthy


def test_a_crash_loop_is_given_up_after_max_restarts_within_the_window() -> None:
    tracker = RestartTracker(POLICY)
    exits = [tracker.on_exit(started=float(i), exited=i + 0.5) for i in range(6)]
    assert all(delay is not None for delay in exits[:5])
    assert exits[5] is None
    assert tracker.restarts_in_window == 6


def test_exits_older_than_the_window_do_not_count() -> None:
    tracker = RestartTracker(POLICY)
    for i in range(5):
        assert tracker.on_exit(started=i * 20.0, exited=i * 20.0 + 1) is not None
    # five exits, but only those of the last 60 s count: never a crash loop at one exit per 20 s
    assert tracker.on_exit(started=100.0, exited=101.0) is not None
    assert tracker.restarts_in_window <= 3


def test_a_crash_looping_process_is_given_up_while_its_sibling_keeps_running(tmp_path: Path) -> None:
    """Real processes: an emulator started with a bad argument exits at once, every time; the one
    beside it must be neither stopped nor restarted, and the stop still stops it."""
    supervisor = Supervisor(None, RestartPolicy(backoff_min_s=0.01, backoff_max_s=0.05, max_restarts=1))
    env = dict(os.environ)
    try:
        supervisor.start(
            "healthy", python_module("services.emulators.stm32", "--link", str(tmp_path / "stm32")), env
        )
        supervisor.start("broken", python_module("services.emulators.stm32", "--no-such-option"), env)
        healthy, broken = supervisor.children

        def gave_up() -> bool:
            supervisor.poll()
            return broken.given_up

        wait_until(gave_up, 30, "the crash loop to be given up")
        assert broken.restarts == 1 and broken.exit_code == 2
        assert broken.state()["state"] == "given_up"
        assert healthy.restarts == 0 and healthy.state()["state"] == "running"
        supervisor.poll()
        assert broken.restarts == 1, "restarted after giving up"
    finally:
        supervisor.stop_all()
    assert healthy.process is not None and healthy.process.returncode == 0
