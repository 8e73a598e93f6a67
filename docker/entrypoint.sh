#!/bin/sh
# The image's entry point: tokens on by default, and a numba cache the container can write.
set -eu

# Joins need a token. Without a secret given, one is generated for this container and printed
# once, with an admin token for room control (both change when the container is recreated).
if [ -z "${PNR_TOKEN_SECRET:-}" ]; then
    PNR_TOKEN_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    export PNR_TOKEN_SECRET
    echo "PNR_TOKEN_SECRET was not set; generated for this container: $PNR_TOKEN_SECRET" >&2
    echo "  mint a join token: docker exec -e PNR_TOKEN_SECRET=... CONTAINER percepnet-relay token ROOM" >&2
fi
if [ -z "${PNR_ADMIN_TOKEN:-}" ]; then
    PNR_ADMIN_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    export PNR_ADMIN_TOKEN
    echo "PNR_ADMIN_TOKEN was not set; generated for this container: $PNR_ADMIN_TOKEN" >&2
fi

# numba loads cached kernels only from a folder it may write to, so the kernels compiled at
# build time are copied into NUMBA_CACHE_DIR (under /tmp: a tmpfs with --read-only).
if ! mkdir -p "$NUMBA_CACHE_DIR" 2>/dev/null || [ ! -w "$NUMBA_CACHE_DIR" ]; then
    echo "error: NUMBA_CACHE_DIR=$NUMBA_CACHE_DIR is not writable (with --read-only, add --tmpfs /tmp)" >&2
    exit 2
fi
cp -R /opt/numba-cache/. "$NUMBA_CACHE_DIR"/ 2>/dev/null || true

exec "$@"
