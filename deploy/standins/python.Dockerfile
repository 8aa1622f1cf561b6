# Stand-in for python:3.11-slim, built by deploy/base-images.sh only when no image registry is
# reachable: Debian bookworm's Python 3.11 in a virtual environment at /usr/local, so that `python`,
# `pip` and installed console scripts are in /usr/local/bin as in the official image, with the C headers
# (python3-dev) that the official image also ships.
FROM rcs-standin/debian:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local \
    && /usr/local/bin/python -m pip --version
# pip checks TLS against Debian's store (which, on this machine, holds the host's CAs too).
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
