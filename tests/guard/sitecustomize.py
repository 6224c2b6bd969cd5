# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Network guard for every Python process of the test suites.

Tests, the demo and benchmarks talk only to the simulator on loopback. This
refuses any other connection (169.254.169.254 above all) and any name lookup
that is not a loopback name, so a mistake fails loudly instead of reaching
Azure's endpoint or the internet. The test harness puts this directory first
on PYTHONPATH for the processes it starts (ansible-playbook, the simulator,
the watcher); pytest's conftest installs it in-process.
"""

from __future__ import annotations

import ipaddress
import os
import socket

LOOPBACK_NAMES = frozenset(["localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"])


class NonLoopbackConnection(ConnectionRefusedError):
    """Raised instead of contacting anything that is not on this machine."""


def _is_loopback(host):
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(address, family):
    if family == getattr(socket, "AF_UNIX", None) or not isinstance(address, tuple):
        return
    if not _is_loopback(address[0]):
        raise NonLoopbackConnection("test network guard: refused connection to %r (only loopback is allowed)"
                                    % (address,))


def install():
    if getattr(socket, "_imds_guard_installed", False):
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        _check(address, self.family)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(address, self.family)
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        _check(args[-1], self.family)
        return real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise NonLoopbackConnection("test network guard: refused to resolve %r (only loopback is allowed)"
                                        % (host,))
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = getaddrinfo
    socket._imds_guard_installed = True


if os.environ.get("IMDS_TEST_NETWORK_GUARD", "1") != "0":
    install()
