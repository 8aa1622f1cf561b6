"""Valve patterns and interlocks: what a pattern means, which patterns are refused, which configs are."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.actuation.interlocks import Interlocks, Refusal
from services.actuation.valve_map import ValveMap
from services.common.settings import Settings, load_settings

STAND = load_settings()
VALVES = ValveMap(STAND)
GOX1, FUEL1, IGNITION = (VALVES.mask_of([name]) for name in ("GOX1", "FUEL1", "IGNITION"))


def interlocks_of(overrides: dict[str, Any]) -> Interlocks:
    """The stand's interlocks with some keys of stand.yaml replaced (sequences: merged by name)."""
    settings = Settings.model_validate(overrides)
    return Interlocks(settings, ValveMap(settings))


def test_patterns_are_in_valve_order() -> None:
    assert VALVES.count == 9
    assert VALVES.parse("010000000") == GOX1 == 1 << 1
    assert VALVES.parse([0, 1, 0, 0, 1, 0, 0, 0, 1]) == GOX1 | FUEL1 | IGNITION
    assert VALVES.format(GOX1 | IGNITION) == "010000001"
    assert VALVES.as_list(FUEL1) == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert VALVES.open_names(VALVES.parse("100001110")) == ["RELIEF1", "RELIEF2", "GOX2", "FUEL2"]
    assert VALVES.with_valve(GOX1, "FUEL1", True) == GOX1 | FUEL1
    assert VALVES.with_valve(GOX1 | FUEL1, "GOX1", False) == FUEL1
    assert VALVES.with_valve(0, "GOX1", False) == 0


@given(st.integers(0, (1 << 9) - 1))
def test_format_and_parse_are_inverse(mask: int) -> None:
    assert VALVES.parse(VALVES.format(mask)) == mask
    assert VALVES.parse(VALVES.as_list(mask)) == mask


def test_names_and_roles() -> None:
    assert VALVES.mask_of(["isolation"]) == GOX1 | FUEL1
    assert VALVES.mask_of(["igniter", "GOX1"]) == IGNITION | GOX1
    assert VALVES.open_names(VALVES.mask_of(["purge", "relief"])) == [
        "RELIEF1",
        "PURGE1",
        "PURGE2",
        "RELIEF2",
    ]
    assert VALVES.mask_of([]) == 0


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("01000000", "has 8 digits, expected 9 (one per valve: RELIEF1, GOX1,"),
        ("0100000000", "has 10 digits, expected 9"),
        ("01000000x", "may only contain 0 and 1"),
        ("0100 0000", "may only contain 0 and 1"),
        ([0, 1, 0, 0, 0, 0, 0, 0, 2], "may only contain 0 and 1"),
        ([0, 1, 0, 0, 0, 0, 0, 0, True], "may only contain 0 and 1"),
        ([0, 1], "has 2 digits, expected 9"),
    ],
)
def test_bad_patterns_say_what_is_wrong(pattern: str | list[int], message: str) -> None:
    with pytest.raises(ValueError, match="valve pattern") as caught:
        VALVES.parse(pattern)
    assert message in str(caught.value)


def test_a_bad_pattern_is_never_repeated_in_the_error() -> None:
    huge: list[str | list[int]] = ["1" * 100_000, [7] * 100_000]
    for pattern in huge:
        with pytest.raises(ValueError, match="valve pattern") as caught:
            VALVES.parse(pattern)
        assert len(str(caught.value)) < 200


def test_bad_masks_names_and_roles_are_refused() -> None:
    with pytest.raises(ValueError, match="valve mask 512 is out of range for 9 valves"):
        VALVES.format(512)
    with pytest.raises(ValueError, match="out of range"):
        VALVES.as_list(-1)
    with pytest.raises(ValueError, match="unknown valve or role 'gox1'"):
        VALVES.mask_of(["gox1"])
    with pytest.raises(ValueError, match="unknown valve 'NOPE'"):
        VALVES.with_valve(0, "NOPE", True)


def test_a_refusal_reads_as_a_sentence() -> None:
    assert str(Refusal("isolation-needs-armed", "GOX1 needs arming")) == (
        "refused by interlock isolation-needs-armed: GOX1 needs arming"
    )


def test_shipped_rules_keep_isolation_valves_and_igniter_closed_unless_armed() -> None:
    interlocks = Interlocks(STAND, VALVES)
    for mask in (GOX1, FUEL1, GOX1 | FUEL1, GOX1 | VALVES.mask_of(["run"])):
        refusal = interlocks.check(mask, armed=False)
        assert refusal is not None and refusal.rule == "isolation-needs-armed"
        assert interlocks.check(mask, armed=True) is None
    refusal = interlocks.check(IGNITION | VALVES.mask_of(["purge"]), armed=False)
    assert refusal == Refusal("igniter-needs-armed", "IGNITION may only open while the stand is armed")
    assert interlocks.check(IGNITION, armed=True) is None
    # the first configured rule that trips is the one reported
    first = interlocks.check(GOX1 | IGNITION, armed=False)
    assert first is not None and first.rule == "igniter-needs-armed"


@given(st.integers(0, (1 << 9) - 1))
def test_unarmed_patterns_are_refused_exactly_when_they_open_isolation_or_igniter(mask: int) -> None:
    danger = GOX1 | FUEL1 | IGNITION
    assert (Interlocks(STAND, VALVES).check(mask, armed=False) is not None) == bool(mask & danger)
    assert Interlocks(STAND, VALVES).check(mask, armed=True) is None


def test_match_all_and_rules_that_hold_even_when_armed() -> None:
    interlocks = interlocks_of(
        {
            "interlocks": [
                {
                    "name": "no-double-vent",
                    "reason": "one relief at a time",
                    "valves": ["relief"],
                    "match": "all",
                    "requires_armed": False,
                },
                {"name": "purge-armed", "reason": "purge only when armed", "valves": ["PURGE1", "PURGE2"]},
            ]
        }
    )
    both_reliefs = VALVES.parse("100001000")
    assert interlocks.check(VALVES.parse("100000000"), armed=True) is None
    for armed in (False, True):
        refusal = interlocks.check(both_reliefs, armed=armed)
        assert refusal is not None and refusal.rule == "no-double-vent"
    refusal = interlocks.check(VALVES.parse("000100000"), armed=False)
    assert refusal is not None and refusal.rule == "purge-armed"
    assert interlocks.check(VALVES.parse("000100000"), armed=True) is None


def test_shipped_sequences_pass_and_the_abort_sequence_is_never_refused() -> None:
    interlocks = Interlocks(STAND, VALVES)
    interlocks.validate_sequences()
    interlocks.validate_guards()
    for step in STAND.sequences[STAND.abort_sequence_name].steps:
        assert interlocks.check(VALVES.parse(str(step.valves)), armed=False) is None


def test_a_sequence_that_forgot_requires_armed_is_refused_by_name() -> None:
    interlocks = interlocks_of(
        {"sequences": {"o2feed": {"requires_armed": False}, "burning": {"requires_armed": False}}}
    )
    with pytest.raises(ValueError, match="sequences refused by the interlocks") as caught:
        interlocks.validate_sequences()
    message = str(caught.value)
    assert (
        "sequence 'o2feed' may run unarmed, but step 1/2 (010000000) would be refused by interlock" in message
    )
    assert "sequence 'burning' may run unarmed, but step 1/3 (010010101)" in message
    assert "(set requires_armed: true)" in message
    assert "fuelfeed" not in message and "cleaning" not in message


def test_the_abort_sequence_is_checked_against_rules_that_hold_when_armed() -> None:
    rule = {"name": "no-double-vent", "reason": "one relief at a time", "valves": ["relief"], "match": "all"}
    interlocks = interlocks_of({"interlocks": [rule | {"requires_armed": False}]})
    with pytest.raises(ValueError, match=r"sequence 'emergency' step 2/7 \(100001000\) would be refused"):
        interlocks.validate_sequences()
    # a rule that only needs arming does not apply to the abort sequence
    interlocks_of({"interlocks": [rule]}).validate_sequences()


def test_interlocks_must_guard_every_isolation_valve_and_the_igniter() -> None:
    with pytest.raises(ValueError, match="no interlock keeps GOX1, FUEL1, IGNITION closed"):
        interlocks_of({"interlocks": []}).validate_guards()
    together = {"name": "not-together", "reason": "r", "valves": ["GOX1", "FUEL1"], "match": "all"}
    igniter = {"name": "igniter", "reason": "r", "valves": ["igniter"]}
    with pytest.raises(ValueError, match="no interlock keeps GOX1, FUEL1 closed"):
        interlocks_of({"interlocks": [together, igniter]}).validate_guards()
