#!/usr/bin/env bash
# make deploy-check: the compose deployment, built and run on a real Docker engine, checked from
# outside the containers. Runs on a fresh Debian machine as root (or with sudo):
#
#  1. installs what is absent (Docker engine, Compose v2, debootstrap: deploy/tools.sh), starts an
#     engine if none answers, and makes sure the base images exist (pulled, or local stand-ins built
#     from Debian packages when no image registry is reachable: deploy/base-images.sh); checks that
#     every runtime dependency installs on linux/arm64 (deploy/arm64_wheels.py: the Pi's build);
#  2. in a copy of the working tree: the one-time set-up of docker-compose.yml's header
#     (deploy/setup.sh), then `docker compose config` must validate;
#  3. builds the image and brings up the simulated stand (docker-compose.yml + compose.sim.yml),
#     every container in one loopback-only network namespace (deploy/compose.loopback.yml), and
#     waits for every healthcheck;
#  4. probes from the host inside that namespace (deploy/probe.py): TLS with the stand CA and refused
#     without it, no anonymous client; 10 kHz telemetry with contiguous seq; a valve command through
#     the gateway acknowledged by the emulated STM32; the stack's memory (containers' RSS) and CPU;
#  5. kills the logger's process: its restart policy must bring it back, healthy, and the recording
#     (copied out of the named volume) must be continuous by `rcs-analyze check`: nothing lost.
#     Samples the emulated STM32 lost at the source (acquisition counts them; a CPU-starved machine
#     makes the emulator miss its 10 kHz) are not the deployment's loss: the telemetry and recording
#     probes accept a gap only when acquisition never had its samples, and say how many;
#  6. `docker compose down` must leave no container, then stops the engine if it started it.
#
# Prints one summary line; exits 1 if any step failed. Environment: DEPLOY_CHECK_KEEP=1 leaves the
# stack up for a look (and the engine running); DEPLOY_CHECK_SECONDS: telemetry window (5).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
# shellcheck source=deploy/tools.sh
source deploy/tools.sh
# shellcheck source=deploy/base-images.sh
source deploy/base-images.sh

VENV=$REPO/.venv/bin
STARTED=$(date +%s)
PASSED=()
FAILED=()
FIGURES=()
WORK=
STACK_UP=

LAST=
STEP_LOG=$(mktemp /tmp/rcs-deploy-check-step.XXXXXX)
step() { # NAME COMMAND...: run in this shell (it may set variables), record, print its last line (LAST)
    local name=$1 output rc
    shift
    "$@" >"$STEP_LOG" 2>&1
    rc=$?
    output=$(cat "$STEP_LOG")
    LAST=${output##*$'\n'}
    if [ "$rc" = 0 ]; then
        PASSED+=("$name")
        say "ok   $name${LAST:+: $LAST}"
    else
        FAILED+=("$name")
        say "FAIL $name:"
        printf '%s\n' "$output" | tail -25 >&2
    fi
    return "$rc"
}

compose() { docker compose "$@"; }

cleanup() {
    if [ -n "$STACK_UP" ] && [ -z "${DEPLOY_CHECK_KEEP:-}" ]; then
        (cd "$WORK" && compose down -v --remove-orphans >/dev/null 2>&1)
    fi
    [ -z "${DEPLOY_CHECK_KEEP:-}" ] && stop_engine
    [ -n "$WORK" ] && [ -z "${DEPLOY_CHECK_KEEP:-}" ] && $SUDO rm -rf "$WORK"
    rm -f "$STEP_LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary() {
    local seconds=$(($(date +%s) - STARTED)) verdict=passed
    [ "${#FAILED[@]}" -gt 0 ] && verdict="FAILED (${FAILED[*]})"
    echo "deploy-check: ${#PASSED[@]} passed, ${#FAILED[@]} failed in ${seconds} s: $verdict${FIGURES:+; ${FIGURES[*]}}${BASE_IMAGES_NOTE:+; $BASE_IMAGES_NOTE}"
    [ "${#FAILED[@]}" = 0 ]
}

abort() { summary; exit 1; }

# -- 1. tools, engine, base images ---------------------------------------------------------------
step tools need_tools || abort
step engine start_engine || abort
step base-images ensure_base_images || abort
[ -x "$VENV/python" ] || step venv make -s bootstrap || abort
# The Raspberry Pi builds the image itself: every runtime dependency must install on linux/arm64.
step arm64-dependencies env PYTHONPATH="$REPO" "$VENV/python" deploy/arm64_wheels.py

# -- 2. a deployment directory, set up as the compose header says ----------------------------------
WORK=$(mktemp -d /tmp/rcs-deploy-check.XXXXXX)
copy_tree() {
    if git rev-parse --git-dir >/dev/null 2>&1; then
        git ls-files -z -co --exclude-standard | tar -c --null -T - | tar -x -C "$WORK"
    else
        tar -c --exclude=./.venv --exclude=./.git . | tar -x -C "$WORK"
    fi
}
step copy copy_tree || abort
cd "$WORK" || abort
step setup deploy/setup.sh || abort
step config-valid compose config -q || abort

# The check's files: the simulated stand, everything on loopback in one namespace.
export COMPOSE_PROJECT_NAME=rcs-deploy-check
export COMPOSE_FILE=docker-compose.yml:compose.sim.yml:deploy/compose.loopback.yml
step config-sim-valid compose config -q || abort

# -- 3. build and start ----------------------------------------------------------------------------
step build compose build -q || abort
STACK_UP=1
step up compose up -d --wait --wait-timeout 240 || {
    compose ps -a >&2
    compose logs --tail 30 >&2
    abort
}

container() { compose ps -aq "$1"; }
netns_pid() { docker inspect -f '{{.State.Pid}}' "$(container mosquitto)"; }
probe() { $SUDO nsenter -t "$(netns_pid)" -n -- "$VENV/python" "$REPO/deploy/probe.py" "$WORK/secrets" "$@"; }
export PYTHONPATH=$REPO

# -- 4. probes from outside ------------------------------------------------------------------------
step tls probe tls
step telemetry probe telemetry --seconds "${DEPLOY_CHECK_SECONDS:-5}"
step valve-command probe valve

ring_full_mib() { # the ring buffer's size when full: ring_capacity x (t, seq, 4 bytes a channel)
    PYTHONPATH=$REPO "$VENV/python" -c 'from services.common.settings import load_settings as l; s = l()
print(round(s.acquisition.ring_capacity * (16 + 4 * len(s.channels)) / 2**20))'
}
resources() { # the containers' memory (RSS, as cgroups count it) and CPU, summed over 3 samples
    local sample fill ring
    fill=$(probe metric 9101 rcs_acquisition_ring_fill) || return 1
    ring=$(ring_full_mib) || return 1
    for sample in 1 2 3; do
        docker stats --no-stream --format '{{.MemUsage}} {{.CPUPerc}}' $(compose ps -q) |
            awk '{ m=$1; u=1; if (m ~ /GiB/) u=1024; else if (m ~ /KiB/) u=1/1024; else if (m ~ /B$/ && m !~ /iB/) u=1/1048576;
                   sub(/[A-Za-z]+$/, "", m); mem += m*u; c=$NF; sub(/%/, "", c); cpu += c }
                 END { printf "%.0f %.0f\n", mem, cpu }'
    done | awk -v fill="$fill" -v ring="$ring" '{ mem += $1; cpu += $2; n++ }
        END { printf "stack at 10 kHz: %.0f MiB RAM (ring %.0f%% full; %.0f MiB with a full %d MiB ring), %.0f%% CPU of one core\n",
                     mem/n, fill*100, mem/n + (1-fill)*ring, ring, cpu/n }'
}
step resources resources && FIGURES+=("$LAST")

# -- 5. a crash: the logger's process killed, restarted by its policy, nothing lost ---------------
restarted_healthy() { # CONTAINER RESTARTS_BEFORE
    local i
    for i in $(seq 1 90); do
        [ "$(docker inspect -f '{{.RestartCount}} {{.State.Health.Status}}' "$1")" = "$(($2 + 1)) healthy" ] && return 0
        sleep 2
    done
    docker inspect -f 'restarts {{.RestartCount}}, {{.State.Status}}, health {{.State.Health.Status}}' "$1"
    return 1
}
kill_logger() {
    local id before
    id=$(container logger)
    before=$(docker inspect -f '{{.RestartCount}}' "$id")
    $SUDO kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$id")" || return 1
    restarted_healthy "$id" "$before" && echo "restarted by its policy (unless-stopped), healthy again"
}
step crash-restart kill_logger

repaired() { # the restarted logger has fetched what it missed from acquisition's history
    local i pending
    for i in $(seq 1 60); do
        pending=$(probe metric 9103 rcs_logger_repair_pending_samples 2>/dev/null)
        [ "$pending" = 0.0 ] && echo "no samples pending repair" && return 0
        sleep 2
    done
    echo "samples still pending repair: ${pending:-unknown}"
    return 1
}
step repair repaired

recording_continuous() {
    compose stop logger >/dev/null 2>&1 || return 1 # closes the open segment
    rm -rf "$WORK/recordings"
    compose cp logger:/data "$WORK/recordings" >/dev/null || return 1
    local files=("$WORK"/recordings/sensor_log_*.parquet)
    [ -e "${files[0]}" ] || { echo "no recording in the logger's volume"; return 1; }
    if "$VENV/rcs-analyze" check "${files[@]}"; then
        echo "${#files[@]} file(s) continuous (rcs-analyze check)"
        return 0
    fi
    # Gaps: each must be samples acquisition never had (the emulated STM32 lost them at the source,
    # which a CPU-starved machine causes), never samples the deployment lost (deploy/probe.py).
    probe recording "${files[@]}"
}
step recording-continuous recording_continuous

# -- 6. down -----------------------------------------------------------------------------------------
down_clean() {
    compose down -v --remove-orphans >/dev/null 2>&1 || return 1
    STACK_UP=
    local left
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    [ -z "$left" ] || { echo "containers left: $left"; return 1; }
    echo "no container left"
}
if [ -z "${DEPLOY_CHECK_KEEP:-}" ]; then
    step down down_clean
fi

summary
