#!/usr/bin/env bash
# Sourced by deploy/check.sh: what the deployment check needs on a fresh Debian (bookworm) machine,
# installed when absent, and a Docker engine started when none answers.
#
#   need_tools      dockerd + docker CLI (Debian's docker.io), Compose v2 (`docker compose`),
#                   debootstrap (for the base-image stand-ins), curl, openssl
#   start_engine    `docker info` works afterwards; sets ENGINE_PID when this script started it
#   stop_engine     stops the engine, only if start_engine started it
#
# Compose v2: bookworm ships only Compose v1 (docker-compose 1.29, Python). Debian trixie's
# `docker-compose` package is Compose v2, a static Go binary needing only libc6 (>= 2.34, bookworm
# has 2.36). It is fetched with apt from Debian's archive through a private apt state directory (the
# machine's sources are left alone) and installed as the CLI plugin.

SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
ENGINE_PID=
ENGINE_LOG=${ENGINE_LOG:-/tmp/rcs-deploy-dockerd.log}

say() { printf 'deploy-check: %s\n' "$*" >&2; }

apt_install() {
    [ -n "${APT_UPDATED:-}" ] || { $SUDO apt-get update -q >/dev/null && APT_UPDATED=1; }
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

install_compose_v2() {
    local dir
    dir=$(mktemp -d)
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        > "$dir/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o Debug::NoLocking=1
        -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" -q update >/dev/null
    (cd "$dir" && apt-get "${opts[@]}" -q download docker-compose >/dev/null)
    dpkg-deb -x "$dir"/docker-compose_*.deb "$dir/root"
    $SUDO install -D -m 0755 "$dir/root/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN_DIR/docker-compose"
    rm -rf "$dir"
}

need_tools() {
    local missing=()
    { command -v dockerd && command -v docker; } >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v nsenter >/dev/null || missing+=(util-linux)
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    if ! docker compose version >/dev/null 2>&1; then
        say "installing Compose v2 (Debian trixie's docker-compose) as $PLUGIN_DIR/docker-compose"
        install_compose_v2
    fi
    docker compose version >/dev/null
}

# An engine as the trial found it works on this machine kind: no iptables, no bridge (every
# container of the check shares one loopback-only network namespace; builds use the host's network).
start_engine() {
    if docker info >/dev/null 2>&1; then
        say "using the Docker engine already running"
        return 0
    fi
    say "starting a Docker engine (log: $ENGINE_LOG)"
    $SUDO dockerd --iptables=false --ip6tables=false --bridge=none >"$ENGINE_LOG" 2>&1 &
    ENGINE_PID=$!
    local i
    for i in $(seq 1 120); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$ENGINE_PID" 2>/dev/null || { say "dockerd exited:"; tail -20 "$ENGINE_LOG" >&2; return 1; }
        sleep 0.5
    done
    say "dockerd did not answer within 60 s"
    return 1
}

stop_engine() {
    [ -n "$ENGINE_PID" ] || return 0
    say "stopping the Docker engine it started (pid $ENGINE_PID)"
    $SUDO kill -TERM "$ENGINE_PID" 2>/dev/null
    local i
    for i in $(seq 1 60); do
        kill -0 "$ENGINE_PID" 2>/dev/null || break
        sleep 0.5
    done
    kill -0 "$ENGINE_PID" 2>/dev/null && $SUDO kill -KILL "$ENGINE_PID"
    wait "$ENGINE_PID" 2>/dev/null
    ENGINE_PID=
}
