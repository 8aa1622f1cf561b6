"""Legacy STM32 text protocol: one line per sample, values already in engineering units.

A sample line is `P1: 12.5 | P2: 15.3 | ... | VELOCITY: 2500.0` with every channel of the settings,
in settings order. The device also prints `ACK: ...` / `NACK: ...` after a command and `INFO: ...`
lines. The host sends `Valves:` followed by one 0/1 digit per valve (settings order) and `\n`.

Decoding is vectorised: one compiled regex covering a whole line runs over every complete line of a
chunk in C (`findall`), and all captured numbers are converted by one numpy `astype`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.common.settings import Settings

MAX_LINE_BYTES = 4096  # a partial line longer than this without a newline is garbage: dropped
MAX_SPREAD_S = 0.1  # the longest interval the samples of one chunk are spread over (see TextDecoder)

# Any float syntax printf or Python may produce: 12, -3.5, .5, 5., 1.2505e+03, nan, -inf, Infinity.
_NUMBER = rb"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?))"
_SEPARATOR = rb"[ \t]*\|[ \t]*"


@dataclass(frozen=True)
class EngineeringBlock:
    """Samples of the text protocol, values in engineering units."""

    t: npt.NDArray[np.float64]  # host receive time (UNIX s) per sample, see TextDecoder
    values: npt.NDArray[np.float32]  # (n, len(settings.channels)) in settings channel order


@dataclass(frozen=True)
class TextAck:
    """An `ACK: text` (ok) or `NACK: text` line; `text` is what follows the colon, stripped."""

    ok: bool
    text: str


TextMessage = EngineeringBlock | TextAck


@dataclass(frozen=True)
class TextStats:
    lines: int = 0  # complete lines seen, good or bad
    samples: int = 0
    acks: int = 0  # ACK and NACK lines
    info_lines: int = 0
    bad_lines: int = 0  # neither sample, ACK/NACK, INFO nor empty; includes over-long lines
    overlong_lines: int = 0  # dropped for exceeding MAX_LINE_BYTES without a newline


def line_pattern(channel_names: tuple[str, ...]) -> re.Pattern[bytes]:
    """The regex matching one whole line (MULTILINE, no newline consumed).

    Groups: one number per channel, then `ACK`/`NACK` and the acknowledgement text. INFO lines and
    blank lines match with every group empty; any other line does not match.
    """
    sample = _SEPARATOR.join(
        re.escape(name.encode()) + rb":[ \t]*(" + _NUMBER + rb")" for name in channel_names
    )
    ack = rb"(ACK|NACK):[ \t]*([^\r\n]*?)"
    return re.compile(rb"^[ \t]*(?:" + sample + rb"|" + ack + rb"|INFO:[^\r\n]*|)[ \t]*\r?$", re.MULTILINE)


class TextDecoder:
    """Decode one connection's text stream. Create a new decoder for every connection.

    Host timestamps: the line carries no device time, so the samples completed by one chunk are
    stamped evenly over the interval since the previous chunk (at most MAX_SPREAD_S), the last one
    at `t_received`: t[i] = t_received - spread * (n - 1 - i) / n. The first chunk of a connection
    uses the full MAX_SPREAD_S.

    A partial last line waits for the next chunk; one growing past MAX_LINE_BYTES without a newline
    is dropped, along with the rest of it up to the next newline.
    """

    def __init__(self, settings: Settings) -> None:
        self._n_channels = len(settings.channels)
        self._pattern = line_pattern(settings.channel_names)
        self._pending = b""
        self._discarding = False  # inside an over-long line: drop bytes up to the next newline
        self._t_last = float("-inf")
        self._lines = 0
        self._samples = 0
        self._acks = 0
        self._info_lines = 0
        self._bad_lines = 0
        self._overlong_lines = 0

    @property
    def stats(self) -> TextStats:
        return TextStats(
            lines=self._lines,
            samples=self._samples,
            acks=self._acks,
            info_lines=self._info_lines,
            bad_lines=self._bad_lines,
            overlong_lines=self._overlong_lines,
        )

    def feed(self, chunk: bytes, t_received: float) -> list[TextMessage]:
        spread = min(max(t_received - self._t_last, 0.0), MAX_SPREAD_S)
        self._t_last = t_received
        if self._discarding:
            newline = chunk.find(b"\n")
            if newline < 0:
                return []
            chunk = chunk[newline + 1 :]
            self._discarding = False
        buffer = self._pending + chunk
        last_newline = buffer.rfind(b"\n")
        self._pending = buffer[last_newline + 1 :]
        if len(self._pending) > MAX_LINE_BYTES:
            self._pending = b""
            self._discarding = True
            self._overlong_lines += 1
            self._bad_lines += 1
        if last_newline < 0:
            return []
        return self._decode_lines(buffer[:last_newline], t_received, spread)

    def _decode_lines(self, region: bytes, t_received: float, spread: float) -> list[TextMessage]:
        """Decode complete lines (`region` holds them without the final newline)."""
        n_lines = region.count(b"\n") + 1
        rows = self._pattern.findall(region)
        self._lines += n_lines
        self._bad_lines += n_lines - len(rows)
        if not rows:
            return []
        fields = np.array(rows, dtype=np.bytes_)
        n = self._n_channels
        is_sample = fields[:, 0] != b""
        is_ack = fields[:, n] != b""
        n_samples = int(np.count_nonzero(is_sample))
        n_acks = int(np.count_nonzero(is_ack))
        self._samples += n_samples
        self._acks += n_acks
        self._info_lines += len(rows) - n_samples - n_acks  # INFO and blank lines
        values = np.empty((n_samples, n), dtype=np.float32)
        if n_samples:
            with np.errstate(over="ignore"):  # beyond float32 range is inf, as for any other source
                values[:] = fields[is_sample, :n].astype(np.float64)
        t = t_received - spread * np.arange(n_samples - 1, -1, -1, dtype=np.float64) / max(n_samples, 1)
        if n_acks == 0:
            return [EngineeringBlock(t, values)]

        out: list[TextMessage] = []
        samples_before = np.cumsum(is_sample)  # samples up to and including each row
        start = 0
        for row in np.flatnonzero(is_ack):
            end = int(samples_before[row])
            if end > start:
                out.append(EngineeringBlock(t[start:end], values[start:end]))
                start = end
            text = bytes(fields[row, n + 1]).decode("utf-8", errors="replace").strip()
            out.append(TextAck(ok=bool(fields[row, n] == b"ACK"), text=text))
        if n_samples > start:
            out.append(EngineeringBlock(t[start:], values[start:]))
        return out


def encode_valves(mask: int, n_valves: int) -> bytes:
    """`Valves:` + one digit per valve (digit i = bit i of mask = settings.valves[i]) + newline."""
    if not 0 <= mask < 1 << n_valves:
        raise ValueError(f"valve mask {mask:#x} does not fit {n_valves} valves")
    digits = "".join("1" if mask >> i & 1 else "0" for i in range(n_valves))
    return f"Valves:{digits}\n".encode()


def encode_go_safe(n_valves: int) -> bytes:
    """Every valve closed: the legacy firmware has no separate go-safe command."""
    return encode_valves(0, n_valves)
