"""Real-systemd test machine, by hand or from molecule's create/destroy playbooks.

    container build [--suite S] [--force] [--cloud-image]  build (or reuse) the cached rootfs of a release
    container boot [--suite S] [--name N] [--json] boot a fresh container in the background, print its ssh/inventory vars
    container ssh N [-- CMD ...]       ssh into it as root (interactive without CMD)
    container shutdown N               stop it and remove everything it used
    container list                     containers booted by this CLI

--suite is a Debian release of harness.rootfs.RELEASES (bullseye, bookworm, trixie; or 11, 12, 13),
bookworm by default.  A booted container is owned by a small background supervisor process (it reboots
the container when it asks to, and cleans up on shutdown); its state lives in
WORK_BASE/<name>.json.  Exit status 77 means "this host cannot run it" (not
root...), and is turned into 1 when CI=true.
"""

import argparse
import contextlib
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import rootfs as rootfs_mod  # noqa: E402  pylint: disable=wrong-import-position
from harness.container import NAME_RE, WORK_BASE, SystemdContainer, reap_stale_sessions  # noqa: E402  pylint: disable=wrong-import-position
from harness.hostenv import HarnessError, HarnessUnavailable, ci_strict, ensure_host_ready  # noqa: E402  pylint: disable=wrong-import-position

EXIT_UNAVAILABLE = 77
BOOT_WAIT = 600
SHUTDOWN_WAIT = 120


def state_path(name):
    """Where the supervisor of container *name* publishes its state."""
    return WORK_BASE / f"{name}.json"


def load_state(name):
    """State of a live CLI container, or exit with a message."""
    path = state_path(name)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        sys.exit(f"no container {name!r} booted by this CLI (no {path})")
    if "error" in state:
        sys.exit(f"container {name!r} failed to boot: {state['error']}")
    return state


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cmd_build(args):
    """Build or reuse the rootfs."""
    ensure_host_ready()
    flavour = rootfs_mod.CLOUD_IMAGE if args.cloud_image else None
    print(rootfs_mod.ensure_rootfs(args.suite, force=args.force, flavour=flavour,
                                   log=lambda msg: print(msg, file=sys.stderr)))
    return 0


def cmd_boot(args):
    """Start a supervisor in its own session and wait for it to report the container running."""
    ensure_host_ready()
    name = args.name or f"imds-se-{secrets.token_hex(4)}"
    if not NAME_RE.fullmatch(name):
        sys.exit(f"container name must match {NAME_RE.pattern}: {name!r}")
    if state_path(name).exists():
        state = json.loads(state_path(name).read_text())
        if _pid_alive(state.get("supervisor_pid", 0)):
            sys.exit(f"container {name!r} is already booted")
        state_path(name).unlink()
    # Build here, in the foreground, so a cold build's progress is visible.
    rootfs_mod.ensure_rootfs(args.suite, log=lambda msg: print(msg, file=sys.stderr))
    WORK_BASE.mkdir(parents=True, exist_ok=True)
    log_path = WORK_BASE / f"{name}.log"
    with open(log_path, "ab") as log_fh:
        supervisor = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_supervise", name, "--timeout", str(args.timeout),
                                       "--suite", args.suite],
                                      stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + args.timeout + 60
    while time.monotonic() < deadline:
        if state_path(name).exists():
            state = json.loads(state_path(name).read_text())
            if "error" in state:
                state_path(name).unlink()
                print(f"container {name!r} failed to boot: {state['error']}\n(see {log_path})", file=sys.stderr)
                return EXIT_UNAVAILABLE if state.get("unavailable") and not ci_strict() else 1
            print(json.dumps(state, indent=1) if args.json else
                  f"{name}: ssh -i {state['ssh_key_path']} -p {state['ssh_port']} root@127.0.0.1  (or: {sys.argv[0]} ssh {name})")
            return 0
        if supervisor.poll() is not None:
            print(f"supervisor exited with {supervisor.returncode} before the container ran (see {log_path})", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"timed out waiting for container {name!r} (see {log_path})", file=sys.stderr)
    supervisor.kill()
    return 1


def _publish(name, state):
    tmp = state_path(name).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, state_path(name))


def cmd_supervise(args):
    """Own one container until SIGTERM: boot it, publish its state, keep rebooting it, clean up."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    container = SystemdContainer(name=args.name, boot_timeout=args.timeout, suite=args.suite)
    try:
        container.start()
    except HarnessError as exc:
        _publish(args.name, {"name": args.name, "error": str(exc), "unavailable": isinstance(exc, HarnessUnavailable)})
        container.cleanup()
        return 1
    try:
        _publish(args.name, {
            "name": container.name, "suite": container.release.suite, "debian_version": container.release.version,
            "supervisor_pid": os.getpid(), "ssh_port": container.ssh_port,
            "ssh_key_path": str(container.ssh_key_path), "ssh_argv": container.ssh_argv(), "workdir": str(container.workdir),
            "merged": str(container.merged), "inventory": container.ansible_inventory_vars(),
        })
        while not stop.wait(1):
            pass
    finally:
        container.cleanup()
        with contextlib.suppress(FileNotFoundError):
            state_path(args.name).unlink()
    return 0


def cmd_ssh(args):
    """exec ssh into the container (a tty when interactive)."""
    state = load_state(args.name)
    argv = list(state["ssh_argv"])
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        if sys.stdin.isatty():
            argv.insert(1, "-t")
        os.execvp(argv[0], argv)
    # Like SystemdContainer.ssh: one argument is a shell string, several are an argv kept intact.
    remote = command[0] if len(command) == 1 else shlex.join(command)
    os.execvp(argv[0], [*argv, "--", remote])


def cmd_shutdown(args):
    """Ask the supervisor to stop and clean up; kill it and reap the session if it hangs."""
    path = state_path(args.name)
    if not path.exists():
        print(f"no container {args.name!r} booted by this CLI", file=sys.stderr)
        return 0 if args.missing_ok else 1
    pid = json.loads(path.read_text()).get("supervisor_pid")
    if isinstance(pid, int) and _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_WAIT
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid):
            print(f"supervisor {pid} did not stop in {SHUTDOWN_WAIT}s; killing it", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
    reap_stale_sessions()
    for leftover in (path, WORK_BASE / f"{args.name}.log"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    return 0


def cmd_list(_args):
    """Print the containers this CLI booted."""
    for path in sorted(WORK_BASE.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
            alive = _pid_alive(state.get("supervisor_pid", 0)) if "supervisor_pid" in state else False
            print(f"{state.get('name')}\t{state.get('suite', '?')}\tssh_port={state.get('ssh_port')}\t{'up' if alive else 'stale'}")
    return 0


def _suite(name):
    """argparse type: a release name, version or test id, as its suite name."""
    try:
        return rootfs_mod.release(name).suite
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv=None):
    """Parse arguments and run a subcommand, mapping 'unavailable here' to exit 77."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    def add_suite(sub_parser):
        sub_parser.add_argument("--suite", type=_suite, default=rootfs_mod.DEFAULT_SUITE,
                                help=f"Debian release: {', '.join(rootfs_mod.RELEASES)} or 11, 12, 13 (default %(default)s)")

    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="build or reuse the cached rootfs")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("--cloud-image", action="store_true",
                       help="the package set of Debian's cloud image for Azure, with its archive snapshot "
                            "(harness.rootfs.CLOUD_IMAGE)")
    add_suite(build)
    build.set_defaults(func=cmd_build)
    boot = sub.add_parser("boot", help="boot a fresh container in the background")
    boot.add_argument("--name", help="container/host name (default: random imds-se-XXXXXXXX)")
    boot.add_argument("--json", action="store_true", help="print the state (ssh port, key, ansible inventory vars) as JSON")
    boot.add_argument("--timeout", type=int, default=180, help="seconds to wait for the container to reach running")
    add_suite(boot)
    boot.set_defaults(func=cmd_boot)
    supervise = sub.add_parser("_supervise")
    supervise.add_argument("name")
    supervise.add_argument("--timeout", type=int, default=180)
    add_suite(supervise)
    supervise.set_defaults(func=cmd_supervise)
    ssh = sub.add_parser("ssh", help="ssh into a booted container as root")
    ssh.add_argument("name")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(func=cmd_ssh)
    shutdown = sub.add_parser("shutdown", help="stop a container and remove its session")
    shutdown.add_argument("name")
    shutdown.add_argument("--missing-ok", action="store_true", help="exit 0 when no such container exists")
    shutdown.set_defaults(func=cmd_shutdown)
    sub.add_parser("list", help="list containers booted by this CLI").set_defaults(func=cmd_list)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HarnessUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return 1 if ci_strict() else EXIT_UNAVAILABLE
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
