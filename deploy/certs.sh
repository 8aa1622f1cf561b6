#!/usr/bin/env bash
# certs.sh DIR [NAME...]: the stand's own certificate authority and the server certificates of the
# broker (TLS listener 8883) and the gateway (HTTPS), in DIR:
#
#   ca.crt                   the stand CA: give it to every client (RCS_MQTT_TLS_CA_FILE, browsers,
#                            mosquitto_sub --cafile); it is not secret
#   ca.key                   the CA's private key (mode 0600): keep it off the stand network's clients
#   broker.crt, broker.key   Mosquitto's certificate and key
#   gateway.crt, gateway.key the gateway's certificate and key
#
# The server certificates name NAME... (the Pi's host names or addresses as clients reach it, e.g.
# rcs-pi.local 192.168.10.2) plus localhost, 127.0.0.1 and the compose service names. An existing CA
# is kept (clients keep trusting it); the server certificates are issued anew at every run.
# Needs openssl. Validity: CA 10 years, servers 2 years.
set -euo pipefail
if [ "$#" -lt 1 ]; then
    echo "usage: $0 DIR [NAME...]" >&2
    exit 2
fi
dir=$1
shift
mkdir -p "$dir"
umask 077

san="DNS:localhost,IP:127.0.0.1,DNS:mosquitto,DNS:gateway"
for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san="$san,IP:$name"; else san="$san,DNS:$name"; fi
done

if [ ! -s "$dir/ca.crt" ] || [ ! -s "$dir/ca.key" ]; then
    openssl req -x509 -newkey rsa:3072 -sha256 -days 3650 -nodes -subj "/CN=rcs stand CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
fi

for server in broker gateway; do
    openssl req -newkey rsa:3072 -sha256 -nodes -subj "/CN=rcs $server" \
        -keyout "$dir/$server.key" -out "$dir/$server.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 730 -sha256 -out "$dir/$server.crt" \
        -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san") \
        2>/dev/null
    rm -f "$dir/$server.csr"
done
rm -f "$dir/ca.srl"
chmod 644 "$dir/ca.crt" "$dir/broker.crt" "$dir/gateway.crt"
echo "certificates in $dir for $san"
