"""The operator console (services/gateway/static) in Debian's Chromium, on the whole emulated stand
(tests/browser.py): what the operator sees, and what reaches the STM32 when they click or type.

What reached the STM32 is read from the emulator's receive tap; who commanded what from actuation's
audit events. Every wait is a liveness bound, not a timing assertion.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import Consoles, ConsoleStand
from tests.conftest import wait_until
from tests.test_actuation_e2e import Stand

TIMEOUT = 20.0
TIMEOUT_MS = 20_000
ABORT_DONE_S = 30.0
ARM_ATTEMPTS = 5  # the emergency sequence takes ~7.5 s of waits


def idle(stand: Stand) -> None:
    """The stand idle with every valve closed (a previous test's abort sequence finished)."""
    wait_until(lambda: stand.system_state() == "idle", ABORT_DONE_S, "the stand to be idle")
    valves = stand.seen.state("rcs/state/valves")
    if valves.get("bits") != "000000000":
        stand.call("valves", valves="000000000")


def commands_by(stand: Stand, command: str, who: str) -> list[dict[str, Any]]:
    return [e for e in stand.seen.events_of("command") if e.get("command") == command and e.get("who") == who]


# A viewer's page forcing a command: its own token on a WebSocket of its own, and on the REST API.
FORCED_VALVE_COMMAND = """() => new Promise((resolve) => {
    const ws = new WebSocket("ws://" + location.host + "/ws");
    const token = localStorage.getItem("rcs.token");
    ws.onopen = () => ws.send(JSON.stringify({type: "auth", token}));
    ws.onmessage = (ev) => {
        if (typeof ev.data !== "string") return;  // telemetry (MessagePack)
        const m = JSON.parse(ev.data);
        const command = {type: "valve_command", name: "PURGE1", open: true};
        if (m.type === "authenticated") ws.send(JSON.stringify(command));
        if (m.type === "error" || m.type === "valve_response") { ws.close(); resolve(m); }
    };
})"""
FORCED_REST_COMMAND = """() => fetch("/api/valves", {
    method: "POST",
    headers: {
        "Content-Type": "application/json",
        Authorization: "Bearer " + localStorage.getItem("rcs.token"),
    },
    body: JSON.stringify({valves: "001000000"}),
}).then((r) => r.status)"""


def valve(page: Page, name: str) -> Any:
    return page.get_by_role("button", name=name, exact=True)


def arm_from_the_page(page: Page, stand: Stand) -> None:
    """Arm and its confirmation; again only while actuation refuses it for not having seen the page's
    heartbeat yet (a fresh page on a loaded machine), as test_actuation_e2e's armed_console does."""
    for _ in range(ARM_ATTEMPTS):
        before = len(commands_by(stand, "arm", "alice"))
        page.get_by_role("button", name="Arm", exact=True).click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("deadman")  # the confirmation names the consequences
        dialog.get_by_role("button", name="Arm", exact=True).click()

        def answered(n: int = before) -> bool:
            return len(commands_by(stand, "arm", "alice")) > n

        wait_until(answered, TIMEOUT, "actuation's verdict on arm")
        verdict = commands_by(stand, "arm", "alice")[-1]
        if verdict.get("accepted") is not False:
            return
        assert "heartbeat" in str(verdict.get("reason")), verdict
    pytest.fail(f"arm refused {ARM_ATTEMPTS} times for the page's heartbeat")


def test_the_page_loads_without_errors_and_the_plots_receive_data(consoles: Consoles) -> None:
    page = consoles.open("operator").page
    expect(page.locator("#who")).to_contain_text("alice (operator)")
    expect(page.locator("#conn")).to_have_text("connected")
    expect(page.locator("#age")).to_have_text("data live", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelectorAll('.plot canvas').length >= 4")
    known = "[...document.querySelectorAll('#values .value')].filter(v => v.textContent !== '—')"
    page.wait_for_function(f"() => {known}.length >= 20")
    # the sensors at their places in the schematic, and every part of the health panel known
    expect(page.locator("#channel-P5 .channel-value")).to_contain_text("bar", timeout=TIMEOUT_MS)
    for part in (
        "broker",
        "svc-acquisition",
        "svc-actuation",
        "svc-logger",
        "stm32",
        "arduino",
        "ring",
        "disk",
        "file",
    ):
        expect(page.locator(f'[data-part="{part}"]')).to_have_class("health-row ok", timeout=TIMEOUT_MS)
    expect(page.locator("#command-block")).to_have_text("")


def test_a_valve_click_reaches_the_stm32_and_the_page_shows_the_acknowledged_state(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    stand = console_stand.devices
    idle(stand)
    page = consoles.open("operator").page
    purge = valve(page, "PURGE1")
    expect(purge).to_have_attribute("aria-pressed", "false")
    purge.click()  # a purge valve: no confirmation
    wait_until(lambda: stand.mask("001000000") in stand.writes.seen(), TIMEOUT, "PURGE1 open at the STM32")
    expect(purge).to_have_attribute("aria-pressed", "true")
    expect(purge).to_have_attribute("aria-busy", "false")
    expect(page.locator("#answer")).to_contain_text("open PURGE1: acknowledged by the STM32")
    # by keyboard: focus it and press Enter
    purge.focus()
    page.keyboard.press("Enter")
    expect(purge).to_have_attribute("aria-pressed", "false")
    assert stand.seen.state("rcs/state/valves").get("bits") == "000000000"
    assert commands_by(stand, "valve", "alice"), "actuation audited the clicks as alice's"


def test_a_refused_click_shows_the_reason_and_the_valve_stays_shown_closed(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    stand = console_stand.devices
    idle(stand)
    page = consoles.open("operator").page
    gox1 = valve(page, "GOX1")
    gox1.click()
    dialog = page.get_by_role("dialog")  # an isolation valve: confirm first
    expect(dialog).to_contain_text("GOX1 is an isolation valve")
    dialog.get_by_role("button", name="Open GOX1").click()
    refusal = page.locator("#valve-refusals")
    expect(refusal).to_contain_text("GOX1 refused: ")
    expect(refusal).to_contain_text("isolation-needs-armed")
    expect(gox1).to_have_attribute("aria-pressed", "false")
    expect(gox1.locator(".valve-state")).to_have_text("closed")
    expect(page.locator("#answer")).to_contain_text("REFUSED")
    assert not any(m & stand.mask("010000000") for m in stand.writes.seen())
    # cancelling the confirmation sends nothing
    refused_before = len(commands_by(stand, "valve", "alice"))
    gox1.click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert len(commands_by(stand, "valve", "alice")) == refused_before


def test_abort_by_button_and_by_keyboard_aborts(consoles: Consoles, console_stand: ConsoleStand) -> None:
    stand = console_stand.devices
    idle(stand)
    page = consoles.open("operator").page
    arm_from_the_page(page, stand)
    wait_until(lambda: stand.system_state() == "armed", TIMEOUT, "the stand armed from the page")
    expect(page.locator("#state")).to_have_text("ARMED")

    page.get_by_role("button", name="Abort", exact=True).click()  # no confirmation
    wait_until(lambda: len(commands_by(stand, "abort", "alice")) == 1, TIMEOUT, "the button's abort")
    expect(page.locator("#state")).to_have_text("ABORTING")
    # the keyboard shortcut, with the focus anywhere on the page (here: nowhere in particular)
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("Alt+KeyA")
    wait_until(lambda: len(commands_by(stand, "abort", "alice")) == 2, TIMEOUT, "the shortcut's abort")
    assert all(e.get("accepted") is not False for e in commands_by(stand, "abort", "alice"))
    idle(stand)


def test_a_viewers_page_cannot_command(consoles: Consoles, console_stand: ConsoleStand) -> None:
    stand = console_stand.devices
    idle(stand)
    console = consoles.open("viewer")
    page = console.page
    expect(page.locator("#who")).to_contain_text("bob (viewer)")
    expect(page.locator("#age")).to_have_text("data live", timeout=TIMEOUT_MS)
    for name in ("Arm", "Disarm", "Abort"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    expect(page.locator("#command-block")).to_contain_text("bob is a viewer")
    purge = valve(page, "PURGE1")
    expect(purge).to_have_attribute("aria-disabled", "true")
    writes = len(stand.writes.seen())
    purge.click(force=True)  # aria-disabled: only a forced click gets through to the page
    expect(page.locator("#answer")).to_contain_text("PURGE1 NOT SENT: bob is a viewer")
    # forced: the page's own token on a WebSocket of its own, as a script on the page could do
    refused = page.evaluate(FORCED_VALVE_COMMAND)
    assert refused["type"] == "error" and "operator" in refused["data"], refused
    console.allow_console_error(r"status of 403 \(Forbidden\)")  # the forced REST command's answer
    status = page.evaluate(FORCED_REST_COMMAND)
    assert status == 403
    assert len(stand.writes.seen()) == writes
    assert stand.seen.state("rcs/state/valves").get("bits") == "000000000"


def test_the_page_recovers_after_the_gateway_restarts(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    console = consoles.open("operator")
    page = console.page
    expect(page.locator("#age")).to_have_text("data live", timeout=TIMEOUT_MS)
    # while the gateway is away the browser reports the failed reconnections
    console.allow_console_error(r"WebSocket connection to .* failed")
    console.allow_console_error(r"Failed to load resource: net::ERR_CONNECTION_REFUSED")
    console_stand.stop_gateway()
    expect(page.locator("#conn")).not_to_have_text("connected")
    expect(page.get_by_role("button", name="Arm", exact=True)).to_be_disabled()
    expect(page.locator("#command-block")).to_contain_text("not connected")
    console_stand.start_gateway()
    expect(page.locator("#conn")).to_have_text("connected", timeout=TIMEOUT_MS)
    expect(page.locator("#who")).to_contain_text("alice (operator)")
    expect(page.locator("#age")).to_have_text("data live", timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Arm", exact=True)).to_be_enabled()


def test_a_tablet_sees_every_panel_without_scrolling_sideways(consoles: Consoles) -> None:
    page = consoles.open("operator", viewport=(820, 1180)).page
    expect(page.locator("#age")).to_have_text("data live", timeout=TIMEOUT_MS)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    for name in ("Arm", "Disarm", "Abort", "GOX1", "IGNITION"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()


def test_login_with_a_named_account(consoles: Consoles, console_stand: ConsoleStand) -> None:
    page = consoles.open(None).page
    expect(page.locator("#who")).to_have_text("not logged in")
    expect(page.get_by_role("button", name="Arm", exact=True)).to_be_disabled()
    page.get_by_label("token").fill(console_stand.tokens["bob"])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_have_text("bob (viewer)")
    expect(page.locator("#command-block")).to_contain_text("bob is a viewer")
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#who")).to_have_text("not logged in")
    expect(page.get_by_label("token")).to_be_visible()
