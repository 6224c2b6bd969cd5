"""Real-systemd test machine harness.

A cached Debian bookworm rootfs (see :mod:`harness.rootfs`) is booted with
``systemd-nspawn`` on a fresh overlayfs per session (see :mod:`harness.container`)
and reached over ssh on 127.0.0.1, so tests can treat it like an Azure VM.

Import it with ``tests/`` on ``sys.path`` (``tests/system/conftest.py`` does this),
e.g. ``from harness.container import SystemdContainer``.
"""

from harness.hostenv import HarnessUnavailable, HarnessError  # noqa: F401
