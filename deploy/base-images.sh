#!/usr/bin/env bash
# Sourced by deploy/check.sh. ensure_base_images: the two base images of the project (FROM in
# Dockerfile: python:3.11-slim; docker-compose.yml: eclipse-mosquitto:2) are present afterwards.
# When the image registry answers they are pulled; when it cannot be reached, local stand-ins are
# built from Debian packages (debootstrap + docker import, then deploy/standins/*.Dockerfile) and
# tagged with the official names, so that the Dockerfile and compose file are used unchanged.
#
# The stand-in base carries this machine's CA certificates (/usr/local/share/ca-certificates): where
# outgoing TLS is inspected by a proxy, pip in the image build must trust what the host trusts.

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STANDIN_BASE=rcs-standin/debian:bookworm
BASE_IMAGES_NOTE=

standin_base() {
    docker image inspect "$STANDIN_BASE" >/dev/null 2>&1 && return 0
    local root
    root=$(mktemp -d /var/tmp/rcs-debootstrap.XXXXXX)
    say "debootstrap: a minimal Debian bookworm from $DEBIAN_MIRROR (a few minutes)"
    if ! $SUDO debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$DEBIAN_MIRROR" \
        >/tmp/rcs-debootstrap.log 2>&1; then
        say "debootstrap failed:"; tail -20 /tmp/rcs-debootstrap.log >&2
        $SUDO rm -rf "$root"
        return 1
    fi
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        $SUDO cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        $SUDO chroot "$root" update-ca-certificates >/dev/null
    fi
    $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    $SUDO tar -C "$root" -c . | docker import --change 'CMD ["bash"]' --change 'LABEL org.rcs.standin=debootstrap' - "$STANDIN_BASE" >/dev/null
    $SUDO rm -rf "$root"
}

standin() { # IMAGE DOCKERFILE
    docker image inspect "$1" >/dev/null 2>&1 && return 0
    say "building a stand-in for $1 from Debian packages ($2)"
    docker build --network host -t "$1" -f "$2" "$(dirname "$2")" >/tmp/rcs-standin-build.log 2>&1 \
        || { tail -20 /tmp/rcs-standin-build.log; return 1; }
}

# Stand-ins carry the label org.rcs.standin (inherited from their base): said in the summary.
is_standin() { [ -n "$(docker image inspect -f '{{index .Config.Labels "org.rcs.standin"}}' "$1" 2>/dev/null)" ]; }

ensure_base_images() {
    local image missing=()
    for image in python:3.11-slim eclipse-mosquitto:2; do
        docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        is_standin python:3.11-slim && BASE_IMAGES_NOTE="base images: local Debian stand-ins (built earlier)"
        echo "base images present${BASE_IMAGES_NOTE:+ (${BASE_IMAGES_NOTE#base images: })}"
        return 0
    fi
    if timeout 60 docker pull -q "${missing[0]}" >/dev/null 2>&1; then
        for image in "${missing[@]:1}"; do docker pull -q "$image" >/dev/null; done
        return 0
    fi
    say "the image registry cannot be reached: building local stand-ins for ${missing[*]} from Debian packages"
    BASE_IMAGES_NOTE="base images: local Debian stand-ins (no image registry)"
    standin_base || return 1
    local here
    here=$(dirname "${BASH_SOURCE[0]}")
    for image in "${missing[@]}"; do
        case $image in
            python:*) standin "$image" "$here/standins/python.Dockerfile" ;;
            eclipse-mosquitto:*) standin "$image" "$here/standins/mosquitto.Dockerfile" ;;
        esac || return 1
    done
    echo "built local stand-ins for ${missing[*]} from Debian bookworm packages"
}
