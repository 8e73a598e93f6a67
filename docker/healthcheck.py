"""The image's HEALTHCHECK: exit 0 when the relay in this container answers 200 on /readyz
(over HTTPS when it serves TLS; its certificate names the public host, so it is not checked)."""

import os
import ssl
import sys
import urllib.request

tls = bool(os.environ.get("PNR_TLS_CERT_FILE"))
host = os.environ.get("PNR_HOST", "0.0.0.0")
host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
host = f"[{host}]" if ":" in host else host
url = f"{'https' if tls else 'http'}://{host}:{os.environ.get('PNR_PORT', '8080')}/readyz"
context = ssl._create_unverified_context() if tls else None
try:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as error:
    print(f"not ready: {error}", file=sys.stderr)
    sys.exit(1)
