"""The console's plots, recordings and events panels (services/gateway/static/js/plots.js, runs.js,
events.js) in Debian's Chromium, on the whole emulated stand (tests/browser.py)."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from typing import Any

import httpx
import msgpack
import pyarrow.parquet as pq
from playwright.sync_api import Page, expect

from services.common import runs as layout
from services.common import topics
from tests.browser import Consoles, ConsoleStand
from tests.conftest import wait_until

TIMEOUT_MS = 20_000
TIMEOUT_S = 20.0
REPORT_TIMEOUT_S = 180.0  # rcs-analyze report is a process of its own: slow on a loaded machine


def _next_frames(page: Page) -> None:
    """Two animation frames later: uPlot takes the cursor's position in an animation frame."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _drag_across(page: Page, plot: str, start: float, end: float) -> None:
    """Drag over the plot area of `plot` from `start` to `end` (fractions of its width)."""
    over = page.locator(plot + " .u-over").first
    over.scroll_into_view_if_needed()  # the mouse acts within the viewport
    _next_frames(page)
    box = over.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    _next_frames(page)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * (start + end) / 2, y, steps=4)
    page.mouse.move(box["x"] + box["width"] * end, y, steps=4)
    _next_frames(page)
    page.mouse.up()


def _api(stand: ConsoleStand, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stand.token('operator')}"}
    return httpx.request(method, stand.url + path, headers=headers, timeout=TIMEOUT_S, **kwargs)


def test_plots_receive_data_the_window_goes_to_10_minutes_with_history_and_zoom_pauses(
    consoles: Consoles,
) -> None:
    page = consoles.open("operator", query="channels=P1,P5,THRUST,Tbogaz1").page
    grid = page.locator("#plots")
    expect(page.locator("#plots .plot")).to_have_count(4)
    page.wait_for_function("() => Number(document.getElementById('plots').dataset.points) > 50")
    # limits from the stand's configuration are on the plots: P5 has a warning and a red-line
    expect(page.locator('#plots .plot[data-channel="P5"]')).to_have_attribute("data-limits", "2")

    with page.expect_response(lambda r: "/api/history?seconds=600&" in r.url) as answered:
        page.select_option("#plot-window", "600")
    history = answered.value.json()
    assert history["n_source"] > 0 and history["t"], "the ring buffer gave no history"
    expect(page.locator("#h-plots")).to_contain_text("Last 10 min")
    # the plots start where the history starts (not at the first live frame), and keep going live
    page.wait_for_function(
        "first => Math.abs(Number(document.getElementById('plots').dataset.first) - first) < 1",
        arg=history["t"][0],
    )
    last = float(grid.get_attribute("data-last") or 0)
    page.wait_for_function(f"() => Number(document.getElementById('plots').dataset.last) > {last}")

    # a drag zooms every plot, pauses them, and reads the span again from the ring buffer
    with page.expect_response(lambda r: "/api/history?seconds=" in r.url and r.ok):
        _drag_across(page, '#plots .plot[data-channel="P5"]', 0.6, 0.9)
    expect(page.locator("#plot-status")).to_contain_text("zoomed", timeout=TIMEOUT_MS)
    expect(page.locator("#plot-pause")).to_have_attribute("aria-pressed", "true")
    # the detail read is applied (or given up) and drawn: the next two animation frames have run
    expect(page.locator("#plot-status")).to_contain_text(re.compile("buckets of|no finer detail"))
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    frozen = grid.get_attribute("data-last")
    # frames keep arriving (the latest values move on) while what the plots show stays put
    shown = "() => [...document.querySelectorAll('#values .value')].map(v => v.textContent).join()"
    before = page.evaluate(shown)
    page.wait_for_function(f"before => ({shown})() !== before", arg=before)
    assert grid.get_attribute("data-last") == frozen
    page.click("#plot-pause")  # live again
    expect(page.locator("#plot-pause")).to_have_attribute("aria-pressed", "false")
    page.wait_for_function(f"() => document.getElementById('plots').dataset.last !== '{frozen}'")


def test_a_recording_opens_plots_its_whole_length_zoom_rereads_and_downloads(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    saved = _api(console_stand, "POST", "/api/save_sensor_buffer")
    assert saved.status_code == 200, saved.text
    name = saved.json()["file"]
    rows = pq.ParquetFile(console_stand.data_dir / name).metadata.num_rows

    page = consoles.open("operator", query="channels=P5,THRUST").page
    row = page.locator(f'#recordings tr[data-recording="{name}"]')
    expect(row).to_be_visible()
    with page.expect_response(lambda r: f"/api/parquet_files/{name}/series?" in r.url) as answered:
        row.get_by_role("button", name="plot").click()
    whole = answered.value.json()
    assert whole["n_source"] == rows, "the whole length is every sample of the file"
    viewer = page.locator("#viewer")
    expect(viewer).to_have_attribute("data-reads", "1")
    expect(page.locator("#viewer .plot")).to_have_count(2)
    expect(page.locator("#viewer-status")).to_contain_text("whole length")

    with page.expect_response(lambda r: "/series?" in r.url and "start=" in r.url) as zoomed:
        _drag_across(page, '#viewer .plot[data-channel="P5"]', 0.4, 0.6)
    detail = zoomed.value.json()
    assert whole["start"] < detail["start"] < detail["end"] < whole["end"]
    assert 0 < detail["n_source"] < rows
    expect(viewer).to_have_attribute("data-reads", "2")
    expect(page.locator("#viewer-status")).to_contain_text("zoomed")
    expect(page.locator("#viewer-whole")).to_be_enabled()

    with page.expect_download() as download:
        page.click("#download-csv")
    path = download.value.path()
    table = list(csv.reader(io.StringIO(path.read_text())))
    assert table[0] == ["timestamp", "seq", "session", "P5", "THRUST"]
    assert len(table) - 1 == detail["n_source"], "the CSV holds the samples of the span shown"
    with page.expect_download() as download:
        page.click("#download-parquet")
    assert pq.ParquetFile(download.value.path()).metadata.num_rows == rows

    page.click("#viewer-whole")
    expect(viewer).to_have_attribute("data-reads", "3")
    expect(page.locator("#viewer-status")).to_contain_text("whole length")


def test_the_events_log_shows_who_did_what_with_the_result_and_filters(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    page = consoles.open("operator").page
    refused = _api(console_stand, "POST", "/api/valves", json={"valves": [0, 0, 0, 0, 0, 0, 0, 0, 1]})
    assert refused.status_code == 409, refused.text
    # the run valves, open then closed: accepted (or, on a loaded machine, not acknowledged in time)
    answers = [
        _api(console_stand, "POST", "/api/valves", json={"valves": bits})
        for bits in ([0, 0, 0, 0, 0, 0, 1, 1, 0], [0] * 9)
    ]
    accepted = sum(a.status_code == 200 for a in answers)

    events = page.locator("#events tr")
    refusal = events.filter(has_text="refused").filter(has_text="alice").first
    expect(refusal).to_be_visible(timeout=TIMEOUT_MS)
    expect(refusal.locator(".reason")).to_contain_text("igniter-needs-armed")
    expect(refusal.locator(".what")).to_contain_text("valves")
    expect(refusal.locator(".who")).to_have_text("alice")
    expect(events.filter(has_text="alice")).to_have_count(3, timeout=TIMEOUT_MS)
    expect(events.filter(has_text="alice").filter(has_text="accepted")).to_have_count(accepted)
    if answers[0].status_code == 200:  # the valves changed: actuation's `valves` event marks the plots
        expect(events.filter(has_text="valves 000000110")).to_have_count(1)
        page.wait_for_function(
            "() => JSON.parse(document.getElementById('plots').dataset.markers || '{}').valve >= 1"
        )
    # an event of another kind, by another login: what the filters must leave out
    note = {"ts": time.time(), "service": "operator", "kind": "note", "text": "console review"}
    console_stand.devices.operator.publish(topics.events("operator"), msgpack.packb(note), qos=1)
    expect(page.locator('#events tr[data-kind="note"]')).to_contain_text("console review")

    with page.expect_response(lambda r: "/api/events?" in r.url and "kind=command" in r.url):
        page.select_option("#events-kind", "command")
    expect(page.locator('#events tr:not([data-kind="command"])')).to_have_count(0)
    expect(events.filter(has_text="alice")).to_have_count(3)

    page.select_option("#events-kind", "")
    with page.expect_response(lambda r: "/api/events?" in r.url and "who=alice" in r.url):
        page.select_option("#events-who", "alice")
    expect(page.locator('#events tr:not([data-who="alice"])')).to_have_count(0)
    expect(events).to_have_count(3)


def _recorded_run(stand: ConsoleStand, page: Page, name: str) -> dict[str, Any]:
    """A run of about a second started and stopped from `page` (an operator's); its run.json once its
    report was tried."""
    page.get_by_label("run name").fill(name)
    page.get_by_label("run notes").fill("console review")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#run-now")).to_contain_text(f"Recording run {name} by alice")
    expect(page.get_by_label("run name")).to_be_hidden()  # one run at a time
    listed = page.locator("#runs tr", has_text=name)
    expect(listed.locator(".result")).to_have_text("running")
    run_id = listed.get_attribute("data-run")
    assert run_id is not None
    stm32 = stand.devices.stm32
    run_valves = [0, 0, 0, 0, 0, 0, 1, 1, 0]  # GOX2, FUEL2: opened, then closed
    assert _api(stand, "POST", "/api/valves", json={"valves": run_valves}).status_code == 200
    wait_until(lambda: stm32.valves == 0b011000000, TIMEOUT_S, "the STM32 driving GOX2 and FUEL2")
    assert _api(stand, "POST", "/api/valves", json={"valves": [0] * 9}).status_code == 200
    wait_until(lambda: stm32.valves == 0, TIMEOUT_S, "the STM32 closing them")
    one_second = stm32.samples_generated + round(stm32.rate_hz)
    wait_until(lambda: stm32.samples_generated >= one_second, TIMEOUT_S, "a second of the run")
    page.get_by_role("button", name="Stop run").click()
    expect(page.locator("#answer")).to_contain_text(f"run {name} stopped")
    expect(page.get_by_role("button", name="Start run")).to_be_visible()
    path = layout.run_dir(stand.data_dir, run_id) / layout.RUN_JSON

    def reported() -> bool:
        return path.exists() and json.loads(path.read_text())["report"]["status"] != "pending"

    wait_until(reported, REPORT_TIMEOUT_S, f"run {run_id} recorded and its report tried")
    run: dict[str, Any] = json.loads(path.read_text())
    return run


def test_a_run_started_and_stopped_from_the_page_is_listed_its_report_opens_and_it_plots(
    consoles: Consoles, console_stand: ConsoleStand
) -> None:
    operator = consoles.open("operator", query="channels=P5&hz=5").page  # light: two pages share the CPU
    run = _recorded_run(console_stand, operator, "Console review")
    assert run["started_by"] == "alice" and run["stopped_by"] == "alice" and run["notes"] == "console review"
    assert run["report"]["status"] == "generated", run["report"]
    expect(operator.locator(f'#runs tr[data-run="{run["id"]}"] .result')).to_have_text("stopped")
    page = consoles.open("viewer", query="channels=P5").page
    expect(page.get_by_role("button", name="Start run")).to_be_disabled()  # a viewer's page
    row = page.locator(f'#runs tr[data-run="{run["id"]}"]')
    expect(row).to_contain_text("Console review")
    expect(row.locator(".result")).to_have_text("stopped")
    expect(row).to_contain_text(" s")  # its duration

    row.get_by_role("button", name="report").click()
    report = page.frame_locator("#report iframe")
    expect(report.locator("body")).to_contain_text("Console review", timeout=TIMEOUT_MS)

    with page.expect_response(lambda r: f"/api/runs/{run['id']}/series?" in r.url) as answered:
        row.get_by_role("button", name="plot").click()
    assert answered.value.json()["n_source"] == run["samples"], "the whole run: every sample"
    expect(page.locator("#viewer .plot")).to_have_count(1)
    # its valve changes (and the run's other events) are marked on the plot
    events = _api(console_stand, "GET", f"/api/runs/{run['id']}/events").json()
    during = [e for e in events["events"] if e["ts"] >= run["started_at"] and e.get("kind") == "valves"]
    assert [e["open"] for e in during] == [["GOX2", "FUEL2"], []] and events["notes"] == [], events
    # the valves opened and closed, at least
    expect(page.locator("#viewer")).to_have_attribute("data-markers", re.compile(r"^([2-9]|\d\d+)$"))
    with page.expect_download() as download:
        page.click("#download-parquet")
    assert pq.ParquetFile(download.value.path()).metadata.num_rows == run["samples"]
