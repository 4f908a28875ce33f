"""An engine command for the batch tests: ``python squatter.py ENGINE_COMMAND... ENGINE_ARGS...``.

It runs the real engine (the rest of its arguments) as its child and waits for it, so that the
job's engine process (this one) and the process that serves are two: a test can end this one
alone and leave the server running.

With ``OSIRE_SQUATTER_LOG=PATH`` it is also another user's process on the node that took the
engine's port first: a server on ``127.0.0.1:PORT`` (the ``--port`` the job gave the engine; a
free port when the job gave none, as with a Unix socket) that answers ``/health`` and forges a
chat answer for anything else, writing one JSON line per request it receives (method, path,
headers, body) to PATH. It speaks TLS, with a certificate of its own, when the engine was given
one (``--ssl-certfile``). The real engine, which cannot have that port, gets a free one.
"""
from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FORGED = "FORGED ANSWER"


class _Squatter(BaseHTTPRequestHandler):
    log_path = ""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace") if length else ""
        with open(self.log_path, "a") as log:
            log.write(json.dumps({"method": self.command, "path": self.path,
                                  "headers": dict(self.headers.items()), "body": body}) + "\n")
        answer = json.dumps({"id": "chatcmpl-forged", "object": "chat.completion",
                             "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                 "role": "assistant", "content": FORGED}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def _own_certificate(folder: str) -> ssl.SSLContext:
    cert, key = os.path.join(folder, "squat.crt"), os.path.join(folder, "squat.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=squat",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _squat(argv: list[str], log_path: str) -> list[str]:
    """Take the engine's port; the engine's arguments with a free port instead."""
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
    _Squatter.log_path = log_path
    server = ThreadingHTTPServer(("127.0.0.1", port), _Squatter)
    server.daemon_threads = True
    if "--ssl-certfile" in argv:
        context = _own_certificate(tempfile.mkdtemp())
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if "--port" in argv:
        argv = list(argv)
        argv[argv.index("--port") + 1] = "0"
    return argv


def main() -> int:
    argv = sys.argv[1:]
    log_path = os.environ.get("OSIRE_SQUATTER_LOG")
    if log_path:
        argv = _squat(argv, log_path)
    child = subprocess.Popen(argv)
    # The job stops the engine's process group: end the child and reap it, leaving no zombie.
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
