"""Shared fixtures: a real Mosquitto (the project's config and ACL on a free loopback port, with
generated passwords for every user of mosquitto/acl) and settings for it.

`mqtt_settings` logs in as `operator` (people's tools: read everything, requests, events, no valve
commands); `mqtt_as(user)` gives any user's settings and `anonymous_mqtt_settings` the read-only
anonymous login. Publish as the user whose job it is: only `actuation` may command valves, only
`acquisition` may publish telemetry, and a service's status topic belongs to the user of that name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings as hypothesis_settings
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from services.common.settings import MqttSettings, Settings, load_settings
from services.devstack.broker import BASE_ACL, Broker

if TYPE_CHECKING:  # tests.browser imports this module (wait_until): imported inside the fixtures below
    from playwright.sync_api import Browser

    from tests.browser import Consoles, ConsoleStand

# Tests check behaviour, not timing (bench/ measures that): no hypothesis deadline, which a loaded
# machine trips on an example that takes 0.1 ms when run again.
hypothesis_settings.register_profile("rcs", deadline=None)
hypothesis_settings.load_profile("rcs")

# Test-only grants, around (never instead of) the project's ACL: the MQTT client tests publish on
# topics and under service names of their own, partly anonymously. Nothing here touches a topic the
# system uses. Anonymous lines must come before the project's first `user` line; the `user operator`
# block adds to the project's operator rules. tests/test_broker_acl.py checks the project ACL alone.
TEST_ACL_ANONYMOUS = """\
# --- test-only (tests/conftest.py) ---
topic readwrite rcs/test/#
topic write rcs/status/test-victim

"""
TEST_ACL_USERS = """

# --- test-only (tests/conftest.py) ---
user operator
topic write rcs/test/#
topic write rcs/status/test-stopper
topic write rcs/status/test-status-fields
"""


def acl_for_tests() -> str:
    """The project's ACL with the test-only grants above."""
    return TEST_ACL_ANONYMOUS + BASE_ACL.read_text() + TEST_ACL_USERS


def new_broker(*, acl: str | None = None) -> Broker:
    """A broker (not started) with generated credentials; `acl` text, else the test ACL."""
    try:
        return Broker(acl=acl_for_tests() if acl is None else acl)
    except FileNotFoundError as exc:
        pytest.fail(f"{exc}: the tests need a real broker; run `make test`, which installs it", pytrace=False)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One mosquitto for the whole session; never stop it from a test (use `restartable_broker`)."""
    instance = new_broker()
    instance.start()
    yield instance
    instance.close()


# Retained messages a service leaves behind (its status, the states it owns), by the user who owns them.
RETAINED_BY_OWNER = {
    "acquisition": ("rcs/status/acquisition", "rcs/state/stm32", "rcs/telemetry/sensors/meta"),
    "actuation": (
        "rcs/status/actuation",
        "rcs/state/valves",
        "rcs/state/system",
        "rcs/state/motors",
        "rcs/state/alarms",
        "rcs/state/run",
    ),
    "logger": ("rcs/status/logger",),
    "gateway": ("rcs/status/gateway",),
    "operator": ("rcs/status/operator",),
}


@pytest.fixture(scope="module", autouse=True)
def _fresh_retained_state(broker: Broker) -> None:
    """Each test module starts (before its own fixtures) without the retained statuses and states that
    earlier modules' services left on the shared broker (a stale "actuation offline" would, rightly,
    make acquisition close the valves)."""
    for user, retained in RETAINED_BY_OWNER.items():
        client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        login = broker.settings(user)
        assert login.password is not None
        client.username_pw_set(user, login.password.get_secret_value())
        client.connect(login.host, login.port)
        client.loop_start()
        try:
            for topic in retained:
                client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()


@pytest.fixture
def restartable_broker() -> Iterator[Broker]:
    """A broker of the test's own, free to be stopped and started again on the same port."""
    instance = new_broker()
    instance.start()
    yield instance
    instance.close()


@pytest.fixture
def mqtt_settings(broker: Broker) -> MqttSettings:
    """The session broker as the `operator` user."""
    return broker.settings("operator")


@pytest.fixture
def mqtt_as(broker: Broker) -> Callable[[str], MqttSettings]:
    """`mqtt_as("actuation")`: the session broker as that user (see mosquitto/acl for the users)."""
    return broker.settings


@pytest.fixture
def anonymous_mqtt_settings(broker: Broker) -> MqttSettings:
    """The session broker without a login: read-only."""
    return broker.settings(None)


@pytest.fixture
def settings(mqtt_settings: MqttSettings) -> Settings:
    """The project's stand configuration, pointed at the session broker (as `operator`)."""
    return load_settings().model_copy(update={"mqtt": mqtt_settings})


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` until true; fail the test after `timeout` seconds (a liveness bound only)."""
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# -- the operator console in a real browser (tests/browser.py) -------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium through Playwright, one per test module."""
    from tests.browser import chromium  # noqa: PLC0415 (tests.browser imports this module)

    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def console_stand(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStand]:
    """The whole emulated stand with its gateway (tests/browser.py), one per test module."""
    from tests.browser import console_stand as running  # noqa: PLC0415 (tests.browser imports this module)

    with running(broker, tmp_path_factory.mktemp("console")) as stand:
        yield stand


@pytest.fixture
def consoles(
    browser: Browser, console_stand: ConsoleStand, request: pytest.FixtureRequest
) -> Iterator[Consoles]:
    """`consoles.open("operator" | "viewer" | None)`: console pages; the test fails on any console or
    page error they showed; screenshots in test-artifacts/console/<test>.png."""
    from tests.browser import Consoles  # noqa: PLC0415 (tests.browser imports this module)

    opened = Consoles(browser, console_stand, request.node.name)
    yield opened
    errors = opened.close()
    assert not errors, "the console showed errors:\n" + "\n".join(errors)
