"""When rcs-stack restarts a service that exited: backoff and a crash-loop limit (pure policy).

The backoff is Docker's (what compose's `restart: unless-stopped` does to the same services): the
first restart after `backoff_min_s`, each further one after twice the previous delay up to
`backoff_max_s`; a service that ran `healthy_after_s` before exiting starts over at the minimum.
On top of that, a service that exited more than `max_restarts` times within `window_s` is in a crash
loop: rcs-stack gives up on it (it stays stopped, loudly) instead of retrying forever, while the rest
of the stand keeps running. Docker has no such limit; docs/deployment.md says what that means.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


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
