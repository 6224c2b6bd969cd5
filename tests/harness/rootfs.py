"""Build and cache the Debian rootfs (one per release) that test containers boot from.

The nodes under test run Debian 11, 12 and 13 (RELEASES), each with its own
archive's python3, systemd, puppet agent and Ansible.  A rootfs is expensive
(a minute of debootstrap and apt-get), so each is built once per release +
package list + ROOTFS_VERSION and kept outside the repo under
CACHE_DIR/rootfs-<key>.  Builds happen in a temp dir next to it and are renamed
into place at the end, under an flock, so a killed build never leaves a half
rootfs behind and two concurrent test runs never build twice.

A Flavour is a rootfs of another shape: CLOUD_IMAGE has the package set of Debian's
cloud images instead of the harness's, and a snapshot of the release's archive
(its signed index and the .debs a first boot installs) that a test serves on
loopback as the machine's apt source, so apt on it runs as on a VM without
leaving the host.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

from harness.hostenv import HarnessError, HarnessUnavailable, run

# Bump whenever customize() changes what ends up in the rootfs: it is part of the cache key.
ROOTFS_VERSION = "1"
# The same for what only a Flavour's build does (its archive snapshot, its apt lists): part of a flavour's key only.
FLAVOUR_VERSION = "1"
VARIANT = "minbase"
CACHE_DIR = Path(os.environ.get("IMDS_SE_TEST_CACHE", "/var/cache/imds-scheduled-events-tests"))
BUILD_TIMEOUT = 2700
LOCK_TIMEOUT = BUILD_TIMEOUT + 300
COMPLETE_MARKER = ".harness-rootfs-complete"

# What every release gets; Release.packages adds the two whose names differ between releases.
COMMON_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-requests", "python3-jmespath",
    "python3-yaml", "openssh-server", "cron", "sudo", "iproute2", "procps", "ca-certificates",
    "git",
)


class Release:
    """A Debian release the nodes under test run: its suite, and its names for the puppet agent and Ansible."""

    def __init__(self, suite, version, puppet, ansible):
        self.suite = suite
        self.version = version
        self.packages = COMMON_PACKAGES + (puppet, ansible)

    @property
    def test_id(self):
        """The name test ids and logs use (debian11, debian12, debian13)."""
        return f"debian{self.version}"

    def __repr__(self):
        return f"Release({self.suite!r}, {self.version})"


# bullseye packages Ansible 2.10 as `ansible` and puppet 5 as `puppet`; bookworm and trixie split them into
# `ansible-core` (2.14, 2.19) and `puppet-agent` (7, 8).
RELEASES = {r.suite: r for r in (
    Release("bullseye", 11, puppet="puppet", ansible="ansible"),
    Release("bookworm", 12, puppet="puppet-agent", ansible="ansible-core"),
    Release("trixie", 13, puppet="puppet-agent", ansible="ansible-core"),
)}
DEFAULT_SUITE = "bookworm"


class Flavour:
    """A rootfs of another shape than the harness's own: its package list per release (instead of Release.packages),
    units masked on top of MASKED_UNITS, and `archive`: packages whose .debs (with what they need that the rootfs lacks)
    are kept with the release's signed index as a snapshot of the archive, next to the rootfs (archive_path()). The
    rootfs keeps no apt lists, as a cloud image (whose build removes them): apt there starts with `apt-get update`."""

    def __init__(self, name, packages, release_packages=None, masked=(), archive=()):
        self.name = name
        self._packages = tuple(packages)
        self._release_packages = dict(release_packages or {})
        self.masked = tuple(masked)
        self.archive = tuple(archive)

    def packages(self, rel):
        return self._packages + tuple(self._release_packages.get(rel.suite, ()))

    def key_fields(self, rel):
        return {"flavour": self.name, "flavour_version": FLAVOUR_VERSION, "packages": sorted(self.packages(rel)),
                "masked": sorted(MASKED_UNITS + self.masked), "archive": sorted(self.archive)}

    def __repr__(self):
        return f"Flavour({self.name!r})"


# Debian's cloud image for Azure (debian-cloud-images, vendor azure) without what only a kernel boots (the kernel,
# grub, the initramfs tools): the classes SYSTEM_BOOT, TIME_CHRONY, CLOUD, AZURE and EXTRAS over a minbase
# debootstrap. Where the list comes from and what is not confirmed: tests/system/test_first_boot.py's docstring.
CLOUD_IMAGE = Flavour(
    "debian-cloud-azure",
    packages=(
        # SYSTEM_BOOT and TIME_CHRONY
        "sudo", "libpam-systemd", "systemd-resolved", "libnss-myhostname", "netplan.io", "polkitd",
        "unattended-upgrades", "apparmor", "zstd", "apt-utils", "init", "iptables", "iputils-ping", "less", "nano",
        "netbase", "vim-tiny", "whiptail", "chrony",
        # CLOUD
        "openssh-server", "ssh-import-id",
        # AZURE
        "cloud-init", "cloud-guest-utils", "hyperv-daemons", "waagent",
        # EXTRAS
        "apt-listchanges", "bash-completion", "bind9-host", "man-db", "manpages", "socat", "pciutils", "reportbug",
        "traceroute", "vim", "psmisc", "tcpdump", "ca-certificates", "curl", "ethtool", "uuid-runtime", "screen",
        "xz-utils",
    ),
    # bookworm's images drop libnss-resolve (debian-cloud, 2024-03); trixie's SYSTEM_BOOT adds linux-sysctl-defaults.
    release_packages={"trixie": ("libnss-resolve", "linux-sysctl-defaults")},
    # Agents of the platform that would reach for Azure (waagent: the wireserver), a time server or the kernel.
    masked=("walinuxagent.service", "chrony.service", "apparmor.service", "hv-kvp-daemon.service",
            "hv-vss-daemon.service", "hv-fcopy-daemon.service"),
    # What deploy/bootstrap.py may install at first boot: the snapshot holds these and all they need.
    archive=("ansible-core", "git", "python3-jmespath", "python3-requests", "python3-venv"),
)


def release(name=DEFAULT_SUITE):
    """The Release for a suite name, a version (12) or a test id (debian12)."""
    wanted = str(name).strip().lower()
    for rel in RELEASES.values():
        if wanted in (rel.suite, str(rel.version), rel.test_id):
            return rel
    raise ValueError(f"unknown Debian release {name!r}: choose from "
                     + ", ".join(f"{r.suite} ({r.version}, {r.test_id})" for r in RELEASES.values()))


# Units that make no sense in a container or would reach for the network.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily.service", "apt-daily-upgrade.timer", "apt-daily-upgrade.service",
    "man-db.timer", "man-db.service", "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service",
    "fstrim.timer", "networking.service", "ifupdown-wait-online.service", "systemd-networkd.service",
    "systemd-networkd.socket", "systemd-networkd-wait-online.service", "systemd-resolved.service",
    "systemd-timesyncd.service", "getty.target", "console-getty.service", "container-getty@.service",
    "getty@.service", "serial-getty@.service", "getty-static.service", "systemd-journald-audit.socket",
)
# Enabled by their packages but must not run unprompted (the puppet agent daemon would look for a server).
DISABLED_UNITS = ("puppet.service",)

# The per-session ListenAddress overwrites this file in the overlay upper layer;
# the default here keeps a hand-booted rootfs off non-loopback addresses.
SSHD_LISTEN_CONF = "etc/ssh/sshd_config.d/50-harness-listen.conf"

_CUSTOM_FILES = {
    "etc/resolv.conf": (
        "# imds-scheduled-events test harness: no resolver, nothing leaves loopback\n"
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
    ),
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/ssh/sshd_config.d/40-harness.conf": (
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UseDNS no\nPrintMotd no\n"
    ),
    SSHD_LISTEN_CONF: "ListenAddress 127.0.0.1:22\n",
    "etc/systemd/journald.conf.d/50-harness.conf": "[Journal]\nStorage=persistent\nSystemMaxUse=64M\nForwardToConsole=no\n",
    "etc/systemd/system.conf.d/50-harness.conf": "[Manager]\nDefaultTimeoutStartSec=60s\nDefaultTimeoutStopSec=15s\n",
    "etc/machine-id": "",
}


def rootfs_key(suite=DEFAULT_SUITE, packages=None, flavour=None):
    """Cache key: hash of everything that decides the rootfs content (and, for a flavour, its archive snapshot)."""
    rel = release(suite)
    packages = rel.packages if packages is None else packages
    arch = host_arch()
    fields = {"version": ROOTFS_VERSION, "suite": rel.suite, "variant": VARIANT, "arch": arch,
              "packages": sorted(packages), "masked": sorted(MASKED_UNITS), "disabled": sorted(DISABLED_UNITS)}
    if flavour is not None:
        fields.update(flavour.key_fields(rel))
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def host_arch():
    """Debian architecture of the host (the rootfs must run natively)."""
    return run(["dpkg", "--print-architecture"], timeout=30).stdout.strip()


def rootfs_path(suite=DEFAULT_SUITE, packages=None, cache_dir=CACHE_DIR, flavour=None):
    """Where the rootfs of *suite* lives (whether or not it is built yet)."""
    return Path(cache_dir) / f"rootfs-{rootfs_key(suite, packages, flavour)}"


def archive_path(rootfs):
    """The archive snapshot built with a flavoured rootfs (a directory served as an apt source: dists/, pool/)."""
    return Path(f"{rootfs}.archive")


def is_complete(path):
    """A rootfs is usable only once its completion marker exists (written just before the rename)."""
    return (Path(path) / COMPLETE_MARKER).is_file()


# --- mirror discovery -----------------------------------------------------

def _one_line_entries(text):
    """Yield (uri, suites) from one-line-style sources.list text."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line[4:])
        fields = line.split()
        if len(fields) >= 2:
            yield fields[0], [fields[1]]


def _deb822_entries(text):
    """Yield (uri, suites) from deb822 .sources text."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            name, value = raw.split(":", 1)
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        suites = fields.get("suites", "").split()
        for uri in fields.get("uris", "").split():
            yield uri, suites


def apt_source_entries(etc_apt=Path("/etc/apt")):
    """All (uri, suites) pairs the host's apt is configured with, in apt's reading order."""
    entries = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        entries.extend(_one_line_entries(main_list.read_text(errors="replace")))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for item in sorted(parts.iterdir()):
            if item.suffix == ".list":
                entries.extend(_one_line_entries(item.read_text(errors="replace")))
            elif item.suffix == ".sources":
                entries.extend(_deb822_entries(item.read_text(errors="replace")))
    return entries


def find_mirror(suite=DEFAULT_SUITE, etc_apt=Path("/etc/apt")):
    """The host's Debian mirror URL for *suite*, so debootstrap uses what apt already uses.

    A host carries its own release only (bookworm): another release comes from the same
    mirror, the one that serves any of RELEASES.  IMDS_SE_TEST_MIRROR overrides it.
    """
    override = os.environ.get("IMDS_SE_TEST_MIRROR")
    if override:
        return override.rstrip("/")
    entries = [(uri.rstrip("/"), suites) for uri, suites in apt_source_entries(etc_apt)
               if uri.split(":", 1)[0] in ("http", "https", "file")]
    for wanted in (suite, *RELEASES):  # its own source first, else the mirror of another Debian release
        for uri, suites in entries:
            if wanted in suites:
                return uri
    raise HarnessUnavailable(f"skipped: no apt source for a Debian release ({', '.join(RELEASES)}) in "
                             f"{etc_apt}/sources.list(.d); set IMDS_SE_TEST_MIRROR")


# --- locking and safe removal --------------------------------------------

@contextlib.contextmanager
def file_lock(path, timeout, log=None):
    """Exclusive flock on *path*, polled so the wait is bounded."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise HarnessError(f"timed out after {timeout}s waiting for lock {path}") from exc
                if log and not announced:
                    log(f"waiting for another process holding {path}")
                    announced = True
                time.sleep(1)
        yield
    finally:
        os.close(fd)


def _mount_points():
    """Mount points of this mount namespace, unescaped."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            field = line.split()[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return points


def unmount_below(path):
    """Lazily unmount everything mounted at or below *path*, deepest first."""
    base = os.path.realpath(path)
    below = [p for p in _mount_points() if p == base or p.startswith(base + "/")]
    for point in sorted(set(below), key=len, reverse=True):
        run(["umount", "--lazy", point], timeout=60, check=False)


def remove_tree(path):
    """Remove a build/session dir without ever following a leftover mount into the host."""
    if not os.path.lexists(path):
        return
    unmount_below(path)
    run(["rm", "-rf", "--one-file-system", "--", str(path)], timeout=600)


# --- building -------------------------------------------------------------

def _write(root, rel, content, mode=0o644):
    target = Path(root) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.write_text(content)
    target.chmod(mode)


def _has_unit(root, unit):
    return any((Path(root) / d / unit).exists() for d in ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"))


def customize(root, masked=MASKED_UNITS):
    """Turn a plain debootstrap tree into a container that boots quietly and stays on loopback. Units are enabled or
    disabled only where their package put them (a cloud image has no cron and no puppet)."""
    for rel, content in _CUSTOM_FILES.items():
        _write(root, rel, content)
    (Path(root) / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    run(["systemctl", f"--root={root}", "mask", *masked], timeout=120)
    disabled = [unit for unit in DISABLED_UNITS if _has_unit(root, unit)]
    if disabled:
        run(["systemctl", f"--root={root}", "disable", *disabled], timeout=120)
    run(["systemctl", f"--root={root}", "enable", *[u for u in ("ssh.service", "cron.service") if _has_unit(root, u)]],
        timeout=120)
    run(["chroot", str(root), "apt-get", "clean"], timeout=120)


def _logged_run(argv, log_path, timeout, env=None):
    """Run a long build step with its output appended to the build log."""
    with open(log_path, "a", encoding="utf-8") as log_fh:
        log_fh.write(f"\n$ {argv!r}\n")
        log_fh.flush()
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False, env=env)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"timed out after {timeout}s: {argv!r}; log: {log_path}") from exc
    return proc.returncode


def _build_failed(what, log_path, target):
    inner_log = Path(target) / "debootstrap/debootstrap.log"
    if inner_log.is_file():  # the detailed log dies with the build dir: keep it next to ours
        with open(log_path, "a", encoding="utf-8") as log_fh:
            log_fh.write("\n--- debootstrap/debootstrap.log ---\n" + inner_log.read_text(errors="replace"))
    tail = Path(log_path).read_text(errors="replace")[-3000:]
    return HarnessError(f"{what} failed; log: {log_path}\n{tail}")


def _debootstrap(target, suite, mirror, packages, log_path, download=()):
    """Two stages: a plain minbase debootstrap, then apt-get inside for *packages* (and *download*: fetched, not
    installed, into the chroot's /var/cache/apt/archives).

    debootstrap's own --include resolver cannot follow virtual packages (python3-cryptography
    needs python3-cffi-backend-api-min), so the real package set is installed by apt.  A
    policy-rc.d forbids starting services meanwhile: the chroot shares the host network.
    """
    Path(log_path).write_text("")
    argv = ["debootstrap", f"--variant={VARIANT}", "--components=main", f"--arch={host_arch()}", suite, str(target), mirror]
    if _logged_run(argv, log_path, BUILD_TIMEOUT) != 0:
        raise _build_failed("debootstrap", log_path, target)
    _write(target, "usr/sbin/policy-rc.d", "#!/bin/sh\n# imds harness build: never start services in the chroot\nexit 101\n", 0o755)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
    proc_dir = Path(target) / "proc"
    steps = [["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]]
    if download:  # apt keeps what it installed in its cache: clean it first, the snapshot is what a first boot may add
        steps += [["apt-get", "clean"],
                  ["apt-get", "install", "--download-only", "-y", "-q", "--no-install-recommends", *download]]
    run(["mount", "-t", "proc", "proc", str(proc_dir)], timeout=30)
    try:
        for step in steps:
            # A package may have made resolv.conf a link into /run (systemd-resolved does): the host's again.
            _write(target, "etc/resolv.conf", Path("/etc/resolv.conf").read_text())
            if _logged_run(["chroot", str(target), *step], log_path, BUILD_TIMEOUT, env=env) != 0:
                raise _build_failed(" ".join(step[:3]), log_path, target)
    finally:
        run(["umount", "--lazy", str(proc_dir)], timeout=60, check=False)
    (Path(target) / "usr/sbin/policy-rc.d").unlink()


def _snapshot_archive(root, suite, out):
    """Move what apt fetched in *root* into *out*, laid out as the archive serves it: the index files apt verified
    (InRelease, Packages, Translation; apt asks for the compressed ones first and takes these when those are missing)
    under dists/, and each .deb at the path its Packages entry names under pool/. Then empty root's apt lists, as
    a cloud image's build does."""
    lists = Path(root) / "var/lib/apt/lists"
    marker = f"_dists_{suite}_"
    filenames = {}
    for item in sorted(lists.iterdir()):
        if marker not in item.name or not item.is_file():
            continue
        rel = item.name.split("_dists_", 1)[1].replace("_", "/")
        target = Path(out) / "dists" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item, target)
        if item.name.endswith("_Packages"):
            filenames.update(_pool_paths(item))
    debs = sorted((Path(root) / "var/cache/apt/archives").glob("*.deb"))
    if not debs:
        raise HarnessError(f"the archive snapshot of {suite} got no .deb: see the build log")
    for deb in debs:
        name, version, arch = deb.name[:-len(".deb")].split("_")
        target = Path(out) / filenames[(name, urllib.parse.unquote(version), arch)]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(deb), target)
    for item in lists.iterdir():
        if item.is_file() and item.name != "lock":
            item.unlink()


def _pool_paths(packages_file):
    """{(package, version, architecture): Filename} of an apt Packages file."""
    found = {}
    for stanza in packages_file.read_text(errors="replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[:1].isspace())
        if "Filename" in fields:
            found[(fields["Package"], fields["Version"], fields["Architecture"])] = fields["Filename"]
    return found


def archive_sources(url, suite):
    """/etc/apt/sources.list of a machine whose apt uses the archive snapshot served at *url*."""
    return f"# imds-scheduled-events test harness: the release's archive, a snapshot served on loopback\ndeb {url.rstrip('/')} {suite} main\n"


def _processes_using(path):
    """PIDs whose root, cwd or command line is inside *path* (orphans of a killed build)."""
    base = os.path.realpath(path)
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            links = [os.readlink(entry / "root"), os.readlink(entry / "cwd")]
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if any(x == base or x.startswith(base + "/") for x in links + cmdline):
                found.add(int(entry.name))
    return found


def _kill_processes_using(path):
    """SIGKILL what a killed build left running (debootstrap, chroot apt-get...) before deleting its dir."""
    for dummy in range(50):
        pids = _processes_using(path)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise HarnessError(f"processes keep running in {path}: {sorted(_processes_using(path))}")


def _remove_stale_builds(cache_dir, key, log):
    """Remove temp dirs of builds that were killed (only called while holding the lock)."""
    for stale in Path(cache_dir).glob(f".build-{key}-*"):
        log(f"removing stale build dir {stale}")
        _kill_processes_using(stale)
        remove_tree(stale)


def ensure_rootfs(suite=DEFAULT_SUITE, cache_dir=CACHE_DIR, force=False, log=print, packages=None, flavour=None):
    """Return the path of a complete cached rootfs of *suite* (of *flavour*, with its archive_path()), building it if
    needed."""
    rel = release(suite)
    if flavour is not None:
        packages = flavour.packages(rel)
    packages = rel.packages if packages is None else packages
    cache_dir = Path(cache_dir)
    key = rootfs_key(rel.suite, packages, flavour)
    final = cache_dir / f"rootfs-{key}"

    def complete():
        return is_complete(final) and not (flavour and flavour.archive and not archive_path(final).is_dir())
    if complete() and not force:
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f"rootfs-{key}.lock", LOCK_TIMEOUT, log=log):
        if complete() and not force:
            return final  # built by a concurrent run while we waited
        _remove_stale_builds(cache_dir, key, log)
        mirror = find_mirror(rel.suite)
        build = cache_dir / f".build-{key}-{os.getpid()}-{secrets.token_hex(4)}"
        build.mkdir(mode=0o755)
        log_path = cache_dir / f"build-{key}.log"
        started = time.monotonic()
        log(f"building {rel.suite} rootfs {final.name} from {mirror} (log: {log_path})")
        archive = archive_path(build) if flavour is not None and flavour.archive else None
        try:
            _debootstrap(build, rel.suite, mirror, packages, log_path, download=flavour.archive if archive else ())
            unmount_below(build)  # debootstrap normally cleans up; be sure before customizing
            if archive:
                _snapshot_archive(build, rel.suite, archive)
            customize(build, masked=MASKED_UNITS + (flavour.masked if flavour else ()))
            _write(build, "etc/imds-harness-rootfs.json",
                   json.dumps(dict({"key": key, "version": ROOTFS_VERSION, "suite": rel.suite, "packages": sorted(packages),
                                    "mirror": mirror}, **({"flavour": flavour.name} if flavour else {})), indent=1) + "\n")
            (build / COMPLETE_MARKER).write_text(f"{time.time():.0f}\n")
            old = None
            if final.exists():  # --force, or an incomplete dir left by hand
                old = cache_dir / f".build-{key}-old-{secrets.token_hex(4)}"
                os.rename(final, old)
            if archive_path(final).exists():
                remove_tree(archive_path(final))
            if archive:
                os.rename(archive, archive_path(final))
            os.rename(build, final)
            if old is not None:
                remove_tree(old)
        except BaseException:
            remove_tree(build)
            if archive:
                remove_tree(archive)
            raise
        log(f"{rel.suite} rootfs built in {time.monotonic() - started:.0f}s: {final}")
    return final
