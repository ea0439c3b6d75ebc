"""A /metrics endpoint for tests, answering in the plain text format as the worker's server does.

Not prometheus_client's negotiating server: for an OpenMetrics Accept header it rewrites the ':' of `vllm:`
names to '_' (prometheus/client_python#1177), and the operator would find no series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_metrics(
    render: Callable[[], tuple[bytes, str]], address: str = "127.0.0.1", name: str = "metrics"
) -> ThreadingHTTPServer:
    """Serves `render()`'s body and content type on a free port from a daemon thread; the caller shuts it down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = render()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer((address, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server
