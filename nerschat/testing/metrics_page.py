"""A Prometheus /metrics page whose text a test sets, served from a thread on 127.0.0.1.

For tests of what reads servers' metrics (load tables, the pool's scaling, the pilot's
probes) without running an engine: `page.text` is what the next GET answers, `page.status`
its status, `page.location` a redirect target (sent with status 302), and `page.headers`
the request headers seen, newest last.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class MetricsPage:
    """A page on a free port of 127.0.0.1: `with MetricsPage(text) as page: ... page.url`."""

    def __init__(self, text: str = "", status: int = 200):
        self.text, self.status = text, status
        self.location: str | None = None
        self.headers: list[dict[str, str]] = []
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                page.headers.append(dict(self.headers.items()))
                body = page.text.encode()
                self.send_response(302 if page.location else page.status)
                if page.location:
                    self.send_header("Location", page.location)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT/metrics`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/metrics"

    def __enter__(self) -> MetricsPage:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["MetricsPage"]
