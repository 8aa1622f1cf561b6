#!/usr/bin/env bash
# rcs-sim EMULATOR LINK SERVICE: an emulated device and the service that drives it, in one container.
#
#   rcs-sim rcs-stm32-emulator   /run/rcs/stm32   rcs-acquisition
#   rcs-sim rcs-arduino-emulator /run/rcs/arduino rcs-actuation
#
# The `sim` profile of docker-compose.yml runs this (installed in the image as /usr/local/bin/rcs-sim).
# The emulator serves a pseudo-terminal behind the symlink LINK, which the service opens like the real
# board (the service's RCS_STM32_PORT / RCS_ARDUINO_PORT must name LINK). Both must be in one
# container: each container has its own /dev/pts, so a pty link cannot cross containers.
#
# The service keeps the container's MQTT login (env_file); the emulator speaks no MQTT and gets none.
# If either process exits, the other is stopped and this script exits 1 (compose restarts the
# container). On SIGTERM/SIGINT (docker stop): the service stops first, then the emulator, so the
# service never sees its device vanish while it runs; exit 0.
set -u

if [ "$#" -ne 3 ]; then
    echo "usage: rcs-sim EMULATOR LINK SERVICE" >&2
    exit 2
fi
emulator=$1 link=$2 service=$3

stopping=0
trap 'stopping=1' TERM INT

# Terminate one child and wait until it is gone (a signal to this script interrupts `wait`).
stop() {
    kill -TERM "$1" 2>/dev/null
    while kill -0 "$1" 2>/dev/null; do wait "$1"; done
}

rm -f "$link" # a link left by a killed emulator points at a pty of the previous container start
env -u RCS_MQTT_USERNAME -u RCS_MQTT_PASSWORD "$emulator" --link "$link" &
emulator_pid=$!
"$service" &
service_pid=$!

# Until either child exits or a signal arrives. `wait -n` returns on either, but would miss a child
# that exited before it was called: hence the checks.
while [ "$stopping" = 0 ] && kill -0 "$emulator_pid" 2>/dev/null && kill -0 "$service_pid" 2>/dev/null; do
    wait -n
done

stop "$service_pid"
stop "$emulator_pid"
if [ "$stopping" = 1 ]; then
    exit 0
fi
echo "rcs-sim: $emulator or $service exited; stopped both" >&2
exit 1
