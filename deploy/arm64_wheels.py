"""Can the image be built on the Raspberry Pi? Every runtime dependency of pyproject.toml must be
installable on linux/arm64 with CPython 3.11 (the Dockerfile's base image) without compiling,
except the few known to be published as source only, which must build from their source.

    python deploy/arm64_wheels.py [--dest DIR]

Asks the package index (pip download): binary wheels for manylinux aarch64 (glibc <= 2.36, what
Raspberry Pi OS bookworm has) or pure-Python wheels, resolved together, and the source archives of
SOURCE_ONLY. Prints one line; exits 1 naming what has no arm64 wheel.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from services.common.settings import PROJECT_ROOT

# Published as source only; built in the image (gcc is installed for them by the Dockerfile).
SOURCE_ONLY = frozenset({"cobs"})
PLATFORMS = ("manylinux_2_36_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64")


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def runtime_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[str]:
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def pip_download(dest: Path, requirements: list[str], *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest), *options]
    return subprocess.run([*command, *requirements], capture_output=True, text=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, help="keep the downloads here (default: a temp dir)")
    args = parser.parse_args()
    requirements = runtime_requirements()
    binary = [r for r in requirements if requirement_name(r) not in SOURCE_ONLY]
    source = [r for r in requirements if requirement_name(r) in SOURCE_ONLY]
    with tempfile.TemporaryDirectory(prefix="rcs-arm64-") as scratch:
        dest = args.dest or Path(scratch)
        platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
        wheels = pip_download(
            dest,
            binary,
            "--only-binary=:all:",
            *platforms,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
        )
        sources = pip_download(dest, source, "--no-binary=:all:", "--no-deps")
        problems = [
            result.stderr.strip().splitlines()[-1] for result in (wheels, sources) if result.returncode
        ]
        if problems:
            print(f"arm64: NOT installable: {'; '.join(problems)}")
            sys.exit(1)
        files = sorted(path.name for path in dest.iterdir())
    print(
        f"arm64: {len(files)} distributions, all aarch64 or pure-Python wheels;"
        f" source only: {sorted(SOURCE_ONLY)}"
    )


if __name__ == "__main__":
    main()
