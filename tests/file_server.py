"""A local HTTP server for the download tests: 127.0.0.1 only, bounded in time and bytes.

``server.files[path] = bytes`` are served; ``server.mode[path]`` makes a path misbehave:

* ``'cut'``: announces the whole length, sends half, closes; ``'cut-nohead'``: the same, and HEAD
  is refused (405);
* ``'nohead'`` / ``'nohead-501'``: HEAD refused with 405 / 501, GET answered normally;
* ``'stall'``: headers and half the body, then nothing until :meth:`FileServer.stop` (at most 10 s);
* ``'endless'``: HEAD announces 10 bytes; GET announces no length and sends bytes until the client
  leaves (at most 64 MiB);
* ``'nolength'``: no Content-Length on HEAD or GET, the body then the connection closed;
* ``'redirect'``: 302 to ``server.redirects[path]`` (relative or absolute, any scheme).

``server.content_type[path]`` sets the Content-Type (default ``application/octet-stream``). Paths
under ``/<org>/<name>/resolve/`` answer as the Hugging Face hub does. ``server.requests`` lists
``(method, path)`` in arrival order; ``server.sent[path]`` the body bytes written for a path.
"""

import hashlib
import http.server
import threading

_ENDLESS_LIMIT = 64 << 20
_STALL_LIMIT_S = 10.0


class FileServer:
    """Serves ``files`` on 127.0.0.1 in a daemon thread; :meth:`stop` shuts it down."""

    def __init__(self):
        self.files, self.mode, self.requests = {}, {}, []
        self.redirects, self.content_type, self.sent = {}, {}, {}
        self.release = threading.Event()  # ends every stall
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold the server past this

            def log_message(self, *args):
                pass

            def _empty(self, code, **headers):
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _write(self, path, data):
                self.wfile.write(data)
                self.wfile.flush()
                server.sent[path] = server.sent.get(path, 0) + len(data)

            def _endless(self, path, body_too):
                self.send_response(200)
                if not body_too:
                    self.send_header("Content-Length", "10")
                    self.end_headers()
                    return
                self.end_headers()  # no length: the body ends when the connection does
                block = b"x" * (64 << 10)
                try:
                    while server.sent.get(path, 0) < _ENDLESS_LIMIT:
                        self._write(path, block)
                except OSError:  # the client left
                    pass
                self.close_connection = True

            def _answer(self, body_too: bool):
                server.requests.append((self.command, self.path))
                path = self.path.split("?")[0]
                data, mode = server.files.get(path), server.mode.get(path)
                hf = "/resolve/" in path
                if mode == "redirect":
                    return self._empty(302, Location=server.redirects[path])
                if mode == "endless":
                    return self._endless(path, body_too)
                if data is None:
                    return self._empty(404, **({"X-Error-Code": "EntryNotFound"} if hf else {}))
                if not body_too and mode in ("cut-nohead", "nohead", "nohead-501"):
                    return self._empty(501 if mode == "nohead-501" else 405)
                self.send_response(200)
                self.send_header("Content-Type", server.content_type.get(path, "application/octet-stream"))
                if mode != "nolength":
                    self.send_header("Content-Length", str(len(data)))
                if hf:
                    self.send_header("X-Repo-Commit", "0" * 40)
                    self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.end_headers()
                if not body_too:
                    return
                if mode in ("cut", "cut-nohead", "stall"):
                    self._write(path, data[: len(data) // 2])
                    if mode == "stall":
                        server.release.wait(_STALL_LIMIT_S)
                    self.close_connection = True
                    return
                self._write(path, data)
                if mode == "nolength":
                    self.close_connection = True

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.running = True

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self):
        self.release.set()
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.running = False
