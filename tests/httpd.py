"""HTTP servers on 127.0.0.1 for tests (Python's HTTP server in a thread): a handler class, or a folder's files."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def serve(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port; yield its base URL; stop the server at the end.

    :param handler: the request handler class (or a partial of one)
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="httpd", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def serve_folder(root: Path) -> contextlib.AbstractContextManager[str]:
    """Serve the files of ``root``; a context manager yielding the base URL.

    :param root: the folder served
    """
    return serve(functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root)))
