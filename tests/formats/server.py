"""A local HTTP server for the remote-shard tests: 127.0.0.1, a free port, one thread a
request. `stall_after` makes it a server that stops sending (without closing) after that many
bytes of each shard (.tar): the stall lasts until the server shuts down, at most STALL_LIMIT."""

import functools
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STALL_LIMIT = 60.0  # seconds: a stalled response never outlives a test by more


class QuietHandler(SimpleHTTPRequestHandler):
    stall_after: int | None = None
    stop: threading.Event

    def log_message(self, *args) -> None:  # no access log in the test output
        pass

    def copyfile(self, source, outputfile) -> None:
        if self.stall_after is None or not self.path.endswith(".tar"):
            shutil.copyfileobj(source, outputfile)
            return
        outputfile.write(source.read(self.stall_after))
        outputfile.flush()
        self.stop.wait(STALL_LIMIT)  # sending nothing more, the connection left open


@contextmanager
def serve(folder: Path, stall_after: int | None = None) -> Iterator[str]:
    """Serve `folder` over HTTP while the block runs; yields the base URL."""
    stop = threading.Event()
    handler_class = type("Handler", (QuietHandler,), {"stall_after": stall_after, "stop": stop})
    handler = functools.partial(handler_class, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
