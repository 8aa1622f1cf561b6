"""rcs-ctl: command the stand from a terminal (MQTT request/response to actuation).

Actuation's audit records each command as the `operator` login's (what the broker proves), with
your `--who` (default user@host) beside it as `claimed_who`.
Arming needs operator heartbeats, and while the stand is armed the deadman needs them too: keep
`rcs-ctl hold` running in a terminal for as long as you operate (no other command sends any);
stopping it (or losing the connection) aborts within 2 s. Only `hold` publishes the retained
`rcs/status/operator`: the other commands connect without a status or Last Will.
Credentials: RCS_MQTT_USERNAME / RCS_MQTT_PASSWORD, or `run/operator.env` written by `make run`.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.common import topics
from services.common.codec import WireFormatError, unpack_map
from services.common.heartbeat import Heartbeats
from services.common.mqtt import Message, MqttClient
from services.common.rpc import RpcClient, RpcError, RpcTimeout
from services.common.settings import PROJECT_ROOT, Settings, load_settings

OPERATOR_ENV = PROJECT_ROOT / "run" / "operator.env"
HEARTBEAT_PERIOD_S = 0.5

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console()
Who = Annotated[str, typer.Option(help="who you are, for the audit trail")]
DEFAULT_WHO = f"{getpass.getuser()}@{socket.gethostname()}"


def _settings() -> Settings:
    if "RCS_MQTT_USERNAME" not in os.environ and OPERATOR_ENV.is_file():
        for line in OPERATOR_ENV.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("RCS_"):
                os.environ.setdefault(key.strip(), value.strip())
    return load_settings()


def _connect(*, announce: bool = False) -> MqttClient:
    """Connected as `operator`; `announce`: with the retained status and Last Will (for `hold`)."""
    client = MqttClient(_settings().mqtt, "operator", announce=announce)
    client.start()
    if not client.wait_connected(5):
        client.stop()
        console.print("[red]no MQTT broker answers[/red]")
        raise typer.Exit(2)
    return client


def _request(service: str, topic: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """A service's result; a refusal or no answer ends the command (exit 1 or 2) saying so."""
    client = _connect()
    rpc = RpcClient(client)
    try:
        return rpc.call(topic, body, timeout=timeout)
    except RpcError as exc:
        console.print(f"[bold red]refused:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    except RpcTimeout as exc:
        console.print(f"[bold red]no answer from {service}[/bold red] (is it running?)")
        raise typer.Exit(2) from exc
    finally:
        rpc.close()
        client.stop()


def _command(command: str, body: dict[str, Any], who: str, timeout: float = 5.0) -> dict[str, Any]:
    """Actuation's result of `command`, audited with `who`."""
    return _request(
        "actuation", topics.actuation(command), {**body, "who": who, "origin": "rcs-ctl"}, timeout
    )


def _call(command: str, body: dict[str, Any], who: str, timeout: float = 5.0) -> dict[str, Any]:
    result = _command(command, body, who, timeout)
    console.print(f"[green]ok[/green] {result}")
    return result


@app.command()
def arm(who: Who = DEFAULT_WHO) -> None:
    """Arm the stand (needs fresh telemetry and operator heartbeats: run `rcs-ctl hold`)."""
    _call("arm", {}, who)


@app.command()
def disarm(who: Who = DEFAULT_WHO) -> None:
    """Back to idle (refused while an isolation valve or the igniter is open)."""
    _call("disarm", {}, who)


@app.command()
def abort(reason: str = "operator abort", who: Who = DEFAULT_WHO) -> None:
    """Abort from any state: close isolation valves and igniter, vent, purge."""
    _call("abort", {"reason": reason}, who)


@app.command()
def valves(pattern: str, who: Who = DEFAULT_WHO) -> None:
    """Set all valves, e.g. 000000110 (order: see `rcs-ctl status`)."""
    _call("valves", {"valves": pattern}, who)


@app.command()
def valve(
    name: str, state: Annotated[str, typer.Argument(help="open or close")], who: Who = DEFAULT_WHO
) -> None:
    """Open or close one valve by name."""
    if state not in ("open", "close"):
        raise typer.BadParameter("open or close")
    _call("valve", {"name": name.upper(), "open": state == "open"}, who)


@app.command()
def sequence(name: str, who: Who = DEFAULT_WHO) -> None:
    """Start a sequence from config/stand.yaml."""
    _call("sequence", {"name": name}, who)


@app.command()
def cancel(who: Who = DEFAULT_WHO) -> None:
    """Stop the running sequence where it is."""
    _call("cancel", {}, who)


@app.command("hold-sequence")
def hold_sequence(reason: str = "operator hold", who: Who = DEFAULT_WHO) -> None:
    """Hold the running sequence (procedure) before its next step, until `resume` (not after T-0)."""
    _call("hold", {"reason": reason}, who)


@app.command()
def resume(who: Who = DEFAULT_WHO) -> None:
    """Go on with a held sequence where it stopped."""
    _call("resume", {}, who)


@app.command()
def alarms(who: Who = DEFAULT_WHO) -> None:
    """List the alarms (active, or cleared and not yet acknowledged)."""
    _call("alarms", {}, who)


@app.command()
def ack(alarm_id: int, who: Who = DEFAULT_WHO) -> None:
    """Acknowledge alarm ALARM_ID (see `rcs-ctl alarms`)."""
    _call("ack", {"id": alarm_id}, who)


@app.command()
def motor(
    motor_id: int,
    degrees: float,
    absolute: Annotated[bool, typer.Option(help="DEGREES is a target position")] = False,
    who: Who = DEFAULT_WHO,
) -> None:
    """Move a step motor by DEGREES (or to DEGREES with --absolute)."""
    key = "target" if absolute else "angle"
    _call("motor", {"motor_id": motor_id, key: degrees}, who, timeout=40.0)


@app.command()
def hold(who: Who = DEFAULT_WHO) -> None:
    """Send operator heartbeats until Ctrl-C: the deadman aborts an armed stand without them."""
    client = _connect(announce=True)
    console.print(f"holding as {who}: heartbeats every {HEARTBEAT_PERIOD_S} s, Ctrl-C to stop")
    try:
        with Heartbeats(client, who, HEARTBEAT_PERIOD_S):
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        client.stop()


@app.command()
def status(wait: float = 1.0) -> None:
    """Show services, link, system state, valves and motors (retained messages)."""
    latest: dict[str, dict[str, Any]] = {}

    def keep(message: Message) -> None:
        with contextlib.suppress(WireFormatError):
            latest[message.topic] = unpack_map(message.payload)

    client = MqttClient(_settings().mqtt, "operator", announce=False)
    for pattern in ("rcs/status/+", "rcs/state/+"):
        client.subscribe(pattern, keep, qos=1)
    client.start()
    client.wait_connected(5)
    time.sleep(wait)
    client.stop()
    table = Table("topic", "state")
    for topic in sorted(latest):
        table.add_row(topic, ", ".join(f"{k}={v}" for k, v in latest[topic].items() if k != "ts"))
    console.print(table)


run_app = typer.Typer(
    help="Test runs: a named test's own recording and report (docs/protocol.md, Test runs).",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")


def _when(ts: Any) -> str:
    return "" if not isinstance(ts, int | float) else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@run_app.command("start")
def run_start(
    name: str,
    notes: Annotated[str, typer.Option(help="what this test is for")] = "",
    who: Who = DEFAULT_WHO,
) -> None:
    """Start a run named NAME (refused while another is active)."""
    run = _command("run_start", {"name": name, "notes": notes}, who)["run"]
    console.print(f"run [bold]{run['id']}[/bold] started")


@run_app.command("stop")
def run_stop(
    run_id: Annotated[
        str | None, typer.Argument(help="the active run's id (default: whichever is active)")
    ] = None,
    who: Who = DEFAULT_WHO,
) -> None:
    """Stop the active run."""
    body = {} if run_id is None else {"id": run_id}
    run = _command("run_stop", body, who)["run"]
    console.print(f"run [bold]{run['id']}[/bold] stopped ({run['result']}); the logger writes its files")


@run_app.command("list")
def run_list() -> None:
    """The recorded runs, newest first, and the one being recorded: one line each."""
    answer = _request("logger", topics.LOGGER_RUNS, {}, 10.0)
    active = answer.get("active")
    if isinstance(active, dict):
        started = _when(active["started_at"])
        console.print(
            f"{active['id']}  [yellow]running[/yellow]  {active['name']!r}  started {started}", soft_wrap=True
        )
    for run in answer["runs"]:
        ended, started = run.get("ended_at"), run.get("started_at")
        took = (
            f"{ended - started:.1f} s"
            if isinstance(ended, int | float) and isinstance(started, int | float)
            else "?"
        )
        procedure = f"  procedure {run['procedure']}" if run.get("procedure") else ""
        report = (run.get("report") or {}).get("status", "none")
        console.print(
            f"{run['id']}  {run.get('result')}  {run.get('name')!r}{procedure}  started {_when(started)}  "
            f"{took}  {run.get('samples')} samples  report {report}",
            soft_wrap=True,
        )


@run_app.command("show")
def run_show(run_id: str) -> None:
    """One run's record (run.json without the copy of stand.yaml)."""
    run = _request("logger", topics.LOGGER_RUN, {"id": run_id}, 10.0)
    for key, value in run.items():
        if key != "config_yaml":
            console.print(f"[bold]{key}[/bold]: {value}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
