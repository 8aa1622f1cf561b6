"""The run lifecycle (services/actuation/runs.py): one active run, who commanded, and the run a test
procedure starts and ends by itself, `post_s` after it (after its abort). Plain logic: the sequence
progress and state the control thread would pass in, times given."""

from __future__ import annotations

import pytest

from services.actuation.core import SequenceProgress, SystemState
from services.actuation.runs import RunBook, run_id
from services.common import runs as layout
from services.common.settings import Settings, load_settings

T0 = 1_796_170_000.0  # UNIX s: 2026-12-02T00:06:40Z
POST_S = 5.0


@pytest.fixture
def book() -> RunBook:
    base = load_settings()
    settings: Settings = base.model_copy(update={"runs": base.runs.model_copy(update={"post_s": POST_S})})
    return RunBook(settings)


def hotfire(step: int = 1, name: str = "hotfire") -> SequenceProgress:
    return SequenceProgress(name, step, 12, abort=False, started=0.0, armed=True, procedure=True)


def test_run_ids_are_sortable_file_names_and_unique() -> None:
    assert run_id("Cold flow #3 / GOX", T0, set()) == "20261202T000640Z-cold-flow-3-gox"
    assert run_id("../..", T0, set()) == "20261202T000640Z-run"
    taken = {"20261202T000640Z-a", "20261202T000640Z-a-2"}
    assert run_id("a", T0, taken) == "20261202T000640Z-a-3"
    assert all(layout.valid_id(run_id(name, T0, set())) for name in ("x" * 300, "ÄÖ", "a--b", "-"))


def test_one_run_at_a_time_and_its_operators(book: RunBook) -> None:
    assert book.start("leak check", "GOX line", "alice", T0) is None
    book.commanded("alice")
    book.commanded("bob")
    book.commanded("alice")
    assert book.start("another", "", "bob", T0 + 1) == f"run {book.active.id} is active: stop it first"  # type: ignore[union-attr]
    assert book.stop("20200101T000000Z-x", "bob", T0 + 2).startswith("run 20200101T000000Z-x is not active")  # type: ignore[union-attr]
    assert book.stop(None, "bob", T0 + 3) is None
    assert book.active is None and book.last is not None
    record = book.last.record()
    assert (record["operators"], record["result"], record["stopped_by"]) == (
        ["alice", "bob"],
        "stopped",
        "bob",
    )
    assert (record["started_at"], record["ended_at"], record["auto"]) == (T0, T0 + 3, False)
    assert book.stop(None, "bob", T0 + 4) == "no run is active"
    assert book.state(T0 + 4)["active"] is None and book.state(T0 + 4)["last"]["id"] == record["id"]


def test_a_test_procedure_starts_its_run_and_ends_it_post_s_after_it_finished(book: RunBook) -> None:
    book.commanded("alice")  # who started the procedure
    assert book.follow(hotfire(1), SystemState.RUNNING, 100.0, T0) is True
    assert book.active is not None and book.active.auto and book.active.started_by == "alice"
    assert not book.follow(hotfire(12), SystemState.RUNNING, 110.0, T0 + 10)
    assert not book.follow(None, SystemState.IDLE, 111.0, T0 + 11)  # ended idle: completed
    assert book.next_due() == 111.0 + POST_S
    assert not book.follow(None, SystemState.IDLE, 115.9, T0 + 15.9)
    assert book.follow(None, SystemState.IDLE, 116.0, T0 + 16)
    assert book.last is not None
    assert (book.last.result, book.last.stopped_by, book.last.ended_at) == (
        "completed",
        "procedure hotfire",
        T0 + 16,
    )
    assert book.next_due() is None


def test_an_abort_ends_the_run_aborted_post_s_after_the_abort_ended(book: RunBook) -> None:
    book.follow(hotfire(5), SystemState.RUNNING, 100.0, T0)
    emergency = SequenceProgress("emergency", 1, 7, abort=True, started=101.0, armed=False, procedure=True)
    book.follow(emergency, SystemState.ABORTING, 101.0, T0 + 1)
    assert book.next_due() is None, "no tail while aborting"
    book.follow(emergency, SystemState.ABORTING, 108.0, T0 + 8)
    book.follow(None, SystemState.IDLE, 108.5, T0 + 8.5)
    assert book.next_due() == 108.5 + POST_S
    book.follow(None, SystemState.IDLE, 113.5, T0 + 13.5)
    assert book.last is not None and book.last.result == "aborted"


def test_a_cancelled_procedure_ends_its_run_cancelled(book: RunBook) -> None:
    book.follow(hotfire(1), SystemState.RUNNING, 100.0, T0)
    book.follow(None, SystemState.ARMED, 101.0, T0 + 1)  # cancel before T-0: back to armed
    book.follow(None, SystemState.ARMED, 106.0, T0 + 6)
    assert book.last is not None and book.last.result == "cancelled"


def test_a_procedure_joins_an_operators_run_which_the_operator_ends(book: RunBook) -> None:
    assert book.start("campaign day 3", "", "alice", T0) is None
    book.follow(hotfire(1), SystemState.RUNNING, 100.0, T0 + 1)
    assert book.active is not None and book.active.procedure == "hotfire" and not book.active.auto
    # not while the procedure runs: its record would end mid-procedure (found by test_core's machine)
    assert book.stop(None, "alice", T0 + 2) == "procedure hotfire is running: its run ends 5 s after it"
    book.follow(None, SystemState.IDLE, 110.0, T0 + 10)
    book.follow(None, SystemState.IDLE, 200.0, T0 + 100)
    assert book.active is not None, "the operator's run goes on"
    assert book.stop(None, "alice", T0 + 101) is None
    assert book.last is not None and book.last.result == "completed"


def test_other_sequences_start_no_run(book: RunBook) -> None:
    o2feed = SequenceProgress("o2feed", 1, 2, abort=False, started=0.0, armed=False)
    assert not book.follow(o2feed, SystemState.RUNNING, 100.0, T0)
    assert book.active is None
