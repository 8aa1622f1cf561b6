"""Firmware core: cost of one ADC block (20 samples x 17 channels, 2 ms at 10 kHz) on the hot path.

rcs_fw_samples (timestamp, count, CRC + COBS into the transmit buffer) and rcs_fw_pump (hand the frame
to the port) per block, measured three ways:

- host: wall-clock ns and TSC cycles per block of firmware/bench/bench_core.c (-O2) on this machine;
- instructions: valgrind's callgrind count per block (the difference between two run lengths, so
  start-up cancels out), a figure that does not depend on the machine's speed or load;
- Cortex-M7 budget: 216 MHz / 500 blocks per s = 432 000 cycles per block; the share of it the core
  takes if each instruction costs about one cycle (the M7 issues up to two per cycle; flash wait
  states and cache misses cost more: an estimate, not a measurement on the board).

Also the core's code and RAM size from the Cortex-M7 build (arm-none-eabi-size), when the toolchain
is installed (`make firmware-check` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from measure import RESULTS

from services.common.settings import PROJECT_ROOT

FIRMWARE = PROJECT_ROOT / "firmware"
BENCH = FIRMWARE / "build" / "host" / "bench_core"
M7 = FIRMWARE / "build" / "m7"
M7_HZ = 216_000_000
BLOCKS_PER_S = 10_000 // 20


def make(*targets: str) -> None:
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), *targets], check=True)


def host_per_block(blocks: int, runs: int) -> tuple[float, float]:
    """Best of `runs`: (ns, TSC cycles) per block."""
    best = (float("inf"), float("inf"))
    for _ in range(runs):
        out = subprocess.run([str(BENCH), str(blocks)], capture_output=True, text=True, check=True).stdout
        _, ns, cycles = out.split()
        best = min(best, (float(ns), float(cycles)))
    return best


def instructions(blocks: int) -> int:
    """Instructions (callgrind Ir) of a run of `blocks` blocks."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(BENCH), str(blocks)],
            capture_output=True,
            check=True,
        )
        match = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
        assert match is not None, "no summary in the callgrind output"
        return int(match.group(1))


def m7_sizes() -> dict[str, int] | None:
    """text/data/bss of the core's objects, and the RAM of the QEMU image's core state, if built."""
    if shutil.which("arm-none-eabi-size") is None:
        return None
    make("arm")
    objects = [str(M7 / "rcs_wire.o"), str(M7 / "rcs_fw.o")]
    rows = subprocess.run(["arm-none-eabi-size", *objects], capture_output=True, text=True, check=True)
    text = data = bss = 0
    for line in rows.stdout.splitlines()[1:]:
        t, d, b, *_ = line.split()
        text, data, bss = text + int(t), data + int(d), bss + int(b)
    symbols = subprocess.run(
        ["arm-none-eabi-nm", "-S", str(M7 / "rcs-fw-mps2.elf")], capture_output=True, text=True, check=True
    )
    fields = [line.split() for line in symbols.stdout.splitlines()]
    sizes = {f[3]: int(f[1], 16) for f in fields if len(f) == 4}
    return {
        "core_code_bytes": text,
        "core_data_bytes": data,
        "core_bss_bytes": bss,
        "core_state_bytes_rcs_fw_t": sizes["fw"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=100_000, help="blocks per host timing run")
    args = parser.parse_args()
    make("build/host/bench_core")
    ns, cycles = host_per_block(args.blocks, runs=3)
    result: dict[str, object] = {
        "benchmark": "firmware",
        "block": "20 samples x 17 channels (2 ms at 10 kHz), samples + pump",
        "host_ns_per_block": round(ns, 1),
        "host_tsc_cycles_per_block": round(cycles),
    }
    if shutil.which("valgrind") is not None:
        per_block = (instructions(4000) - instructions(2000)) / 2000
        budget = M7_HZ / BLOCKS_PER_S
        result |= {
            "instructions_per_block": round(per_block),
            "instructions_per_sample_byte": round(per_block / (20 * 17 * 2), 1),
            "m7_216mhz_cycles_per_block_available": round(budget),
            "m7_cpu_percent_at_1_cycle_per_instruction": round(100 * per_block / budget, 2),
        }
    sizes = m7_sizes()
    if sizes is not None:
        result |= sizes
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or 'cpu'}"
    for key, value in result.items():
        print(f"{key:45s} {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "firmware.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
