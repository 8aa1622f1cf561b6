#!/usr/bin/env bash
# make install-service: rcs natively on a Debian / Raspberry Pi OS machine, without Docker, as the
# systemd service rcs-stack (deploy/native/rcs-stack.service) with the udev rules that give the
# boards stable names (deploy/native/99-rcs.rules). Guide: docs/native-deployment.md. Run as root
# (or with sudo) from a clone; run again to update (the source is copied anew, the venv updated).
#
#   /opt/rcs                 a copy of this checkout (config/stand.yaml included) and its .venv
#   /var/lib/rcs/data        recordings (RCS_DATA_DIR)
#   /etc/rcs/rcs.env         site settings and secrets (RCS_* lines), created empty, mode 0600
#   user rcs                 system user, group rcs, in dialout (serial devices)
#
# DESTDIR=/some/root installs the files under that root only (no user, no apt, no systemctl): for
# packaging and for looking at what would be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
ROOT=${DESTDIR:-}
PREFIX=$ROOT/opt/rcs

if [ -z "$ROOT" ]; then
    missing=()
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
    command -v gcc >/dev/null || missing+=(gcc python3-dev) # the cobs C extension
    if [ "${#missing[@]}" -gt 0 ]; then
        $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    # rcs-stack starts its own Mosquitto (project config and ACL, fresh logins): not Debian's.
    if systemctl is-enabled --quiet mosquitto.service 2>/dev/null; then
        echo "disabling Debian's mosquitto.service: rcs-stack runs its own broker on port 1883"
        $SUDO systemctl disable --now mosquitto.service
    fi
    id rcs >/dev/null 2>&1 || $SUDO useradd --system --user-group --groups dialout \
        --home-dir /var/lib/rcs --shell /usr/sbin/nologin rcs
    $SUDO usermod -a -G dialout rcs
fi

$SUDO mkdir -p "$PREFIX" "$PREFIX/run" "$ROOT/var/lib/rcs/data" "$ROOT/etc/rcs" \
    "$ROOT/etc/systemd/system" "$ROOT/etc/udev/rules.d"
if git rev-parse --git-dir >/dev/null 2>&1; then
    git ls-files -z | $SUDO tar -c --null -T - | $SUDO tar -x -C "$PREFIX"
else
    $SUDO tar -c --exclude=./.venv --exclude=./.git --exclude=./data --exclude=./run . | $SUDO tar -x -C "$PREFIX"
fi
$SUDO install -m 0644 deploy/native/rcs-stack.service "$ROOT/etc/systemd/system/rcs-stack.service"
$SUDO install -m 0644 deploy/native/99-rcs.rules "$ROOT/etc/udev/rules.d/99-rcs.rules"
[ -e "$ROOT/etc/rcs/rcs.env" ] || $SUDO install -m 0600 /dev/null "$ROOT/etc/rcs/rcs.env"

if [ -n "$ROOT" ]; then
    echo "installed the files under $ROOT"
    exit 0
fi

[ -x "$PREFIX/.venv/bin/python" ] || $SUDO python3 -m venv "$PREFIX/.venv"
$SUDO "$PREFIX/.venv/bin/pip" install -q -e "$PREFIX"
$SUDO "$PREFIX/.venv/bin/python" -c 'from cobs.cobs import _cobs_ext' # fast COBS, or fail here
$SUDO chown -R rcs:rcs "$PREFIX/run" /var/lib/rcs

if command -v udevadm >/dev/null && [ -d /run/udev ]; then
    $SUDO udevadm control --reload && $SUDO udevadm trigger --subsystem-match=tty
fi
if [ -d /run/systemd/system ]; then
    $SUDO systemctl daemon-reload
    $SUDO systemctl enable rcs-stack.service
    echo "enabled rcs-stack.service: start it with 'sudo systemctl start rcs-stack', logs: journalctl -u rcs-stack -f"
else
    echo "systemd is not running here: rcs-stack.service installed, not enabled"
fi
