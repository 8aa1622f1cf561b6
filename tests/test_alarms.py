"""Alarms: the acknowledge lifecycle, and the warning limits that raise them (no abort)."""

from __future__ import annotations

from services.actuation.alarms import AlarmBook, AlarmState
from services.actuation.core import SystemState
from services.actuation.redlines import RedlineMonitor
from services.common.settings import Redline, load_settings
from tests.test_redlines import p5

STAND = load_settings()
P5_WARN = Redline(channel="P5", above=18.0, persistence_ms=50, states=("idle",))


def states(book: AlarmBook) -> list[tuple[int, AlarmState]]:
    return [(alarm.id, alarm.state) for alarm in book.alarms]


def test_active_acknowledged_then_cleared_is_gone() -> None:
    book = AlarmBook()
    assert book.raise_limit("warning", P5_WARN, 19.0, 100.0)
    assert not book.raise_limit("warning", P5_WARN, 20.0, 100.1)  # one alarm per limit
    (alarm,) = book.alarms
    assert (alarm.id, alarm.key, alarm.value, alarm.state) == (
        1,
        "warning P5 above 18",
        19.0,
        AlarmState.ACTIVE_UNACKNOWLEDGED,
    )
    assert book.acknowledge(1, "alice", 101.0) is None
    assert book.alarms[0].acknowledged_by == "alice" and states(book) == [(1, AlarmState.ACTIVE_ACKNOWLEDGED)]
    assert book.acknowledge(1, "bob", 102.0) == "alarm 1 is already acknowledged (by alice)"
    assert book.clear_limit("warning", P5_WARN, 103.0) and book.alarms == ()
    assert (
        book.acknowledge(1, "bob", 104.0) == "no alarm 1 (it may have cleared and been acknowledged already)"
    )


def test_a_cleared_unacknowledged_alarm_stays_until_acknowledged_and_may_come_back() -> None:
    book = AlarmBook()
    book.raise_limit("redline", P5_WARN, 30.0, 1.0)
    assert book.clear_limit("redline", P5_WARN, 2.0)
    assert states(book) == [(1, AlarmState.CLEARED_UNACKNOWLEDGED)] and book.alarms[0].cleared_ts == 2.0
    assert book.raise_limit("redline", P5_WARN, 31.0, 3.0)  # back before anyone acknowledged it
    assert states(book) == [(1, AlarmState.ACTIVE_UNACKNOWLEDGED)]
    book.clear_limit("redline", P5_WARN, 4.0)
    assert book.acknowledge(1, "alice", 5.0) is None and book.alarms == ()
    assert book.raise_limit("redline", P5_WARN, 32.0, 6.0) and states(book) == [
        (2, AlarmState.ACTIVE_UNACKNOWLEDGED)
    ]


def test_the_shipped_warning_limits_raise_and_clear_alarms_in_any_state() -> None:
    warnings = RedlineMonitor(STAND, STAND.warning_limits)
    book = AlarmBook()
    assert warnings.check(p5([19.0] * 600), SystemState.IDLE) is not None
    assert book.follow("warning", warnings, None, {"P5": 19.0}, 1.0)
    assert [a.key for a in book.alarms] == ["warning P5 above 18"]
    assert warnings.check(p5([5.0] * 100, seq=600), SystemState.IDLE) is None
    assert book.follow("warning", warnings, None, {"P5": 5.0}, 2.0)
    assert states(book) == [(1, AlarmState.CLEARED_UNACKNOWLEDGED)]
