# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Headless Chromium for the report tests: --dump-dom, --screenshot, and a minimal Chrome
DevTools Protocol client (a websocket over loopback, standard library only) to click on
table headers and read the DOM back.

Chromium is Debian's `chromium` package; `ensure_chromium()` installs it with apt-get when
it is missing and we are root. Every launch gets a fresh profile, no sandbox (root), no
GPU, and no background networking, component updates or sync, so it contacts nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request

from harness import debian_tools  # pylint: disable=import-error  # tests/ is on sys.path (tests/system/conftest.py)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
         "--mute-audio", "--hide-scrollbars"]


def find_chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium():
    """The chromium binary, installing Debian's package when missing and root; None when impossible."""
    return find_chromium() or debian_tools.ensure("chromium")["chromium"]


def _run(binary, args, timeout=90):
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([binary] + FLAGS + ["--user-data-dir=%s" % profile] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=True)


def dump_dom(binary, url):
    """The DOM after the page's scripts ran, as HTML."""
    return _run(binary, ["--virtual-time-budget=2000", "--dump-dom", url]).stdout.decode("utf-8")


def screenshot(binary, url, path, width=1400, height=1800):
    _run(binary, ["--virtual-time-budget=2000", "--window-size=%d,%d" % (width, height), "--screenshot=%s" % path,
                  url])
    with open(path, "rb") as handle:
        return handle.read()


class WebSocket(object):
    """Just enough of RFC 6455 for CDP: masked text frames out, text frames in (fragmented or not)."""

    def __init__(self, url, timeout=30):
        assert url.startswith("ws://")
        hostport, dummy, path = url[5:].partition("/")
        host, dummy, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.sock.sendall(("GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, hostport, key))
                          .encode("ascii"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the websocket handshake was cut short")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError("websocket handshake refused: %r" % status)
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def send(self, text):
        payload = text.encode("utf-8")
        header = bytearray([0x81])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack("!H", len(payload))
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", len(payload))
        mask = os.urandom(4)
        header += mask
        self.sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self):
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the websocket was closed by the browser")
            if opcode in (0x9, 0xA):  # ping, pong: not used by Chromium's DevTools
                continue
            message += payload
            if first & 0x80:
                return message.decode("utf-8")

    def close(self):
        self.sock.close()


class Browser(object):
    """One headless Chromium with a page open on `url`, driven over CDP."""

    def __init__(self, binary, url, width=1400, height=1000):
        self.profile = tempfile.mkdtemp(prefix="chromium-cdp-")
        self.proc = subprocess.Popen([binary] + FLAGS + ["--user-data-dir=%s" % self.profile,
                                                         "--remote-debugging-address=127.0.0.1",
                                                         "--remote-debugging-port=0",
                                                         "--window-size=%d,%d" % (width, height), url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ws = None
        self.next_id = 0
        try:
            port = self._devtools_port()
            deadline = time.monotonic() + 30
            page = None
            while page is None and time.monotonic() < deadline:
                with _NO_PROXY.open("http://127.0.0.1:%d/json/list" % port, timeout=5) as response:
                    pages = [t for t in json.load(response) if t.get("type") == "page"]
                page = pages[0] if pages else None
                if page is None:
                    time.sleep(0.1)
            if page is None:
                raise RuntimeError("Chromium opened no page")
            self.ws = WebSocket(page["webSocketDebuggerUrl"])
            self.wait_for("document.readyState === 'complete' && "
                          "document.documentElement.getAttribute('data-ready') === 'true'")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self):
        marker = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("Chromium exited with %s" % self.proc.returncode)
            try:
                with open(marker) as handle:
                    first = handle.readline().strip()
                if first:
                    return int(first)
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError("Chromium did not open its DevTools port")

    def call(self, method, **params):
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError("%s: %s" % (method, message["error"]))
                return message.get("result", {})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError("%s raised %s" % (expression, result["exceptionDetails"]))
        return result["result"].get("value")

    def wait_for(self, expression, timeout=20):
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError("still false after %s s: %s" % (timeout, expression))
            time.sleep(0.1)

    def click(self, selector):
        """A real mouse click in the middle of the element, as a user's."""
        box = self.evaluate("(() => { const e = document.querySelector(%s); e.scrollIntoView({block: 'center'});"
                            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
                            % json.dumps(selector))
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def close(self):
        if self.ws is not None:
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
