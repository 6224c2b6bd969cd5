"""Host prerequisites for the systemd container harness.

The harness needs root (debootstrap, mount, systemd-nspawn) and a few Debian
tools.  Tools are installed with apt-get when missing; anything that still
makes the harness impossible raises :class:`HarnessUnavailable`, which the
pytest fixture turns into a skip (or a failure when ``CI=true``).
"""

import os
import shutil
import subprocess

from harness import debian_tools

# executable -> Debian package providing it
REQUIRED_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nsenter": "util-linux",
    "mount": "mount",
    "umount": "mount",
}

CAP_SYS_ADMIN = 21


class HarnessError(RuntimeError):
    """The harness ran but something went wrong (build, boot, ssh...)."""


class HarnessUnavailable(HarnessError):
    """This host cannot run the harness at all (not root, no tools...)."""


def ci_strict():
    """True when running under CI, where a skipped system test must fail instead."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def run(argv, timeout, check=True, **kwargs):
    """subprocess.run with a mandatory timeout and an error that shows stderr."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    try:
        proc = subprocess.run(argv, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"timed out after {timeout}s: {argv!r}") from exc
    if check and proc.returncode != 0:
        tail = (proc.stderr or "")[-4000:] if isinstance(proc.stderr, str) else ""
        raise HarnessError(f"command failed (rc={proc.returncode}): {argv!r}\n{tail}")
    return proc


def _has_cap(bit):
    """Whether the current process has capability *bit* in its effective set."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << bit))
    except OSError:
        return False
    return False


def _filesystem_listed(name):
    """Whether the kernel lists filesystem *name* in /proc/filesystems."""
    try:
        with open("/proc/filesystems", encoding="ascii") as fh:
            return any(line.split()[-1] == name for line in fh if line.strip())
    except OSError:
        return False


def _overlay_supported():
    """overlayfs must be available to give every session a fresh upper layer."""
    if _filesystem_listed("overlay"):
        return True
    if shutil.which("modprobe"):
        run(["modprobe", "overlay"], timeout=30, check=False)
    return _filesystem_listed("overlay")


def missing_tools():
    """Executables from REQUIRED_TOOLS that are not on PATH."""
    return sorted(tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None)


def ensure_host_ready(install=True):
    """Make sure this host can build and boot containers, installing tools if allowed.

    Raises HarnessUnavailable with a message starting with "skipped:" so the
    reason shows up verbatim in pytest's skip report.
    """
    if os.geteuid() != 0:
        raise HarnessUnavailable("skipped: needs root (debootstrap, overlay mounts and systemd-nspawn need it)")
    if not _has_cap(CAP_SYS_ADMIN):
        raise HarnessUnavailable("skipped: needs root with CAP_SYS_ADMIN (mounts and namespaces); this root lacks it")
    missing = missing_tools()
    if missing and install:
        if shutil.which("apt-get") is None:
            raise HarnessUnavailable(f"skipped: needs {', '.join(missing)} and there is no apt-get to install them")
        packages = sorted({REQUIRED_TOOLS[tool] for tool in missing})
        proc = debian_tools.apt_install(packages, quiet=False)
        if proc.returncode != 0:
            raise HarnessUnavailable(f"skipped: could not apt-get install {' '.join(packages)}:\n{proc.stderr[-2000:]}")
        missing = missing_tools()
    if missing:
        raise HarnessUnavailable(f"skipped: needs tools not installed here: {', '.join(missing)}")
    if not _overlay_supported():
        raise HarnessUnavailable("skipped: the kernel has no overlayfs support")
