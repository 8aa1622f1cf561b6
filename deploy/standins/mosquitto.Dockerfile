# Stand-in for eclipse-mosquitto:2, built by deploy/base-images.sh only when no image registry is
# reachable: Debian bookworm's Mosquitto 2.0 with what the official image provides and the project
# relies on: the `mosquitto` user with uid 1883, mosquitto_sub/mosquitto_pub, and the default command
# `mosquitto -c /mosquitto/config/mosquitto.conf`.
FROM rcs-standin/debian:bookworm
RUN groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 1883 --gid 1883 --no-create-home --home-dir /var/empty mosquitto \
    && apt-get update \
    && apt-get install -y --no-install-recommends mosquitto mosquitto-clients \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \
    && ln -s /usr/sbin/mosquitto /usr/bin/mosquitto
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
