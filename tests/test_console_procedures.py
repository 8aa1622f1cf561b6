"""The console's procedure, motor and alarm panels in Debian's Chromium, on the whole emulated stand
(tests/browser.py), with the hot fire shortened as in tests/test_hotfire_e2e.py: what the operator
clicks reaches the emulated devices, and what the stand does shows on the page.

Arming is not this panel's: the tests arm over REST with the page's account while its WebSocket sends
the heartbeats. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from services.devstack.broker import Broker
from tests.browser import ARTIFACTS, Consoles, ConsoleStand
from tests.browser import console_stand as running_console_stand
from tests.conftest import wait_until
from tests.processes import TEST_CHECKLIST
from tests.test_hotfire_e2e import short_hotfire_config

TIMEOUT_MS = 30_000
# countdown long enough to hold in it from the page, burn, purge and vent short (step index: ms)
WAITS_MS = {0: 5000, 5: 1500, 8: 800, 10: 400}
# the feed's and the ignition's deadlines longer (as long as the emulated plant needs on a loaded machine
# next to a browser): they end as soon as the pressure is there
TIMEOUTS_MS = {1: 8000, 2: 8000, 4: 8000}
# One plot at 5 frames/s: this module's panels need no more, and Chromium drawing four plots at 30
# frames/s takes the CPU the emulated STM32 (a thread of this process) needs on a small machine.
LIGHT = "channels=P5&hz=5"
# the tests' checklist and a tare of the load cell, which the page offers when it fails
TARE_ITEM = {"id": "tare", "kind": "tare_recent", "channels": ["THRUST"], "max_age_s": 3600}
CHECKLIST = [*TEST_CHECKLIST, TARE_ITEM]

# What the page showed, recorded in the page on every change of the procedure panel (no poll can miss one).
RECORD = """() => {
  window.seen = { steps: new Set(), titles: new Set() };
  const box = document.querySelector('.proc-running');
  const note = () => {
    const current = box.querySelector('li[aria-current=step]');
    if (current) window.seen.steps.add(Number(current.dataset.step));
    window.seen.titles.add(box.querySelector('.proc-title').textContent);
  };
  const all = { subtree: true, childList: true, characterData: true, attributes: true };
  new MutationObserver(note).observe(box, all);
}"""
T_VALUE = """() => {
  const m = /^T([−+])(\\d+):([\\d.]+)$/.exec(document.querySelector('.tclock').textContent);
  return m ? (m[1] === '−' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) : null;
}"""


@pytest.fixture(scope="module")
def console_stand(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStand]:
    """conftest's stand, with the shortened hot fire in actuation and the gateway."""
    tmp = tmp_path_factory.mktemp("console-procedures")
    config = str(short_hotfire_config(tmp, WAITS_MS, TIMEOUTS_MS))
    with running_console_stand(
        broker,
        tmp,
        RCS_CONFIG=config,
        RCS_CHECKLIST=json.dumps(CHECKLIST),
    ) as stand:
        yield stand


def live_operator(consoles: Consoles) -> Page:
    page = consoles.open("operator", query=LIGHT).page
    expect(page.locator("#age")).to_have_text("data live", timeout=TIMEOUT_MS)
    return page


def arm(stand: ConsoleStand) -> None:
    """`POST /api/arm` as the page's operator, retried only while actuation has seen no heartbeat yet."""
    headers = {"Authorization": f"Bearer {stand.token('operator')}"}

    def armed() -> bool:
        answer = httpx.post(stand.url + "/api/arm", headers=headers, timeout=10)
        if answer.status_code == 409 and "no operator heartbeat" in answer.text:
            return False
        assert answer.status_code == 200, answer.text
        return True

    wait_until(armed, 20, "actuation to see the page's heartbeat and arm")


def acknowledge_aborts(page: Page) -> None:
    """Acknowledge every abort the page shows (each console shows the recent ones until its operator
    acknowledges them), one button after the other, once the page has read the recent events."""
    expect(page.locator("html")).to_have_attribute("data-aborts-read", "yes")
    buttons = page.get_by_role("button", name=re.compile("^Acknowledge abort at "))
    while buttons.count():
        buttons.first.click()
    expect(buttons).to_have_count(0)


def test_the_hotfire_started_from_the_page_counts_down_holds_resumes_and_ends_idle(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    page = live_operator(consoles)
    start = page.get_by_role("button", name="Start hotfire", exact=True)
    expect(start).to_be_disabled()  # not armed: says why
    expect(start).to_have_attribute("title", "arm first: hotfire requires an armed stand")
    steps = page.locator(".proc-steps li")
    # the go/no-go checklist (CHECKLIST), each item with its reason; the failing tare offers itself
    expect(page.locator(".check-summary")).to_have_text("NO-GO: 1 of 3 not ready", timeout=TIMEOUT_MS)
    expect(page.locator(".check-items li.nogo")).to_contain_text("THRUST not tared")
    page.get_by_role("button", name="Tare THRUST", exact=True).click()
    expect(page.locator("#answer")).to_contain_text("TARE THRUST done", timeout=TIMEOUT_MS)
    expect(page.locator(".check-summary")).to_have_text("GO: every item ready for arming", timeout=TIMEOUT_MS)
    expect(page.locator(".check-items li.go")).to_have_count(3)
    expect(page.get_by_role("button", name="Tare THRUST", exact=True)).to_have_count(0)
    arm(console_stand)
    expect(page.locator("#state")).to_have_text("ARMED", timeout=TIMEOUT_MS)
    page.evaluate(RECORD)

    start.click()
    expect(page.locator("#answer")).to_contain_text("START hotfire accepted", timeout=TIMEOUT_MS)
    expect(page.locator(".proc-title")).to_contain_text("procedure hotfire · step 1/12 · phase countdown")
    expect(steps).to_have_count(12)
    expect(steps.nth(0)).to_have_attribute("aria-current", "step")
    expect(page.locator(".tclock")).to_contain_text("T−")
    expect(page.locator(".proc-next")).to_contain_text("next step in")
    expect(page.get_by_role("button", name="Start o2cleaning", exact=True)).to_be_disabled()

    # hold in the countdown; the clock stands and the reason shows
    page.get_by_label("Hold reason").fill("pad check")
    page.get_by_role("button", name="Hold", exact=True).click()
    expect(page.locator(".proc-held")).to_contain_text("HELD: ", timeout=TIMEOUT_MS)
    expect(page.locator(".proc-held")).to_contain_text("pad check")
    expect(page.locator(".proc-next")).to_have_text("held")
    expect(page.get_by_role("button", name="Hold", exact=True)).to_have_attribute("title", "already held")
    held_at = page.evaluate(T_VALUE)
    assert held_at is not None and held_at < 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "hotfire-held.png"), full_page=True)

    page.get_by_role("button", name="Resume", exact=True).click()
    expect(page.locator(".proc-held")).to_be_hidden(timeout=TIMEOUT_MS)
    # the countdown runs again: the T-time shown rises toward T-0
    page.wait_for_function(f"() => ({T_VALUE})() > {held_at} + 0.5", timeout=TIMEOUT_MS)
    expect(page.locator(".tclock.after-t0")).to_contain_text("T+", timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Hold", exact=True)).to_have_attribute(
        "title", "past T-0: only abort stops it"
    )
    expect(page.locator("#state")).to_have_text("IDLE", timeout=TIMEOUT_MS)
    expect(page.locator(".proc-title")).to_have_text("No sequence running · procedure hotfire finished")

    seen = page.evaluate("() => ({ steps: [...window.seen.steps], titles: [...window.seen.titles] })")
    # (the last step, all closed, ends the procedure as it is written: it is never shown running)
    assert {1, 4, 6, 9} <= set(seen["steps"]), seen["steps"]
    for phase in ("countdown", "feed", "ignition", "mainstage", "shutdown", "purge", "vent"):
        assert any(f"phase {phase}" in title for title in seen["titles"]), (phase, seen["titles"])
    assert console_stand.devices.stm32.valves == 0, "every valve closed at the device"
    expect(page.locator(".alarm-banner")).to_be_hidden()  # no abort, no alarm


def test_a_motor_moved_from_the_page_reaches_the_arduino(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    page = live_operator(consoles)
    arduino = console_stand.devices.arduino
    step = 1.775 + 1e-6  # the firmware's steps
    page.get_by_label("MOTOR1 target position in degrees").fill("-1500")
    page.get_by_role("button", name="Move MOTOR1 to the target position").click()
    expect(page.locator("#answer")).to_contain_text("MOTOR1 move done", timeout=TIMEOUT_MS)
    assert abs(arduino.positions[0] - -1500.0) <= step, arduino.positions
    position = page.locator('li.motor[data-motor="1"] .motor-position')
    expect(position).to_have_text(f"{arduino.positions[0]:.1f}°", timeout=TIMEOUT_MS)

    before = arduino.positions[1]
    page.get_by_label("MOTOR2 relative move in degrees").fill("90")
    page.get_by_label("MOTOR2 relative move in degrees").press("Enter")  # the keyboard, as a button
    expect(page.locator("#answer")).to_contain_text("MOTOR2 move done", timeout=TIMEOUT_MS)
    assert abs(arduino.positions[1] - (before + 90.0)) <= step, (before, arduino.positions)

    viewer = consoles.open("viewer", query=LIGHT, viewport=(420, 900)).page  # a phone's width too
    move = viewer.get_by_role("button", name="Move MOTOR1 to the target position")
    expect(move).to_be_disabled()
    expect(move).to_have_attribute("title", "bob is a viewer: commands need an operator account")


def test_an_abort_is_shown_until_acknowledged(consoles: Consoles, console_stand: ConsoleStand) -> None:
    page = live_operator(consoles)
    acknowledge_aborts(page)  # those of earlier tests
    page.get_by_role("button", name="Abort", exact=True).click()
    expect(page.locator("#state")).to_have_text("ABORTING", timeout=TIMEOUT_MS)
    banner = page.locator(".alarm-banner")
    expect(banner).to_contain_text("1 alarm to acknowledge: ABORT", timeout=TIMEOUT_MS)
    notice = page.locator(".alarm-item", has_text="ABORT")
    expect(notice).to_contain_text("alice")
    expect(page.locator("#state")).to_have_text("IDLE", timeout=TIMEOUT_MS)  # the abort sequence ended
    expect(notice).to_be_visible()  # and the abort is still shown: nobody acknowledged it
    page.get_by_role("button", name=re.compile("^Acknowledge abort at ")).click()
    expect(banner).to_be_hidden()
    expect(page.locator(".alarm-item")).to_have_count(0)
    assert console_stand.devices.stm32.valves == 0


def test_a_warning_alarm_sounds_shows_until_acknowledged_and_goes(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    page = live_operator(consoles)
    acknowledge_aborts(page)  # those of earlier tests
    viewer = consoles.open("viewer", query=LIGHT).page
    acknowledge_aborts(viewer)  # each console its own: a viewer may too (no command)
    page.keyboard.press("Shift")  # a gesture: the browser lets the page make sound from now on
    html = page.locator("html")
    expect(html).to_have_attribute("data-alarm-sound", "quiet")
    stm32 = console_stand.devices.stm32
    stm32.override("P5", 19.0)  # over P5's warning limit (18 bar); idle and closed: no red-line
    try:
        banner = page.locator(".alarm-banner")
        expect(banner).to_be_visible(timeout=TIMEOUT_MS)
        expect(banner).to_contain_text("1 alarm to acknowledge: WARNING P5 above 18")
        expect(html).to_have_attribute("data-alarm-sound", "sounding")
        ack = page.get_by_role("button", name="Acknowledge warning P5 above 18", exact=True)
        expect(ack).to_be_enabled()
        viewer_ack = viewer.get_by_role("button", name="Acknowledge warning P5 above 18", exact=True)
        expect(viewer_ack).to_be_disabled(timeout=TIMEOUT_MS)
        page.screenshot(path=str(ARTIFACTS / "alarm-active.png"), full_page=False)

        page.get_by_role("button", name="Mute alarm sound").click()
        expect(html).to_have_attribute("data-alarm-sound", "muted")
        expect(page.get_by_role("button", name="Mute alarm sound")).to_have_attribute("aria-pressed", "true")
    finally:
        stm32.override("P5", None)
    # back within the limit: cleared, and still shown until someone acknowledges it
    expect(page.locator(".alarm-item")).to_contain_text("cleared, not acknowledged", timeout=TIMEOUT_MS)
    expect(page.locator(".alarm-banner")).to_be_visible()
    ack.click()
    expect(page.locator("#answer")).to_contain_text("acknowledged", timeout=TIMEOUT_MS)
    expect(page.locator(".alarm-banner")).to_be_hidden(timeout=TIMEOUT_MS)
    expect(page.locator(".alarm-item")).to_have_count(0)
    expect(viewer.locator(".alarm-item")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(html).to_have_attribute("data-alarm-sound", "quiet")
