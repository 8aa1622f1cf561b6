# The rcs services image. Built on the Raspberry Pi itself (64-bit OS: linux/arm64); also builds on
# amd64. One image for every service: docker-compose.yml picks the command. Deployment steps:
# docs/deployment.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Runtime dependencies only (no dev extras): pyproject.toml's `dependencies`, typer and rich (rcs-ctl)
# included, in a layer of their own that is rebuilt only when pyproject.toml changes: they are
# installed with an empty stand-in of the package (and of README.md, its long description), which
# is then uninstalled. gcc is needed only to build the C extension of `cobs` (published as source
# only; without a compiler or Python's headers pip silently falls back to slow pure Python), so it
# is installed and removed in the same layer, and the build fails unless the extension imports.
COPY pyproject.toml ./
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && mkdir services && touch services/__init__.py README.md \
    && pip install . \
    && pip uninstall -y rcs \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* services README.md build rcs.egg-info \
    && { python -c 'from cobs.cobs import _cobs_ext' \
         || { echo "the cobs C extension was not built (compiler or Python headers missing)" >&2; exit 1; }; }

# The package itself. `pip check` fails the build on a broken dependency set; the loop if a console
# script is missing; the last line if rcs-ctl cannot import typer and rich.
COPY README.md ./
COPY services/ services/
RUN pip install --no-deps . \
    && rm -rf build rcs.egg-info \
    && pip check \
    && for script in rcs-acquisition rcs-actuation rcs-logger rcs-gateway rcs-analyze rcs-stm32-emulator \
                     rcs-arduino-emulator rcs-ctl rcs-healthcheck; do \
           command -v "$script" >/dev/null || { echo "missing console script $script" >&2; exit 1; }; \
       done \
    && rcs-ctl --help >/dev/null

COPY config/ config/

# The simulated stand's supervisor (compose.sim.yml): an emulator and the service using its pty, in
# one container.
COPY deploy/sim.sh /usr/local/bin/rcs-sim

# Non-root. `dialout` (gid 20 in Debian and in Raspberry Pi OS alike) owns /dev/ttyACM* and
# /dev/ttyUSB* on the host, and a passed-through device keeps its owner and mode, so the STM32 and
# Arduino ports are usable. /app/data is data_dir; /data is where compose mounts the recordings'
# named volume: Docker gives a new, empty named volume the owner of the directory it is mounted on,
# so the logger can write to it without any chown on the host. /run/rcs holds the emulators' pty links.
RUN chmod 755 /usr/local/bin/rcs-sim \
    && useradd --system --uid 10001 --user-group --groups dialout --no-create-home rcs \
    && mkdir -p /app/data /data /run/rcs \
    && chown rcs:rcs /app/data /data /run/rcs
USER rcs

# An installed package has no project root to find config/stand.yaml from: say where it is.
ENV RCS_CONFIG=/app/config/stand.yaml

CMD ["rcs-acquisition"]
