#!/usr/bin/env bash
# Container smoke test (CI runs it after the suite): build the image, run it as another uid with
# --read-only and no secret given, wait for /readyz and a healthy HEALTHCHECK, join with an
# aiortc client from inside the image (a tokenless join refused, a token's join hearing its own
# enhanced voice), then `docker stop` during a call, which must drain and exit 0 within Docker's
# default 10 s.
#
# Needs root or a Docker engine. Starts dockerd (Debian's docker.io, installed if missing) when
# none answers, and stops it again. Where python:3.11-slim cannot be pulled (no image registry),
# builds a stand-in once from Debian packages: debootstrap's bookworm with Debian's Python 3.11
# as a venv in /usr/local (the official image's layout), kept as the image pnr-python-standin.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=percepnet-relay:smoke
STANDIN=pnr-python-standin:3.11
START=$(date +%s)
work=$(mktemp -d)
dockerd_pid=""
container=""

say() { echo "smoke [$(($(date +%s) - START)) s]: $*"; }
fail() {
    echo "smoke: FAILED: $*" >&2
    [ -n "$container" ] && docker logs --tail 30 "$container" >&2 || true
    exit 1
}
cleanup() {
    [ -n "$container" ] && docker rm -f "$container" >/dev/null 2>&1 || true
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -rf "$work"
}
trap cleanup EXIT

install_debian() {  # PACKAGE...: install what is missing (CI machines start without them)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

start_engine() {
    docker info >/dev/null 2>&1 && return
    command -v dockerd >/dev/null || install_debian docker.io
    # No bridge and no iptables rules: the containers here use the host's network only.
    dockerd --bridge=none --iptables=false --ip6tables=false >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 100); do docker info >/dev/null 2>&1 && return; sleep 0.3; done
    cat "$work/dockerd.log" >&2
    fail "dockerd did not start"
}

debian_mirror() {  # the machine's own Debian mirror, so that debootstrap uses what apt uses
    sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -m1 '/debian/\?$' \
        || sed -n 's/^deb \+\(http[^ ]*\) \+bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1
}

build_standin() {
    command -v debootstrap >/dev/null || install_debian debootstrap
    local rootfs="$work/rootfs"
    # shellcheck disable=SC2046  # an empty mirror means debootstrap's default
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" $(debian_mirror) >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap"; }
    chroot "$rootfs" /usr/bin/python3 -m venv /usr/local
    # Trust what this machine trusts (a TLS-inspecting proxy's CA, say): pip in the build
    # then reaches the package index as the host's pip does.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' - "$STANDIN" >/dev/null
}

base_image() {
    if docker image inspect python:3.11-slim >/dev/null 2>&1 \
        || timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then
        echo python:3.11-slim
        return
    fi
    docker image inspect "$STANDIN" >/dev/null 2>&1 || build_standin
    echo "$STANDIN"
}

free_port() {  # [COUNT]: the first of COUNT consecutive free ports (serve runs a node on each)
    python3 - "${1:-1}" <<'EOF'
import random, socket, sys
count = int(sys.argv[1])
while True:
    first = random.randrange(20000, 32000 - count)
    try:
        for port in range(first, first + count):
            socket.socket().bind(("127.0.0.1", port))
    except OSError:
        continue
    print(first)
    break
EOF
}

http_status() {  # URL: the HTTP status, 000 when nothing answers
    python3 - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    print("000")
EOF
}

frames_enhanced() {  # the relay's pnr_frames_enhanced_total
    python3 - "$url/metrics" <<'EOF'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
print(int(float(re.search(r"^pnr_frames_enhanced_total (\S+)", text, re.M).group(1))))
EOF
}

client() {  # SECONDS [hold]: the aiortc client, run inside the image
    docker run --rm -i --network host --read-only --tmpfs /tmp --user 12345:12345 \
        -e PNR_TOKEN_SECRET="$secret" --entrypoint python "$IMAGE" - "$url" "$@" \
        <docker/smoke_client.py
}

start_engine
say "engine $(docker version -f '{{.Server.Version}}')"
base=$(base_image)
say "base image $base"
build_start=$(date +%s)
docker build --network host -q --build-arg PYTHON_IMAGE="$base" -f docker/Dockerfile \
    -t "$IMAGE" . >/dev/null || fail "docker build"
say "image built in $(($(date +%s) - build_start)) s"

port=$(free_port)
url="http://127.0.0.1:$port"
run_start=$(date +%s.%N)
# one node (the default is one per core): the checks below read that node's /metrics
container=$(docker run -d --network host --read-only --tmpfs /tmp --user 12345:12345 \
    -e PNR_HOST=127.0.0.1 -e PNR_PORT="$port" -e PNR_PROCESSES=1 \
    -e PNR_ICE_HOST_ADDRESSES=127.0.0.1 "$IMAGE")
until [ "$(http_status "$url/readyz")" = 200 ]; do
    [ "$(docker inspect -f '{{.State.Running}}' "$container")" = true ] || fail "relay exited"
    python3 -c "import sys, time; sys.exit(time.time() - $run_start > 120)" || fail "not ready in 120 s"
    sleep 0.2
done
say "ready $(python3 -c "import time; print(f'{time.time() - $run_start:.1f}')") s after docker run (uid 12345, --read-only)"

secret=$(docker logs "$container" 2>&1 | sed -n 's/^PNR_TOKEN_SECRET was not set; generated for this container: //p')
[ -n "$secret" ] || fail "no generated token secret in the log"
client 4 || fail "client"

for _ in $(seq 60); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$container")
    [ "$health" = healthy ] && break
    sleep 0.5
done
[ "$health" = healthy ] || fail "HEALTHCHECK says $health"
say "HEALTHCHECK healthy"

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -n "$chromium" ]; then  # the page, from Chromium on the host, with its fake microphone
    token=$(docker run --rm --entrypoint percepnet-relay -e PNR_TOKEN_SECRET="$secret" "$IMAGE" \
        token smoke --name chromium)
    enhanced_before=$(frames_enhanced)
    "$chromium" --headless=new --no-sandbox --disable-gpu --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$work/chromium" --use-fake-ui-for-media-stream \
        --use-fake-device-for-media-stream --allow-loopback-in-peer-connection \
        --disable-features=WebRtcHideLocalIpsWithMdns --autoplay-policy=no-user-gesture-required \
        "$url/?room=smoke&name=chromium&autojoin=1&token=$token" >/dev/null 2>&1 &
    browser=$!
    for _ in $(seq 300); do
        [ "$(frames_enhanced)" -gt "$((enhanced_before + 100))" ] && break  # 2 s of its voice
        sleep 0.2
    done
    kill "$browser" 2>/dev/null || true
    wait "$browser" 2>/dev/null || true
    [ "$(frames_enhanced)" -gt "$((enhanced_before + 100))" ] || fail "the page never sent audio"
    say "the page in Chromium joined with a token and its voice was enhanced"
else
    say "no Chromium on this machine: the page is not tried"
fi

enhanced_before=$(frames_enhanced)
client 30 hold &
holder=$!
until [ "$(frames_enhanced)" -gt "$((enhanced_before + 25))" ]; do  # its voice flows
    kill -0 "$holder" 2>/dev/null || fail "the holding client ended early"
    sleep 0.2
done
stop_start=$(date +%s.%N)
docker stop "$container" >/dev/null
stop_seconds=$(python3 -c "import time; print(f'{time.time() - $stop_start:.1f}')")
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
wait "$holder" || true
[ "$exit_code" = 0 ] || fail "docker stop during a call: exit code $exit_code after $stop_seconds s"
say "docker stop during a call: drained, exit 0 after $stop_seconds s"

# Served over HTTPS (a self-signed certificate), the HEALTHCHECK still finds /readyz.
mkdir "$work/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
chmod 0755 "$work/tls" && chmod 0644 "$work/tls/key.pem"  # a throwaway key, for uid 12345
docker rm -f "$container" >/dev/null
port=$(free_port 2)  # two nodes, as on a 2-core host: the HEALTHCHECK asks the first
container=$(docker run -d --network host --read-only --tmpfs /tmp --user 12345:12345 \
    -v "$work/tls:/tls:ro" -e PNR_TLS_CERT_FILE=/tls/cert.pem -e PNR_TLS_KEY_FILE=/tls/key.pem \
    -e PNR_HOST=127.0.0.1 -e PNR_PORT="$port" -e PNR_PROCESSES=2 \
    -e PNR_ICE_HOST_ADDRESSES=127.0.0.1 "$IMAGE")
for _ in $(seq 120); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$container")
    [ "$health" = healthy ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$container")" = true ] || fail "TLS relay exited"
    sleep 0.5
done
[ "$health" = healthy ] || fail "over HTTPS the HEALTHCHECK says $health"
say "over HTTPS: HEALTHCHECK healthy"
say "passed"
