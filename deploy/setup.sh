#!/usr/bin/env bash
# setup.sh [NAME...]: the one-time set-up of a compose deployment, run from the repository's root
# (docker-compose.yml's header, docs/deployment.md §4). NAME...: the Pi's host names or addresses
# as clients on the stand network reach it (put in the TLS certificates), e.g. rcs-pi.local.
#
# Writes, replacing what was there (every password and token new, the stand CA kept):
#   mosquitto/passwd          the broker's password file, owned by uid 1883 (the broker's user)
#   secrets/<user>.env        each MQTT login (acquisition, actuation, logger, gateway, operator, reader)
#   secrets/tokens.env        the gateway's operator and viewer tokens
#   secrets/tls/              the stand CA and the broker's and gateway's certificates (deploy/certs.sh);
#                             each key readable only by the container user that serves it
# Needs python3 and openssl; root for the chown (sudo is used when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
BROKER_UID=1883   # the mosquitto user of eclipse-mosquitto:2
RCS_UID=10001     # the rcs user of the project's image (Dockerfile)

$SUDO rm -f mosquitto/passwd   # belongs to uid 1883 after a previous run
python3 -m services.devstack.credentials mosquitto/passwd --env-dir secrets
$SUDO chown "$BROKER_UID:$BROKER_UID" mosquitto/passwd

( umask 077 && printf 'RCS_OPERATOR_TOKEN=%s\nRCS_VIEWER_TOKEN=%s\n' \
    "$(openssl rand -base64 24)" "$(openssl rand -base64 24)" > secrets/tokens.env )
echo "wrote secrets/tokens.env (the gateway's operator and viewer tokens)"

[ -d secrets/tls ] && $SUDO chown -R "$(id -u):$(id -g)" secrets/tls
deploy/certs.sh secrets/tls "$@"
$SUDO chown "$BROKER_UID:$BROKER_UID" secrets/tls/broker.key
$SUDO chown "$RCS_UID:$RCS_UID" secrets/tls/gateway.key
echo "give secrets/tls/ca.crt to every client of the broker (port 8883) and the gateway (https://...:5001)"
