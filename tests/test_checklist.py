"""The go/no-go checklist: its evaluators are pure functions of a snapshot, and stand.yaml's
`checklist:` is validated at start with one line per problem naming the file and the item."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from pydantic import TypeAdapter, ValidationError

from services.actuation.checklist import EVALUATORS, Snapshot, answer, evaluate, refusal
from services.common.settings import ChecklistItem, Settings, describe_problems, load_settings

NOW = 1_800_000_000.0
ITEM: TypeAdapter[ChecklistItem] = TypeAdapter(ChecklistItem)


def item(**fields: object) -> ChecklistItem:
    return ITEM.validate_python({"id": "x", **fields})


def judge(fields: Mapping[str, object], **snapshot: object) -> tuple[bool, str]:
    (state,) = evaluate([item(**fields)], Snapshot(now=NOW, **snapshot))  # type: ignore[arg-type]
    return state.ok, state.reason


ONLINE = {"state": "online"}


def test_every_kind_of_stand_yaml_has_an_evaluator() -> None:
    kinds = {i.kind for i in load_settings().checklist}
    assert kinds <= set(EVALUATORS)
    assert set(EVALUATORS) == {
        "services_online",
        "stm32_connected",
        "logger_recording",
        "channel_range",
        "valves_closed",
        "tare_recent",
    }


def test_services_online() -> None:
    fields = {"kind": "services_online", "services": ["acquisition", "logger"]}
    assert judge(fields, statuses={"acquisition": ONLINE, "logger": ONLINE}) == (
        True,
        "online: acquisition, logger",
    )
    offline = {"acquisition": ONLINE, "logger": {"state": "offline", "reason": "connection lost"}}
    assert judge(fields, statuses=offline) == (False, "offline: logger (connection lost)")
    assert judge(fields, statuses={}) == (False, "offline: acquisition (no status), logger (no status)")


def test_stm32_connected_and_its_protocol() -> None:
    binary = {"kind": "stm32_connected", "protocol": "binary"}
    up = {"connected": True, "link": "up", "protocol": "binary", "kind": "emulator"}
    assert judge(binary, stm32=up) == (True, "STM32 connected (binary protocol, emulator)")
    assert judge(binary, stm32=up | {"protocol": "text"}) == (
        False,
        "STM32 speaks the text protocol, binary needed",
    )
    assert judge({"kind": "stm32_connected"}, stm32=up | {"protocol": "text"})[0] is True
    assert judge(binary, stm32=up | {"connected": False, "link": "silent"}) == (
        False,
        "STM32 not connected (link silent)",
    )
    assert judge(binary) == (False, "no STM32 link state from acquisition")


def test_logger_recording_with_free_disk() -> None:
    fields = {"kind": "logger_recording", "min_free_disk_gb": 2.0}
    status = {"logger": {"state": "online", "disk": "ok", "behind_s": None}}
    answer_ = {"disk_free_bytes": 5e9, "data_dir": "/data"}
    assert judge(fields, statuses=status, logger=answer_) == (True, "recording, 5.0 GB free")
    assert judge(fields, statuses=status, logger={**answer_, "disk_free_bytes": 1e9}) == (
        False,
        "1.0 GB free in /data, 2 GB needed",
    )
    assert judge(fields, statuses=status, logger="no reply from rcs/rpc/logger/status within 1.0 s")[1] == (
        "no status from the logger: no reply from rcs/rpc/logger/status within 1.0 s"
    )
    failing = {"logger": {"state": "online", "disk": "error", "disk_error": "ENOSPC"}}
    assert judge(fields, statuses=failing, logger=answer_) == (False, "logger cannot write: ENOSPC")
    behind = {"logger": {"state": "online", "disk": "ok", "behind_s": 7.2}}
    assert judge(fields, statuses=behind, logger=answer_) == (False, "logger 7 s behind the telemetry")
    assert judge(fields, logger=answer_) == (False, "logger offline")


def test_channel_range_on_recent_values_only() -> None:
    fields = {"kind": "channel_range", "channel": "P7", "min": 35.0, "max": 55.0}
    assert judge(fields, values={"P7": 45.0}, values_age_s=0.01) == (True, "P7 45 within 35 … 55")
    assert judge(fields, values={"P7": 12.5}, values_age_s=0.01) == (False, "P7 12.5 outside 35 … 55")
    assert judge(fields, values={"P7": 45.0}, values_age_s=3.0) == (False, "no recent telemetry of P7")
    assert judge(fields, values={}, values_age_s=0.01) == (False, "P7 has no value")
    assert (
        judge({"kind": "channel_range", "channel": "P7", "max": 1.0}, values={"P7": 0.5}, values_age_s=0)[1]
        == "P7 0.5 within -inf … 1"
    )


def test_valves_closed_by_name_role_or_all() -> None:
    open_ = {"PURGE1": "purge", "GOX1": "isolation"}
    assert judge({"kind": "valves_closed"}, open_valves=open_) == (False, "PURGE1, GOX1 may be open")
    assert judge({"kind": "valves_closed", "valves": ["isolation"]}, open_valves=open_) == (
        False,
        "GOX1 may be open",
    )
    assert judge({"kind": "valves_closed", "valves": ["FUEL1", "igniter"]}, open_valves=open_) == (
        True,
        "closed",
    )
    assert judge({"kind": "valves_closed"}) == (True, "every valve closed")


def test_tare_recent() -> None:
    fields = {"kind": "tare_recent", "channels": ["THRUST", "P5"], "max_age_s": 3600}
    fresh = {"THRUST": {"at": NOW - 60}, "P5": {"at": NOW - 10}}
    assert judge(fields, tare=fresh) == (True, "THRUST, P5 tared within 60 min")
    stale = {"THRUST": {"at": NOW - 5 * 3600}}
    assert judge(fields, tare=stale) == (
        False,
        "THRUST tared 5.0 h ago, P5 not tared (at most 60 min old): tare them",
    )


def test_refusal_names_every_failing_item_and_the_answer_keeps_their_order() -> None:
    items = [
        item(id="valves", kind="valves_closed"),
        item(id="stm32", kind="stm32_connected"),
        item(id="tare", kind="tare_recent", channels=["THRUST"], max_age_s=60, label="THRUST tared"),
    ]
    states = evaluate(items, Snapshot(now=NOW, open_valves={"PURGE1": "purge"}))
    assert refusal(states) == (
        "checklist: valves: PURGE1 may be open; stm32: no STM32 link state from acquisition; "
        "tare: THRUST not tared (at most 60 s old): tare them"
    )
    result = answer(states, NOW)
    assert result["ok"] is False and result["ts"] == NOW
    assert result["items"][2] == {
        "id": "tare",
        "label": "THRUST tared",
        "kind": "tare_recent",
        "ok": False,
        "reason": "THRUST not tared (at most 60 s old): tare them",
        "tare": ["THRUST"],
    }
    assert result["items"][0]["label"] == "valves"  # no label: the id
    assert refusal(evaluate([], Snapshot(now=NOW))) is None


@pytest.mark.parametrize(
    ("checklist", "problem"),
    [
        ([{"id": "a", "kind": "weather"}], "checklist.0: Input tag 'weather' found using 'kind'"),
        (
            [{"id": "a", "kind": "channel_range", "channel": "P99", "min": 1}],
            "checklist.0 (a): unknown channel 'P99'",
        ),
        ([{"id": "a", "kind": "channel_range", "channel": "P7"}], "give 'min', 'max' or both"),
        (
            [{"id": "a", "kind": "tare_recent", "channels": ["ISP"], "max_age_s": 60}],
            "checklist.0 (a): ['ISP'] are not measured channels",
        ),
        ([{"id": "a", "kind": "valves_closed", "valves": ["GOX9"]}], "unknown valves or roles ['GOX9']"),
        (
            [{"id": "a", "kind": "valves_closed"}, {"id": "a", "kind": "valves_closed"}],
            "id 'a' is used 2 times",
        ),
        ([{"id": "a", "kind": "services_online", "services": []}], "checklist.0.services_online.services"),
    ],
)
def test_a_bad_checklist_is_one_line_naming_the_file_and_the_item(
    monkeypatch: pytest.MonkeyPatch, checklist: list[dict[str, object]], problem: str
) -> None:
    monkeypatch.setenv("RCS_CHECKLIST", json.dumps(checklist))
    with pytest.raises(ValidationError) as error:
        Settings()
    lines = describe_problems(error.value).splitlines()
    assert len(lines) == 1 and problem in lines[0], lines
    assert lines[0].startswith("/") and "stand.yaml: " in lines[0]
