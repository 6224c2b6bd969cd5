"""The collection as users get it: a tarball built from this checkout by ansible-galaxy, and served over loopback
HTTP the way Galaxy or a storage account serves it to a VM."""

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path

from harness.ansible_env import ansible_env

ROOT = Path(__file__).resolve().parent.parent.parent


def build_tarball(out_dir):
    """ansible-galaxy collection build of this checkout into out_dir; returns the tarball's path."""
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    proc = subprocess.run([str(galaxy), "collection", "build", "--output-path", str(out_dir), str(ROOT)],
                          env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise AssertionError("ansible-galaxy collection build failed:\n" + proc.stdout)
    found = sorted(Path(out_dir).glob("imds-scheduled_events-*.tar.gz"))
    if len(found) != 1:
        raise AssertionError("expected one tarball in %s, found %s" % (out_dir, found))
    return found[0]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        self.server.requests.append(self.path)


class FileServer(object):
    """A directory served read-only on 127.0.0.1 (a port of its own); `requests` lists the paths asked for."""

    def __init__(self, directory):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.requests = []
        self.directory = Path(directory)
        self._thread = threading.Thread(target=self._server.serve_forever, name="file-server", daemon=True)

    @property
    def requests(self):
        return list(self._server.requests)

    def url(self, name=""):
        return "http://127.0.0.1:%d/%s" % (self._server.server_address[1], name)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=30)
