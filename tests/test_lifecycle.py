"""How a service process stops (services/common/lifecycle.py)."""

from __future__ import annotations

import subprocess
import sys

from services.common.settings import PROJECT_ROOT

# A process whose main thread waits for its stop, as run_service's does, and that receives SIGTERM on
# another thread once the main thread is blocked in that wait: the kernel may hand a process's signal
# to any of its threads (CI saw a logger sleep through its SIGTERM while its report thread forked).
_SIGNALLED_ON_ANOTHER_THREAD = """
import signal, sys, threading
from services.common.lifecycle import stop_requested, wait_for

stop = stop_requested()
main = threading.main_thread().ident

def waiting_in_wait_for() -> bool:
    frame = sys._current_frames().get(main)
    while frame is not None:
        if frame.f_code.co_name == "wait_for" and frame.f_code.co_filename.endswith("lifecycle.py"):
            return True
        frame = frame.f_back
    return False

def terminate_from_here() -> None:
    while not waiting_in_wait_for():
        pass
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

threading.Thread(target=terminate_from_here, daemon=True).start()
wait_for(stop)
print("stopped")
"""


def test_a_service_stops_on_sigterm_received_by_another_thread() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_ON_ANOTHER_THREAD],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr
