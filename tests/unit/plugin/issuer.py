"""An OpenID Connect issuer's two documents on loopback (discovery and the public key set), for the unit tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc.jwk import KeySet, RSAKey


@contextmanager
def serving_issuer(key: RSAKey, endpoints: tuple[str, ...] = ()) -> Iterator[str]:
    """Serve ``/.well-known/openid-configuration`` and ``/jwks`` (the public half of ``key``); yield the issuer URL.

    :param key: the issuer's signing key
    :param endpoints: metadata entries to add as ``<issuer>/<name>`` (``authorization_endpoint``: ``.../auth``)
    """
    state: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            base = state["issuer"]
            metadata = {"issuer": base, "jwks_uri": f"{base}/jwks", "id_token_signing_alg_values_supported": ["RS256"],
                        **{name: f"{base}/{name.split('_')[0]}" for name in endpoints}}
            body = {"/.well-known/openid-configuration": metadata,
                    "/jwks": KeySet([key]).as_dict(private=False)}.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body or {}).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["issuer"] = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state["issuer"]
    finally:
        server.shutdown()
        server.server_close()
