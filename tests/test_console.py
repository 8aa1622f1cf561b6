"""The operator console (services/gateway/static) in Debian's Chromium, on the whole emulated stand
(tests/browser.py): what the operator sees and what reaches the STM32 when they click."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser import Consoles

TIMEOUT_MS = 20_000


def test_the_page_loads_without_errors_and_the_plots_receive_data(consoles: Consoles) -> None:
    console = consoles.open("operator")
    page = console.page
    expect(page.locator("#who")).to_contain_text("alice (operator)")
    expect(page.locator("#conn")).to_have_text("connected")
    expect(page.locator("#age")).to_have_text("data live", timeout=TIMEOUT_MS)
    # a plot drew a line: uPlot's series paths are on a canvas; the buffer behind them has points
    page.wait_for_function("() => document.querySelectorAll('.plot canvas').length >= 4")
    known = "[...document.querySelectorAll('#values .value')].filter(v => v.textContent !== '—')"
    page.wait_for_function(f"() => {known}.length >= 20")
