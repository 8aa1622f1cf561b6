"""Console benchmark: telemetry frame → painted in the operator console, and the page's CPU, with the
stand at 10 kHz and 8 plots at 30 frames/s.

Starts its own Mosquitto on a free loopback port (the project's config and ACL, generated logins),
the STM32 emulator (10 kHz × 22 channels, 10 ms batches), rcs-acquisition and rcs-gateway as child
processes (bench/measure.py), then Debian's Chromium (headless, through Playwright's Python package;
never a downloaded browser) on `/?channels=<8 channels>&hz=30&window=<s>` with a viewer token. The
page subscribes to every channel in `display` mode at 30 frames/s, as an operator's does.

For each plotted window (30 s, the default, and 10 min) it measures, over `--seconds`:

- frame → painted: from the moment the page received a `sensor_display` frame (performance.now() in
  its `onmessage`) to the first task after the animation frame that drew it into the 8 plots ran
  (static/js/bench.js, `window.rcsBench`), p50 and p99 over every frame drawn;
- sample → painted: from the UNIX time of the newest sample in that frame (the emulator's device
  clock, anchored to this host by acquisition) to the same moment on the page's clock (one host);
- the page's CPU: Chromium's own accounting over the window (CDP `Performance.getMetrics`:
  `TaskDuration` = the renderer main thread busy, `ScriptDuration` = running JavaScript), as % of one
  core; and the gateway's CPU from /proc.

Everything it starts is stopped (browser, gateway, acquisition, emulator, broker). Writes
bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from measure import RESULTS, acquiring_stand, cpu_seconds, start_gateway, wait_until
from playwright.sync_api import Browser, sync_playwright

CHANNELS = ("P1", "P2", "P3", "P5", "T1", "Tbogaz1", "THRUST", "D1")  # 8 plots
WINDOWS_S = (30, 600)
VIEWER_TOKEN = "bench-viewer-token-0123456789"
TIMEOUT_S = 60.0
HZ = 30


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless; closed on leaving."""
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "n": 0}
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "n": len(a),
    }


def metrics(session: Any) -> dict[str, float]:
    answer = session.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in answer["metrics"]}


def measure(browser: Browser, url: str, window_s: int, seconds: float, gateway_pid: int) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        query = f"channels={','.join(CHANNELS)}&hz={HZ}&window={window_s}"
        page.goto(f"{url}/?{query}#token={VIEWER_TOKEN}")
        page.wait_for_function(
            "() => window.rcsBench && window.rcsBench.frames > 60", timeout=TIMEOUT_S * 1000
        )
        page.wait_for_function(
            "() => document.querySelectorAll('#plots .plot').length === 8", timeout=TIMEOUT_S * 1000
        )
        session = context.new_cdp_session(page)
        session.send("Performance.enable", {"timeDomain": "threadTicks"})
        page.evaluate(
            "() => { rcsBench.painted.length = 0; rcsBench.sampleAge.length = 0; rcsBench.frames = 0; }"
        )
        before, wall0, gateway0 = metrics(session), time.monotonic(), cpu_seconds(gateway_pid)
        time.sleep(seconds)
        after, wall = metrics(session), time.monotonic() - wall0
        gateway_cpu = 100 * (cpu_seconds(gateway_pid) - gateway0) / wall
        bench = page.evaluate(
            "() => ({painted: rcsBench.painted, sampleAge: rcsBench.sampleAge, frames: rcsBench.frames})"
        )
        points = int(page.evaluate("() => Number(document.getElementById('plots').dataset.points)"))
        if errors:
            raise RuntimeError(f"the page failed: {errors[0]}")
        return {
            "window_s": window_s,
            "plots": len(CHANNELS),
            "buckets_per_plot": points,
            "frames_drawn": bench["frames"],
            "frames_drawn_per_s": round(bench["frames"] / wall, 1),
            "frame_to_painted_ms": percentiles(bench["painted"]),
            "sample_to_painted_ms": percentiles(bench["sampleAge"]),
            "page_cpu_percent": {
                "task": round(100 * (after["TaskDuration"] - before["TaskDuration"]) / wall, 1),
                "script": round(100 * (after["ScriptDuration"] - before["ScriptDuration"]) / wall, 1),
                "layout_and_style": round(
                    100
                    * (
                        after["LayoutDuration"]
                        - before["LayoutDuration"]
                        + after["RecalcStyleDuration"]
                        - before["RecalcStyleDuration"]
                    )
                    / wall,
                    1,
                ),
            },
            "page_js_heap_mb": round(after["JSHeapUsedSize"] / 2**20, 1),
            "gateway_cpu_percent": round(gateway_cpu, 1),
            "seconds": round(wall, 1),
        }
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement per window")
    parser.add_argument("--windows", type=int, nargs="*", default=list(WINDOWS_S), help="plotted windows (s)")
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)  # the machine is shared: how busy it was
    workdir = Path(tempfile.mkdtemp(prefix="rcs-bench-dashboard-"))
    runs = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        broker, _emulator, _acquisition = acquiring_stand(stack, workdir)
        gateway, http_port = start_gateway(
            stack,
            broker,
            workdir,
            RCS_VIEWER_TOKEN=VIEWER_TOKEN,
            RCS_OPERATOR_TOKEN="bench-operator-token-unused-0123",
        )
        url = f"http://127.0.0.1:{http_port}"

        def answers() -> bool:  # any status: /api/health is 503 while the stand has problems
            try:
                httpx.get(url + "/api/health", timeout=2)
            except httpx.HTTPError:
                return False
            return True

        wait_until(answers, "the gateway", TIMEOUT_S)
        browser = stack.enter_context(chromium())
        for window_s in args.windows:
            run = measure(browser, url, window_s, args.seconds, gateway.pid)
            runs.append(run)
            print(
                f"window {window_s:4d} s, 8 plots: frame->painted p50 {run['frame_to_painted_ms']['p50']} ms "
                f"p99 {run['frame_to_painted_ms']['p99']} ms, sample->painted p50 "
                f"{run['sample_to_painted_ms']['p50']} ms p99 {run['sample_to_painted_ms']['p99']} ms, "
                f"{run['frames_drawn_per_s']} frames/s, page CPU {run['page_cpu_percent']['task']} % "
                f"(script {run['page_cpu_percent']['script']} %), gateway CPU {run['gateway_cpu_percent']} %"
            )
    results = {
        "load_average_1min_before": load_before,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "telemetry": "10 kHz x 22 channels, 10 ms batches (STM32 emulator, binary protocol)",
        "page": (
            f"headless Debian Chromium, 1600x1200, {len(CHANNELS)} plots {','.join(CHANNELS)}, "
            f"display frames {HZ}/s"
        ),
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'dashboard.json'}")


if __name__ == "__main__":
    main()
