"""Who did it: the identities in audit records, and what the broker vouches for (docs/safety.md §11).

The broker authenticates MQTT logins and its ACL lets each login publish requests and events only on
topics ending in its own name (`topics.request`, `topics.events`). So the login of a request or an
event is proven; anything a payload says about itself is a claim. Only a relay login (the gateway,
which authenticates people by their tokens) may name the person it acts for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.common import topics
from services.common.codec import pack
from services.common.logs import Throttled

RELAYS = frozenset({"gateway"})  # logins trusted to say `who` and `origin` for the people they serve
AUDIT_KEYS = ("who", "origin", "login", "claimed_who")
AUDIT_TEXT_CHARS = 200  # who, origin, a reason, each string of args: longer ones are clipped
AUDIT_ITEMS = 32  # items of a list or map in args


def event_payload(service: str, kind: str, fields: Mapping[str, Any]) -> bytes:
    """The packed audit event `{ts: UNIX s, service, kind, **fields}` (docs/protocol.md, events), for
    `topics.events(login)`; `fields` may override the envelope's keys."""
    return pack({"ts": time.time(), "service": service, "kind": kind, **fields})


@dataclass(frozen=True)
class Requester:
    who: str  # the person (a relay's authenticated account) or else the MQTT login itself
    origin: str  # a relay's origin (`gateway <client ip>`), else `mqtt`
    login: str  # the MQTT user that sent the request (set by the RPC server from the topic)
    claimed_who: str | None  # a non-relay's own `who`, when it differs: recorded, proves nothing

    def fields(self) -> dict[str, Any]:
        """The audit event's identity fields."""
        base = {"who": self.who, "origin": self.origin, "login": self.login}
        return base if self.claimed_who is None else base | {"claimed_who": self.claimed_who}


def clipped(value: Any) -> Any:
    """`value` bounded for the audit (events, state reasons, logs): a sender may put megabytes in any
    field; strings keep AUDIT_TEXT_CHARS, lists and maps AUDIT_ITEMS, and say what was cut."""
    if isinstance(value, str | bytes) and len(value) > AUDIT_TEXT_CHARS:
        cut = value[:AUDIT_TEXT_CHARS]
        return f"{cut!r}… ({len(value)} long)" if isinstance(cut, bytes) else f"{cut}… ({len(value)} long)"
    if isinstance(value, list | tuple):
        items = [clipped(v) for v in value[:AUDIT_ITEMS]]
        return [*items, f"… ({len(value)} items)"] if len(value) > AUDIT_ITEMS else items
    if isinstance(value, dict):
        kept = {clipped(k): clipped(v) for k, v in list(value.items())[:AUDIT_ITEMS]}
        return kept | {"…": f"{len(value)} items"} if len(value) > AUDIT_ITEMS else kept
    return value


def command_args(body: dict[str, Any]) -> dict[str, Any]:
    """A command's arguments as audited: the body without the identity keys, clipped."""
    args: dict[str, Any] = clipped({k: v for k, v in body.items() if k not in AUDIT_KEYS})
    return args


def _text(value: Any) -> str | None:
    """A non-empty string field, clipped for the audit; else None."""
    return clipped(value) if isinstance(value, str) and value else None


def requester(body: dict[str, Any]) -> Requester:
    """Who sent an RPC request body (its `login` was set by `RpcServer` from the request topic)."""
    login = _text(body.get("login")) or "unknown"
    who, origin = _text(body.get("who")), _text(body.get("origin"))
    if login in RELAYS:
        return Requester(who or login, origin or login, login, None)
    return Requester(login, "mqtt", login, who if who not in (None, login) else None)


def attribute_event(topic: str, event: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`event` with `publisher` (the login that published it, from its topic), and whether it is
    forged: its `service` names another login (then it also gets `forged: true`). Any `publisher` or
    `forged` the event carried itself is replaced."""
    login = topics.login_of(topic)
    forged = event.get("service") != login
    attributed = {k: v for k, v in event.items() if k != "forged"} | {"publisher": login}
    return (attributed | {"forged": True} if forged else attributed), forged


def received_event(topic: str, event: dict[str, Any], problems: Throttled) -> tuple[dict[str, Any], bool]:
    """`attribute_event` for a receiver (the logger, the gateway): a forged event is also logged, once
    per publishing login and interval; the caller counts it."""
    attributed, forged = attribute_event(topic, event)
    if forged:
        problems.warning(
            f"forged-event:{attributed['publisher']}",
            "forged event: login %s published it as service %r",
            attributed["publisher"],
            event.get("service"),
        )
    return attributed, forged
