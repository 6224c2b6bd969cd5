"""Programs from Debian's archive that the suites run for real (promtool, amtool, prometheus, node_exporter,
alertmanager; java for ansible-rulebook's Drools engine), installed with apt-get when missing, as root, like Chromium
for the fleet report.

The packages of daemons (prometheus, prometheus-alertmanager, prometheus-node-exporter) are installed without
starting their services: while apt-get runs, a policy-rc.d that refuses every start is in place (unless the host
has one already). The suites start the programs themselves, on loopback, with their own files.
"""

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
}
# openjdk's postinst registers its man pages with update-alternatives, which fails where a minimal image dropped them
MAN1 = "/usr/share/man/man1"


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
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    placed = not os.path.exists(POLICY_RC_D)
    if placed:
        with open(POLICY_RC_D, "w", encoding="ascii") as handle:
            handle.write(NO_START)
        os.chmod(POLICY_RC_D, 0o755)
    if not os.path.isdir(MAN1):
        os.makedirs(MAN1)
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1200)
    finally:
        if placed:
            os.unlink(POLICY_RC_D)
    return dict((p, find(p)) for p in programs)
