# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A scripted HTTP server on loopback: each request gets the next canned answer.

The client is tested over real sockets (requests, urllib3, timeouts, dropped
connections) without depending on the simulator's own behaviour.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

Answer = collections.namedtuple("Answer", "status body headers delay action")


def outcome_of(call, bound=120):
    """What `call` returned, or the exception it raised, once it has finished. Fails when it is still running after
    `bound` seconds: a bounded wait for a client that must give up on its own, not a measure of how long it took."""
    box = {}

    def run():
        try:
            box["outcome"] = call()
        except Exception as exc:  # pylint: disable=broad-exception-caught  # handed to the test, which checks it
            box["outcome"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), "still running after %d s" % bound
    return box["outcome"]


def answer(status=200, body=None, headers=None, delay=0.0, action=None):
    """`delay`: seconds to wait before answering (the client must tolerate them). `action="hang"`: never answer
    while the test runs (the connection is dropped at stop()), for a client that must time out whatever the
    machine's load: a fixed delay only beats the client's timeout when the client is not held up longer.
    `action="trickle"`: the status and headers, then a body of a byte every 0.05 s that never ends while the test
    runs; `"trickle-head"`: the same inside a header line. Either never leaves a socket read waiting long, so only
    a bound on the whole exchange stops a client."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    return Answer(status, body if body is not None else b"", headers or {}, delay, action)


class ScriptedServer(object):
    def __init__(self):
        self.answers = collections.deque()
        self.requests = []
        self.default = answer(200, {"DocumentIncarnation": 1, "Events": []})
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                server.requests.append({
                    "method": self.command, "path": url.path, "query": parse_qsl(url.query),
                    "headers": dict(self.headers), "body": body})
                reply = server.answers.popleft() if server.answers else server.default
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.action == "hang":
                    server.stopping.wait(300)
                if reply.action in ("trickle", "trickle-head"):
                    self.close_connection = True
                    self._trickle(reply.action)
                    return
                if reply.action in ("drop", "hang"):
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(reply.status)
                if reply.action == "no-length":
                    self.close_connection = True  # the body ends when the connection does
                else:
                    declared = len(reply.body) * 2 + 10 if reply.action == "truncate" else len(reply.body)
                    self.send_header("Content-Length", str(declared))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(reply.body)
                if reply.action == "truncate":
                    self.close_connection = True

            def _trickle(self, action):
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" if action == "trickle" \
                    else b"HTTP/1.1 200 OK\r\nX-Slow: "
                try:
                    self.wfile.write(head)
                    self.wfile.flush()
                    while not server.stopping.wait(0.05):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:  # the client hung up
                    pass

            do_GET = _serve
            do_POST = _serve
            do_PATCH = _serve
            do_PUT = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        self.endpoint = "http://127.0.0.1:%d" % self._httpd.server_address[1]

    def script(self, *answers):
        self.answers.extend(answers)

    def stop(self):
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
