"""Sockets: one HTTP listener per VM, all served by a single acceptor thread.

A fleet of 500 VMs means 500 listening sockets. Instead of 500
``serve_forever`` threads, one thread selects over all of them and hands each
accepted connection to its own short-lived handler thread (ThreadingMixIn).
That thread is also the only one that opens and closes listeners, which is
how a rebooting VM "refuses connections": its socket is closed until the
world says the VM is back, then bound again on the same address.
"""

from __future__ import annotations

import http.server
import selectors
import socket
import socketserver
import sys
import threading

from .imds import Request
from .reply import Reply

MAX_BODY = 1 << 20


class LoopbackServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer that never does name lookups (no DNS traffic, ever)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, service, label):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.service = service
        self.label = label
        super().__init__(address, handler)

    def server_bind(self):
        """Bind without ``HTTPServer.server_bind``'s ``getfqdn`` (a reverse DNS query)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class BaseHandler(http.server.BaseHTTPRequestHandler):
    """Reads any method, hands the request to ``answer`` and writes the Reply back."""

    protocol_version = "HTTP/1.1"
    server_version = "imds-simulator"
    sys_version = ""
    timeout = 30

    def version_string(self):
        """The Server header."""
        return self.server_version

    def handle_one_request(self):
        """Like the stdlib version, but every method goes to ``dispatch`` (so unknown verbs get 405, not 501)."""
        try:
            self.raw_requestline = self.rfile.readline(65537)  # pylint: disable=attribute-defined-outside-init
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self.close_connection = True
            body = self._read_body()
            if body is None:
                self.write_reply(Reply(413, b'{"error":"Request body too large"}'))
                return
            self.write_reply(self.answer(body))
        except (TimeoutError, ConnectionError) as exc:
            self.log_error("connection problem: %r", exc)
            self.close_connection = True

    def _read_body(self):
        """The request body (Content-Length or chunked), None if it is too large."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def answer(self, body):
        """Subclasses turn the parsed request into a Reply."""
        raise NotImplementedError

    def write_reply(self, reply):
        """Send a Reply, honouring the ``drop`` and ``truncate`` actions."""
        if reply.action == "drop":
            return
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if reply.action == "truncate":
            self.wfile.write(reply.body[:len(reply.body) // 2])
        else:
            self.wfile.write(reply.body)

    def header_map(self):
        """Request headers keyed by lower-case name."""
        return {name.lower(): value for name, value in self.headers.items()}

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        """Silence the stdlib's per-request stderr line (the request log replaces it)."""


class ImdsHandler(BaseHandler):
    """Handler for one VM's IMDS listener."""

    def answer(self, body):
        return self.server.service.handle(Request(self.server.label, self.command, self.path, self.header_map(), body))


class ListenerPool:
    """Opens, serves and closes the per-VM listeners (and serves the control listener) from one thread.

    ``down`` is a callable returning the names whose listener must be closed
    right now (rebooting VMs). ``settle()`` lets another thread wait until the
    pool has caught up with a change it just made.
    """

    def __init__(self, service, down, poll=0.05):
        self._service = service
        self._down = down
        self._poll = poll
        self._addresses = {}
        self._servers = {}
        self._closed = set()
        self._placeholders = {}
        self._reopen_failed = set()
        self._fixed = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._cond = threading.Condition()
        self._generation = 0
        self._stop = False
        self._thread = None

    def bind(self, name, address):
        """Bind ``name``'s listener now (so port 0 resolves to a real port); returns (host, port)."""
        server = self._open(name, address)
        self._addresses[name] = server.server_address[:2]
        return self._addresses[name]

    def add_fixed(self, server):
        """Also serve ``server`` (the control API); it stays open until ``stop``."""
        self._fixed.append(server)
        self._register(server)
        return server.server_address[:2]

    def _open(self, name, address):
        server = LoopbackServer(address, ImdsHandler, self._service, name)
        self._servers[name] = server
        self._register(server)
        return server

    def _register(self, server):
        server.socket.setblocking(False)
        self._selector.register(server.socket, selectors.EVENT_READ, server)

    def _close(self, name):
        server = self._servers.pop(name)
        self._selector.unregister(server.socket)
        server.server_close()

    def address(self, name):
        """(host, port) of a VM's listener."""
        return self._addresses[name]

    def is_open(self, name):
        """Whether the VM's listener currently accepts connections."""
        return name in self._servers

    def start(self):
        """Start the acceptor thread."""
        self._thread = threading.Thread(target=self._run, name="imds-listeners", daemon=True)
        self._thread.start()

    def stop(self):
        """Stop the acceptor thread and close every listener."""
        self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(10)
        for name in list(self._servers):
            self._close(name)
        for name in list(self._placeholders):
            self._release_port(name)
        for server in self._fixed:
            self._selector.unregister(server.socket)
            server.server_close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def settle(self, timeout=60.0):
        """Wait until the acceptor has applied the world's current down/up state.

        Returns as soon as it has; the bound is only for an acceptor that never gets there, so it is generous
        (a loaded machine can hold the acceptor thread up for seconds, and returning early would leave a
        rebooting VM's listener in the wrong state)."""
        if self._thread is None or not self._thread.is_alive():
            self._reconcile()
            return
        with self._cond:
            target = self._generation + 2
            self._wake()
            self._cond.wait_for(lambda: self._generation >= target or self._stop, timeout)

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _hold_port(self, name):
        """Keep a rebooting VM's port bound, without listening: connections are refused as on Azure, and no other
        process binding port 0 (a test server in another xdist worker) is handed the port meanwhile."""
        address = self._addresses[name]
        placeholder = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            placeholder.bind(address)
        except OSError:
            placeholder.close()
            return
        self._placeholders[name] = placeholder

    def _release_port(self, name):
        placeholder = self._placeholders.pop(name, None)
        if placeholder is not None:
            placeholder.close()

    def _reconcile(self):
        down = self._down()
        for name in [name for name in down if name in self._servers]:
            self._close(name)
            self._closed.add(name)
            self._hold_port(name)
        for name in [name for name in self._closed if name not in down]:
            try:
                self._open(name, self._addresses[name])  # beside the placeholder: both allow address reuse
                self._release_port(name)
            except OSError as exc:
                # Someone grabbed the port meanwhile: say so once, keep trying on later ticks.
                if name not in self._reopen_failed:
                    self._reopen_failed.add(name)
                    sys.stderr.write(f"imds-simulator: cannot reopen the listener of {name} on "
                                     f"{self._addresses[name]}: {exc}\n")
                continue
            self._closed.discard(name)
            self._reopen_failed.discard(name)

    def _run(self):
        while not self._stop:
            self._reconcile()
            for key, _mask in self._selector.select(self._poll):
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._accept(key.data)
            with self._cond:
                self._generation += 1
                self._cond.notify_all()

    @staticmethod
    def _accept(server):
        try:
            connection, client = server.socket.accept()
        except OSError:
            return
        connection.setblocking(True)
        server.process_request(connection, client)
