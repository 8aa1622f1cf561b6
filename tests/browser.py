"""The operator console in a real browser, on the whole emulated stand.

`console_stand`: real Mosquitto (the session broker), the STM32 and Arduino emulators behind ptys,
rcs-acquisition, rcs-actuation, rcs-logger and rcs-gateway as processes (the gateway on a free
loopback port, with two named accounts: `alice` operator, `bob` viewer). `chromium`: Debian's
Chromium driven by Playwright's Python package (never `playwright install`). `Consoles`: pages opened
as an account, whose console errors and page errors fail the test, and whose screenshots land in
`test-artifacts/console/<test>.png`. The fixtures (tests/conftest.py) are module-scoped where they
can be: one stand and one browser per test module, a fresh browser context (own storage) per page.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Literal

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    expect,
    sync_playwright,
)

from services.common.settings import PROJECT_ROOT, load_settings
from services.devstack.broker import Broker, free_port
from tests.conftest import wait_until
from tests.processes import Gateway, Logger
from tests.test_actuation_e2e import Stand, running_stand
from tests.test_gateway_rest import add_account

TIMEOUT = 20.0
START_TIMEOUT = 60.0  # a process's imports alone can take this long on a loaded 2-core machine
ACK_TIMEOUT_MS = "8000"
GATEWAY_TIMEOUT_S = "10"  # its bound (gateway.command_timeout_s)
RATE_HZ = "1000"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "console"
ACCOUNTS = {"alice": "operator", "bob": "viewer"}
Role = Literal["operator", "viewer"]

expect.set_options(timeout=TIMEOUT * 1000)  # liveness bounds, as wait_until's: a loaded machine is slow


def _gateway_up(url: str) -> bool:
    try:
        httpx.get(url + "/api/health", timeout=2)
    except httpx.HTTPError:
        return False
    return True


class ConsoleStand:
    """What `console_stand` yields: the stand, and a gateway that can be restarted on its port."""

    def __init__(
        self,
        broker: Broker,
        tmp: Path,
        devices: Stand,
        stack: ExitStack,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
    ) -> None:
        accounts = tmp / "gateway-accounts"
        self.tokens = {name: add_account(accounts, name, role) for name, role in ACCOUNTS.items()}
        self.devices = devices
        self._broker = broker
        self._tmp = tmp
        self._stack = stack
        self.data_dir = data_dir  # the logger's recordings and runs, which the gateway serves
        self._env = {
            "RCS_DATA_DIR": str(data_dir),
            "RCS_HTTP_HOST": "127.0.0.1",
            "RCS_AUTH": "on",
            "RCS_GATEWAY_SECRETS_FILE": str(accounts),
            # longer than actuation's ack deadline: the page sees actuation's verdict, not a timeout
            "RCS_GATEWAY_COMMAND_TIMEOUT_S": GATEWAY_TIMEOUT_S,
        } | (env or {})
        self.port = free_port()
        self._starts = 0
        self.gateway = self._start_gateway()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, role: Role) -> str:
        return self.tokens[next(name for name, r in ACCOUNTS.items() if r == role)]

    def _start_gateway(self) -> Gateway:
        self._starts += 1
        gateway = self._stack.enter_context(
            Gateway(
                self._broker.settings("gateway"), self._tmp, self.port, f"gateway-{self._starts}", **self._env
            )
        )

        def up() -> bool:
            assert gateway.alive(), f"the gateway exited:\n{gateway.tail()}"
            return _gateway_up(self.url)

        wait_until(up, START_TIMEOUT, "the gateway to answer")
        return gateway

    def stop_gateway(self) -> None:
        """SIGTERM, and a clean exit asserted; the port stays this stand's."""
        code = self.gateway.stop()
        assert code == 0, f"gateway exited with code {code}:\n{self.gateway.tail()}"

    def start_gateway(self) -> None:
        self.gateway = self._start_gateway()


@contextmanager
def console_stand(broker: Broker, tmp: Path, **env: str) -> Iterator[ConsoleStand]:
    """The whole emulated stand with its gateway, on the session broker; everything stopped on leaving.
    `env` goes to actuation and the gateway (e.g. `RCS_CONFIG`: a stand.yaml with a shorter hot fire).

    At RATE_HZ samples/s (every process and the emulator read it from the environment): what the
    console shows is the same at 1 kHz, and a browser next to the stand loads the machine enough.
    """
    data_dir = tmp / "data"
    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        patch.setenv("RCS_ACQUISITION_RATE_HZ", RATE_HZ)
        settings = load_settings().model_copy(update={"mqtt": broker.settings("operator")})
        # a loaded machine (a browser next to the stand) can exceed the default ack deadline
        actuation_env = {"RCS_ACTUATION_ACK_TIMEOUT_MS": ACK_TIMEOUT_MS} | env
        devices = stack.enter_context(running_stand(settings, broker.settings, tmp, **actuation_env))
        stack.enter_context(Logger(broker.settings("logger"), tmp, data_dir))
        yield ConsoleStand(broker, tmp, devices, stack, data_dir, env=env)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium (never a downloaded one), headless."""
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


class ConsolePage:
    """A page of the console; every console error and uncaught page error it shows is recorded."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.errors: list[str] = []
        self._allowed: list[re.Pattern[str]] = []
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self._allowed):
            self.errors.append(f"console error: {message.text}")

    def _on_page_error(self, error: Error) -> None:
        self.errors.append(f"page error: {error}")

    def allow_console_error(self, pattern: str) -> None:
        """Console errors matching `pattern` are expected from here on (e.g. a WebSocket failing to
        connect while the test has stopped the gateway)."""
        self._allowed.append(re.compile(pattern))


class Consoles:
    """Opens console pages as an account; on `close`, screenshots and the no-errors check."""

    def __init__(self, browser: Browser, stand: ConsoleStand, test_name: str) -> None:
        self.browser = browser
        self.stand = stand
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.pages: list[ConsolePage] = []

    def open(
        self, role: Role | None = "operator", *, query: str = "", viewport: tuple[int, int] = (1366, 900)
    ) -> ConsolePage:
        """The console at `/?query`, logged in as the account of `role` (by `#token=`, as `make run`
        prints it), or not logged in (`None`); returns once the page says who is logged in."""
        context = self.browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        context.set_default_timeout(TIMEOUT * 1000)
        page = ConsolePage(context, context.new_page())
        self.pages.append(page)
        fragment = f"#token={self.stand.token(role)}" if role else ""
        page.page.goto(f"{self.stand.url}/{'?' + query if query else ''}{fragment}")
        if role:
            account = next(name for name, r in ACCOUNTS.items() if r == role)
            page.page.wait_for_function(
                "name => document.getElementById('who').textContent.includes(name)", arg=account
            )
        return page

    def close(self) -> list[str]:
        """Screenshots of every page (`<test>.png`, `<test>-2.png`…), contexts closed; the errors seen."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        for n, page in enumerate(self.pages, start=1):
            suffix = "" if n == 1 else f"-{n}"
            try:
                page.page.screenshot(path=str(ARTIFACTS / f"{self.name}{suffix}.png"), full_page=True)
            finally:
                page.context.close()
            errors += page.errors
        return errors
