"""A booted systemd container that plays an Azure VM for system tests.

It runs one of the Debian releases in harness.rootfs.RELEASES (bookworm unless
told otherwise: ``SystemdContainer(suite="trixie")``).  Every session gets a
fresh overlayfs (lower = that release's cached rootfs, upper/work in a
per-session dir) booted with ``systemd-nspawn --boot`` in the host network
namespace, so 127.0.0.1 inside is the host's loopback: services in the
container reach simulators on the host, and its sshd listens on 127.0.0.1 at a
port chosen here.  A monitor thread boots the same merged dir again whenever
nspawn exits with the "reboot" code, so ``systemctl reboot`` (from a test or
from Ansible's reboot module) behaves like a real VM reboot.

    with SystemdContainer() as vm:
        vm.ssh(["systemctl", "is-active", "cron"])
"""

import atexit
import contextlib
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from harness import rootfs as rootfs_mod
from harness.hostenv import HarnessError, ensure_host_ready, run

LOG = logging.getLogger("harness.container")

NSPAWN_REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot
WORK_BASE = Path(os.environ.get("IMDS_SE_TEST_WORKDIR", "/var/tmp/imds-se-containers"))
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "imds-se-harness"

# Units allowed to be failed after boot without failing the harness.  Keep this
# short: every entry hides a unit that cannot work in a container on this kind of host.
DEFAULT_ALLOWED_FAILED_UNITS = frozenset()

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
NSPAWN_PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
SSH_COMMON_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")


class SSHCommandError(subprocess.CalledProcessError):
    """A command run over ssh failed; the message carries its output, not just the exit code."""

    def __str__(self):
        out = self.stdout if isinstance(self.stdout, str) else (self.stdout or b"").decode(errors="replace")
        err = self.stderr if isinstance(self.stderr, str) else (self.stderr or b"").decode(errors="replace")
        return f"{super().__str__()}\n--- stdout ---\n{out[-2000:]}\n--- stderr ---\n{err[-2000:]}"


def free_loopback_port():
    """A TCP port that is free on 127.0.0.1 right now (the container's sshd will take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class SystemdContainer:
    """One fresh systemd machine over an overlay of the cached rootfs, reached by ssh on loopback."""

    def __init__(self, name=None, rootfs=None, boot_timeout=180, allowed_failed_units=(), work_base=WORK_BASE,
                 suite=rootfs_mod.DEFAULT_SUITE, files=None):
        self.name = name or f"imds-se-{secrets.token_hex(4)}"
        if not NAME_RE.fullmatch(self.name):
            raise ValueError(f"container name must match {NAME_RE.pattern}: {self.name!r}")
        self.release = rootfs_mod.release(suite)
        self.rootfs = Path(rootfs) if rootfs else None
        self.boot_timeout = boot_timeout
        # {path inside: content or (content, mode)}, written into the overlay before the first boot (a cloud-init seed)
        self.files = dict(files or {})
        self.allowed_failed_units = frozenset(DEFAULT_ALLOWED_FAILED_UNITS) | frozenset(allowed_failed_units)
        self.work_base = Path(work_base)
        self.workdir = None
        self.ssh_port = None
        self._proc = None
        self._monitor = None
        self._cond = threading.Condition()
        self._launches = 0
        self._exit_codes = []
        self._stopping = False
        self._mounted = False
        self._atexit_registered = False

    # --- paths -----------------------------------------------------------

    @property
    def merged(self):
        """The container's root directory as seen from the host."""
        return self.workdir / "merged"

    @property
    def ssh_key_path(self):
        """Private key (per session) that root@container accepts."""
        return self.workdir / "id_ed25519"

    @property
    def console_log(self):
        """Everything nspawn and the container's console printed, across boots."""
        return self.workdir / "console.log"

    def _cgroup_dirs(self):
        """The dedicated cgroup of this container in every hierarchy nspawn cares about."""
        dirs = []
        for hierarchy in ("unified", "systemd"):
            base = CGROUP_ROOT / hierarchy
            if (base / "cgroup.procs").exists():
                dirs.append(base / f"{CGROUP_PREFIX}-{self.name}")
        if not dirs and (CGROUP_ROOT / "cgroup.procs").exists():
            dirs.append(CGROUP_ROOT / f"{CGROUP_PREFIX}-{self.name}")
        return dirs

    # --- lifecycle -------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.cleanup()

    def is_running(self):
        """Whether nspawn is up (booting, running or rebooting)."""
        with self._cond:
            return self._proc is not None and self._proc.poll() is None

    def start(self):
        """Prepare the session on first call, then boot (again, after a poweroff) and wait until running."""
        if self.workdir is None:
            self._prepare()
        if not self.is_running():
            with self._cond:
                self._stopping = False
                self._launch_locked()
            self._start_monitor()
        self.wait_running()
        return self

    def _prepare(self):
        """Make the per-session overlay, ssh key and config; nothing is copied from the rootfs."""
        ensure_host_ready()
        reap_stale_sessions(self.work_base)
        if self.rootfs is None:
            self.rootfs = rootfs_mod.ensure_rootfs(self.release.suite, log=LOG.info)
        if not rootfs_mod.is_complete(self.rootfs):
            raise HarnessError(f"{self.rootfs} is not a complete harness rootfs")
        self.work_base.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}.", dir=self.work_base))
        if not self._atexit_registered:
            atexit.register(self.cleanup)
            self._atexit_registered = True
        for sub in ("upper", "work", "merged"):
            (self.workdir / sub).mkdir()
        self._write_session({"owner_pid": os.getpid()})
        opts = f"lowerdir={self.rootfs},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.merged)], timeout=60)
        self._mounted = True
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"harness@{self.name}", "-f", str(self.ssh_key_path)], timeout=60)
        self.ssh_port = free_loopback_port()
        self._install_session_files()
        self._write_session({"owner_pid": os.getpid(), "ssh_port": self.ssh_port})

    def _install_session_files(self):
        """Identity, root's key and the sshd listen address go into the upper layer only."""
        def write(rel, content, mode=0o644):
            path = self.merged / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
            path.chmod(mode)

        write("etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
        write("etc/hostname", self.name + "\n")
        write("etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        write(rootfs_mod.SSHD_LISTEN_CONF, f"ListenAddress 127.0.0.1:{self.ssh_port}\n")
        pub = Path(f"{self.ssh_key_path}.pub").read_text()
        (self.merged / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
        write("root/.ssh/authorized_keys", pub, 0o600)
        for rel, content in self.files.items():
            write(rel.lstrip("/"), *(content if isinstance(content, tuple) else (content,)))

    def _write_session(self, data):
        """session.json lets a later run reap this session if its owner dies without cleanup."""
        data = dict(data, name=self.name, suite=self.release.suite, rootfs=str(self.rootfs), nspawn_pid=self._proc.pid if self._proc else None)
        tmp = self.workdir / "session.json.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.workdir / "session.json")

    def _make_cgroups(self):
        for path in self._cgroup_dirs():
            path.mkdir(exist_ok=True)

    def _launch_locked(self):
        """Start systemd-nspawn on the merged dir (caller holds self._cond)."""
        self._make_cgroups()
        argv = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "-D", str(self.merged), "--machine", self.name,
                "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=read-only", "--setenv=SYSTEMD_LOG_COLOR=0"]
        # nspawn must start inside the container's own cgroup: --keep-unit makes it use its
        # current one, and the host root cgroup is not usable for a delegated subtree.
        procs_files = [str(d / "cgroup.procs") for d in self._cgroup_dirs()]
        wrapper = ["sh", "-c", 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"', "cgroup-wrap",
                   *procs_files, "--", *argv]
        with open(self.console_log, "ab") as console:
            console.write(f"\n=== boot {self._launches + 1} at {time.strftime('%H:%M:%S')} ===\n".encode())
            console.flush()
            self._proc = subprocess.Popen(wrapper, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self._launches += 1
        self._write_session({"owner_pid": os.getpid(), "ssh_port": self.ssh_port})
        LOG.info("container %s: boot %d (nspawn pid %d)", self.name, self._launches, self._proc.pid)
        self._cond.notify_all()

    def _start_monitor(self):
        if self._monitor is None or not self._monitor.is_alive():
            self._monitor = threading.Thread(target=self._watch, name=f"nspawn-{self.name}", daemon=True)
            self._monitor.start()

    def _watch(self):
        """Boot again when the container reboots; record every other exit."""
        while True:
            with self._cond:
                proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            with self._cond:
                self._exit_codes.append(code)
                LOG.info("container %s: nspawn exited with %d", self.name, code)
                if code == NSPAWN_REBOOT_EXIT and not self._stopping:
                    self._kill_cgroup_leftovers()
                    self._launch_locked()
                    continue
                self._cond.notify_all()
                return

    def wait_running(self, timeout=None):
        """Wait until `systemctl is-system-running` says running (or degraded with only allowed failures)."""
        deadline = time.monotonic() + (timeout or self.boot_timeout)
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.is_running():
                with self._cond:
                    self._cond.wait(timeout=1)  # the monitor may be booting it again
                if not self.is_running():
                    raise HarnessError(f"container {self.name} exited (codes {self._exit_codes}) while waiting for it to run\n"
                                       f"{self.console_tail()}")
                continue
            remaining = max(1.0, deadline - time.monotonic())
            try:
                proc = self.ssh(["systemctl", "is-system-running", "--wait"], check=False, timeout=min(remaining, 60))
            except subprocess.TimeoutExpired:
                last = "is-system-running --wait timed out"
                continue
            state = proc.stdout.strip()
            if proc.returncode == 255:  # ssh itself failed: sshd not up yet
                last = proc.stderr.strip() or "ssh failed"
                time.sleep(0.3)
                continue
            last = state
            if state == "running":
                return state
            if state == "degraded":
                failed = self.failed_units()
                bad = sorted(set(failed) - self.allowed_failed_units)
                if not bad:
                    return state
                raise HarnessError(f"container {self.name} is degraded; failed units not in the allow-list: {bad}\n{self._describe_units(bad)}")
            time.sleep(0.5)  # starting, initializing, or still stopping before a reboot
        raise HarnessError(f"container {self.name} not running after {timeout or self.boot_timeout}s (last: {last})\n{self.console_tail()}")

    def failed_units(self):
        """Names of failed units inside."""
        proc = self.ssh(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"], check=False, timeout=30)
        return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]

    def _describe_units(self, units):
        proc = self.ssh(["systemctl", "status", "--no-pager", "--lines=15", *units], check=False, timeout=30)
        return proc.stdout[-6000:]

    def console_tail(self, chars=4000):
        """The end of the container console log, for error messages."""
        try:
            return "--- console.log (tail) ---\n" + self.console_log.read_text(errors="replace")[-chars:]
        except (OSError, TypeError):
            return "(no console log)"

    @property
    def boot_count(self):
        """How many times nspawn was started for this session (1 + reboots + power-ons)."""
        return self._launches

    def boot_id(self):
        """The container's boot id (nspawn gives every boot a fresh one)."""
        return self.ssh(["cat", "/proc/sys/kernel/random/boot_id"], timeout=30).stdout.strip()

    def reboot(self, timeout=None, until_running=True):
        """`systemctl reboot` inside, then wait for the next boot to reach running (or, `until_running=False`, only
        until it answers ssh: for a boot that a test holds back from finishing)."""
        timeout = timeout or self.boot_timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            before = self._launches
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ssh(["systemctl", "reboot"], check=False, timeout=30)  # the connection may drop: fine
        with self._cond:
            while self._launches == before:
                if self._proc is not None and self._proc.poll() is not None and self._exit_codes \
                        and self._exit_codes[-1] != NSPAWN_REBOOT_EXIT:
                    raise HarnessError(f"container {self.name} exited with {self._exit_codes[-1]} instead of rebooting")
                if not self._cond.wait(timeout=max(0.1, deadline - time.monotonic())) and time.monotonic() >= deadline:
                    raise HarnessError(f"container {self.name} did not reboot within {timeout}s\n{self.console_tail()}")
        if until_running:
            self.wait_running(timeout=max(10.0, deadline - time.monotonic()))
            return
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self.ssh(["true"], check=False, timeout=30).returncode != 255:  # 255: sshd is not up yet
                    return
            if time.monotonic() >= deadline:
                raise HarnessError(f"container {self.name} did not answer ssh within {timeout}s\n{self.console_tail()}")
            time.sleep(0.3)

    def poweroff(self, timeout=60):
        """`systemctl poweroff` inside and wait for nspawn to exit; start() powers it on again."""
        with self._cond:
            self._stopping = True
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ssh(["systemctl", "poweroff"], check=False, timeout=30)
        self._wait_exit(timeout)

    def stop(self, timeout=60):
        """Orderly shutdown (SIGTERM makes nspawn halt the container), SIGKILL after *timeout*."""
        with self._cond:
            self._stopping = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_nspawn(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        self._wait_exit(10)

    def hard_kill(self):
        """Pull the plug: SIGKILL nspawn and everything inside; the disk state stays for start()."""
        with self._cond:
            self._stopping = True
        self._signal_nspawn(signal.SIGKILL)
        self._kill_cgroup_leftovers()
        self._wait_exit(30)

    def _signal_nspawn(self, sig):
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)

    def _wait_exit(self, timeout):
        """Wait for nspawn to be gone, killing it and its cgroup if it lingers."""
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("container %s: nspawn still running after %ss, killing it", self.name, timeout)
                self._signal_nspawn(signal.SIGKILL)
                proc.wait(timeout=30)
        if self._monitor is not None:
            self._monitor.join(timeout=30)
        self._kill_cgroup_leftovers()

    def _kill_cgroup_leftovers(self):
        """SIGKILL anything still in this container's cgroups (nspawn normally leaves nothing)."""
        for dummy in range(50):
            pids = self._cgroup_pids()
            if self._proc is not None and self._proc.poll() is None:
                pids.discard(self._proc.pid)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        LOG.warning("container %s: processes survive SIGKILL: %s", self.name, sorted(self._cgroup_pids()))

    def _cgroup_pids(self):
        pids = set()
        for base in self._cgroup_dirs():
            if base.is_dir():
                for procs in base.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError, ValueError):
                        pids.update(int(x) for x in procs.read_text().split())
        return pids

    def cleanup(self):
        """Stop the container, unmount and remove the session dir; safe to call more than once."""
        if self.workdir is None:
            return
        try:
            if self.is_running():
                self.stop()
            self._kill_cgroup_leftovers()
            for base in sorted(self._cgroup_dirs(), reverse=True):
                _remove_cgroup(base)
            if self._mounted:
                rootfs_mod.unmount_below(self.merged)
                self._mounted = False
            rootfs_mod.remove_tree(self.workdir)
            with contextlib.suppress(OSError):  # nspawn leaves it when /run is not a tmpfs
                (NSPAWN_PROPAGATE_DIR / self.name).rmdir()
        finally:
            self.workdir = None
            if self._atexit_registered:
                atexit.unregister(self.cleanup)
                self._atexit_registered = False

    # --- talking to it ---------------------------------------------------

    def ssh_argv(self):
        """ssh command line (without the remote command) that reaches root in the container."""
        return ["ssh", "-F", "/dev/null", "-i", str(self.ssh_key_path), "-p", str(self.ssh_port),
                *SSH_COMMON_OPTIONS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "root@127.0.0.1"]

    def ssh(self, command, check=True, timeout=120, input=None, text=True):  # pylint: disable=redefined-builtin
        """Run *command* (argv list, quoted for the remote shell, or a shell string) as root inside."""
        remote = command if isinstance(command, str) else shlex.join(str(arg) for arg in command)
        argv = [*self.ssh_argv(), "--", remote]
        proc = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=text, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise SSHCommandError(proc.returncode, remote, proc.stdout, proc.stderr)
        return proc

    def put_file(self, path, content, mode=0o644):
        """Write *content* (str or bytes) to *path* inside, atomically, creating parent dirs."""
        data = content.encode() if isinstance(content, str) else content
        path = str(path)
        tmp = f"{path}.harness-{secrets.token_hex(4)}"
        script = (f"mkdir -p -- {shlex.quote(os.path.dirname(path) or '/')} && cat > {shlex.quote(tmp)} && "
                  f"chmod {mode:o} {shlex.quote(tmp)} && mv -f -- {shlex.quote(tmp)} {shlex.quote(path)}")
        self.ssh(script, input=data, text=False, timeout=60)

    def get_file(self, path):
        """Bytes of *path* inside."""
        return self.ssh(["cat", "--", str(path)], text=False, timeout=60).stdout

    def main_pid(self, unit):
        """MainPID of a unit inside (0 when not running)."""
        return int(self.ssh(["systemctl", "show", "--property=MainPID", "--value", unit], timeout=30).stdout.strip() or 0)

    def kill(self, target, sig="KILL"):
        """Send *sig* to a pid (int) or to all processes of a unit (str) inside, e.g. to test Restart=."""
        if isinstance(target, int):
            return self.ssh(["kill", "-s", sig, str(target)], timeout=30)
        return self.ssh(["systemctl", "kill", f"--signal={sig}", target], timeout=30)

    def ansible_inventory_vars(self):
        """Host vars that point Ansible at this container."""
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.ssh_port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.ssh_key_path),
            "ansible_ssh_common_args": " ".join(SSH_COMMON_OPTIONS),
            "ansible_python_interpreter": "/usr/bin/python3",
        }


def _remove_cgroup(path):
    """rmdir a cgroup tree, children first (cgroupfs only allows rmdir of empty groups)."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def reap_stale_sessions(work_base=WORK_BASE):
    """Tear down sessions whose owner process died without cleanup (e.g. pytest killed with -9)."""
    work_base = Path(work_base)
    if not work_base.is_dir():
        return
    for session_file in work_base.glob("*/session.json"):
        try:
            data = json.loads(session_file.read_text())
        except (OSError, ValueError):
            continue
        owner = data.get("owner_pid")
        if isinstance(owner, int) and _pid_alive(owner):
            continue
        LOG.warning("reaping stale container session %s (owner %s is gone)", session_file.parent, owner)
        nspawn = data.get("nspawn_pid")
        if isinstance(nspawn, int) and _proc_comm(nspawn) == "systemd-nspawn":
            with contextlib.suppress(ProcessLookupError):
                os.kill(nspawn, signal.SIGKILL)
        stale = SystemdContainer(name=data.get("name", "unknown"), work_base=work_base)
        stale.workdir = session_file.parent
        stale._kill_cgroup_leftovers()  # pylint: disable=protected-access
        for base in stale._cgroup_dirs():  # pylint: disable=protected-access
            _remove_cgroup(base)
        rootfs_mod.remove_tree(session_file.parent)
