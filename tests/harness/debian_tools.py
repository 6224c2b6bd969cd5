"""Programs from Debian's archive that the suites run for real (promtool, amtool, prometheus, node_exporter,
alertmanager; java for ansible-rulebook's Drools engine; Chromium for the fleet report; debootstrap and nspawn for the
containers), installed with apt-get when missing, as root.

The system legs run side by side, so two of them may install at once: every install here holds one lock file
(LOCK, in the test cache; scripts/need-program takes it too) and tells apt to wait for dpkg's own lock, so a
concurrent apt-get is waited for instead of failing the install (which would skip, and so fail, a suite).

The packages of daemons (prometheus, prometheus-alertmanager, prometheus-node-exporter) are installed without
starting their services: while apt-get runs, a policy-rc.d that refuses every start is in place (unless the host
has one already). The suites start the programs themselves, on loopback, with their own files.
"""

import contextlib
import fcntl
import os
import shutil
import subprocess

POLICY_RC_D = "/usr/sbin/policy-rc.d"
NO_START = "#!/bin/sh\n# imds.scheduled_events test harness: installing packages, start no service\nexit 101\n"

# program -> the Debian package that has it
PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-node-exporter": "prometheus-node-exporter",
    # ansible-rulebook runs Drools in a JVM inside its own process (drools-jpy); it wants Java 17 or later
    "java": "openjdk-17-jre-headless",
    "chromium": "chromium",
}
# openjdk's postinst registers its man pages with update-alternatives, which fails where a minimal image dropped them
MAN1 = "/usr/share/man/man1"
LOCK = os.path.join(os.environ.get("IMDS_SE_TEST_CACHE", "/var/cache/imds-scheduled-events-tests"), "apt.lock")
APT_TIMEOUT = 1200
# apt waits this long for dpkg's lock held by an apt-get that is not ours (apt 1.9.11 and later)
APT_GET = ["apt-get", "-o", "DPkg::Lock::Timeout=%d" % APT_TIMEOUT]


@contextlib.contextmanager
def _apt_lock():
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "a", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def apt_install(packages, quiet=True):
    """Install Debian packages without starting their services; the CompletedProcess of the install (its stderr
    says why when it failed). Tries from the package lists at hand first, and updates them only when that fails."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = APT_GET + ["install", "-y", "-qq" if quiet else "-q", "--no-install-recommends"] + list(packages)
    with _apt_lock():
        placed = not os.path.exists(POLICY_RC_D)
        if placed:
            with open(POLICY_RC_D, "w", encoding="ascii") as handle:
                handle.write(NO_START)
            os.chmod(POLICY_RC_D, 0o755)
        if not os.path.isdir(MAN1):
            os.makedirs(MAN1)
        try:
            proc = subprocess.run(install, env=env, check=False, capture_output=True, text=True, timeout=APT_TIMEOUT)
            if proc.returncode != 0:
                subprocess.run(APT_GET + ["update", "-qq"], env=env, check=False, capture_output=True,
                               timeout=APT_TIMEOUT)
                proc = subprocess.run(install, env=env, check=False, capture_output=True, text=True,
                                      timeout=APT_TIMEOUT)
        finally:
            if placed:
                os.unlink(POLICY_RC_D)
    return proc


def find(program):
    return shutil.which(program) or next((p for p in ("/usr/bin/" + program, "/usr/sbin/" + program)
                                          if os.access(p, os.X_OK)), None)


def ensure(*programs):
    """{program: path} for every program, installing the missing ones' packages; a path is None when the program
    is missing and cannot be installed (not root, no apt-get, the archive unreachable)."""
    found = dict((p, find(p)) for p in programs)
    missing = sorted(set(PACKAGES[p] for p, path in found.items() if path is None))
    if not missing or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    apt_install(missing)
    return dict((p, find(p)) for p in programs)
