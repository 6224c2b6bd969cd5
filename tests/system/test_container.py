"""Smoke tests of the real-systemd harness: the container must behave like the VM later suites assume, on each
Debian release (one leg per release: debian11, debian12, debian13)."""

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parent.parent / "harness" / "container"
CLI_ENV = dict(os.environ, PYTHON=sys.executable)


def wait_for(predicate, timeout, interval=0.2):
    """Poll *predicate* until truthy or *timeout* seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def test_boots_to_running(systemd_container):
    assert systemd_container.ssh(["systemctl", "is-system-running"]).stdout.strip() == "running"
    assert systemd_container.ssh(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"


def test_runs_the_release_asked_for_with_its_own_packages(systemd_container, debian_release):
    """The leg's release, with the python3, systemd and Ansible of its archive (printed for the README's table)."""
    vm = systemd_container
    os_release = dict(line.split("=", 1) for line in vm.ssh(["cat", "/etc/os-release"]).stdout.splitlines() if "=" in line)
    assert os_release["VERSION_ID"].strip('"') == str(debian_release.version)
    packaged = vm.ssh(["dpkg-query", "--show", "--showformat=${Package} ${Version}\\n", *debian_release.packages]).stdout
    assert sorted(line.split()[0] for line in packaged.splitlines()) == sorted(debian_release.packages)
    python = vm.ssh(["python3", "-c", "import platform, requests, jmespath, yaml; print(platform.python_version())"]).stdout
    ansible = vm.ssh(["ansible", "--version"], timeout=120).stdout.splitlines()[0]
    print("%s: python3 %s, %s, systemd %s" % (debian_release.test_id, python.strip(), ansible,
                                              vm.ssh(["systemctl", "--version"]).stdout.split()[1]))


def test_ssh_as_root_only_on_loopback(systemd_container):
    assert systemd_container.ssh("id -u").stdout.strip() == "0"
    assert systemd_container.ssh(["hostname"]).stdout.strip() == systemd_container.name
    listening = systemd_container.ssh(["ss", "-Htlnp", "sport", "=", f":{systemd_container.ssh_port}"]).stdout
    assert f"127.0.0.1:{systemd_container.ssh_port}" in listening and "sshd" in listening
    sshd_sockets = [line for line in systemd_container.ssh(["ss", "-Htlnp"]).stdout.splitlines() if "sshd" in line]
    assert len(sshd_sockets) == 1, sshd_sockets


def test_argv_is_quoted_and_failures_raise(systemd_container):
    assert systemd_container.ssh(["printf", "%s", "a b; echo injected"]).stdout == "a b; echo injected"
    with pytest.raises(subprocess.CalledProcessError) as info:
        systemd_container.ssh(["sh", "-c", "echo oops >&2; exit 3"])
    assert info.value.returncode == 3 and "oops" in str(info.value)
    assert systemd_container.ssh("exit 4", check=False).returncode == 4


def test_put_and_get_file(systemd_container):
    systemd_container.put_file("/etc/harness-test/dir/file.txt", "hello\n", mode=0o600)
    assert systemd_container.get_file("/etc/harness-test/dir/file.txt") == b"hello\n"
    assert systemd_container.ssh(["stat", "-c", "%a", "/etc/harness-test/dir/file.txt"]).stdout.strip() == "600"


def install_tick_timer(vm, name):
    """A 1 s timer whose service appends a line to /var/tmp/<name>; returns a tick counter."""
    vm.put_file(f"/etc/systemd/system/{name}.service",
                f"[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'date +%%s.%%N >> /var/tmp/{name}'\n")
    vm.put_file(f"/etc/systemd/system/{name}.timer",
                "[Timer]\nOnActiveSec=0\nOnUnitActiveSec=1s\nAccuracySec=100ms\n[Install]\nWantedBy=timers.target\n")
    vm.ssh(["systemctl", "daemon-reload"])
    return lambda: len(vm.ssh(f"cat /var/tmp/{name} 2>/dev/null || true").stdout.split())


def test_timer_start_stop(systemd_container):
    vm = systemd_container
    ticks = install_tick_timer(vm, "harness-tick")
    vm.ssh(["systemctl", "start", "harness-tick.timer"])
    assert vm.ssh(["systemctl", "is-active", "harness-tick.timer"]).stdout.strip() == "active"
    assert wait_for(lambda: ticks() >= 2, timeout=30), "the timer never fired twice"
    vm.ssh(["systemctl", "stop", "harness-tick.timer"])
    assert vm.ssh(["systemctl", "is-active", "harness-tick.timer"], check=False).stdout.strip() == "inactive"
    settled = ticks()
    time.sleep(2.5)
    assert ticks() == settled, "the timer kept firing after stop"


def test_kill_9_restarts_service(systemd_container):
    vm = systemd_container
    before = vm.main_pid("cron.service")
    assert before > 0
    vm.kill(before, "KILL")  # cron.service has Restart=on-failure
    assert wait_for(lambda: vm.main_pid("cron.service") not in (0, before), timeout=30)
    assert vm.ssh(["systemctl", "is-active", "cron.service"], check=False).stdout.strip() == "active"


def test_puppet_agent_disable_enable(systemd_container):
    vm = systemd_container
    lockfile = vm.ssh(["puppet", "config", "print", "agent_disabled_lockfile"], timeout=120).stdout.strip()
    assert lockfile.startswith("/")
    vm.ssh(["puppet", "agent", "--disable", "maintenance by harness"], timeout=120)
    assert json.loads(vm.get_file(lockfile)) == {"disabled_message": "maintenance by harness"}
    vm.ssh(["puppet", "agent", "--enable"], timeout=120)
    assert vm.ssh(["test", "-e", lockfile], check=False).returncode == 1


def test_ansible_pull_runs(systemd_container):
    out = systemd_container.ssh(["ansible-pull", "--version"], timeout=120).stdout
    assert out.startswith("ansible-pull "), out  # "[core 2.14.x]"; Debian 11's Ansible 2.10 says "2.10.x"


def test_reaches_tcp_server_on_host_loopback(systemd_container):
    token = secrets.token_hex(8)
    seen = []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(30)
        port = server.getsockname()[1]

        def serve():
            with server.accept()[0] as conn:
                conn.settimeout(10)
                seen.append(conn.recv(64))
                conn.sendall(token.encode())

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = ("import socket; s = socket.create_connection(('127.0.0.1', %d), timeout=10); "
                  "s.sendall(b'hello from vm'); print(s.recv(64).decode())") % port
        out = systemd_container.ssh(["python3", "-c", client], timeout=60).stdout.strip()
        thread.join(timeout=30)
    assert out == token
    assert seen == [b"hello from vm"]


def test_ansible_inventory_vars(systemd_container):
    inv = systemd_container.ansible_inventory_vars()
    assert inv["ansible_host"] == "127.0.0.1" and inv["ansible_user"] == "root"
    assert inv["ansible_port"] == systemd_container.ssh_port
    assert Path(inv["ansible_ssh_private_key_file"]).is_file()
    assert inv["ansible_ssh_common_args"] == "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    assert inv["ansible_python_interpreter"] == "/usr/bin/python3"


def test_reboot_preserves_disk_state(systemd_container):
    vm = systemd_container
    marker = secrets.token_hex(8)
    vm.put_file("/var/lib/harness-marker", marker)
    install_tick_timer(vm, "harness-boot-tick")
    vm.ssh(["systemctl", "enable", "harness-boot-tick.timer"])  # enablement must survive too
    boot_id, boots = vm.boot_id(), vm.boot_count
    vm.reboot()
    assert vm.boot_count == boots + 1
    assert vm.boot_id() != boot_id
    assert vm.get_file("/var/lib/harness-marker").decode() == marker
    state = vm.ssh(["systemctl", "is-system-running"], check=False).stdout.strip()
    failed = vm.failed_units()
    assert (state, failed) == ("running", []), vm._describe_units(failed) if failed else state
    assert vm.ssh(["systemctl", "is-active", "harness-boot-tick.timer"], check=False).stdout.strip() == "active"
    vm.ssh(["systemctl", "disable", "--now", "harness-boot-tick.timer"])


def test_poweroff_power_on_hard_kill_and_cleanup(systemd_container_factory):
    vm = systemd_container_factory()
    vm.put_file("/root/kept", "yes")
    vm.ssh(["sync"])
    vm.poweroff()
    assert not vm.is_running()
    vm.start()
    assert vm.get_file("/root/kept") == b"yes"
    vm.hard_kill()
    assert not vm.is_running()
    vm.start()
    assert vm.get_file("/root/kept") == b"yes"
    workdir, merged = vm.workdir, vm.merged
    vm.cleanup()
    assert not workdir.exists()
    assert str(merged) not in Path("/proc/self/mountinfo").read_text()


def test_cli_boot_ssh_shutdown(systemd_container, debian_release):  # the fixture proves the host can run containers
    name = f"imds-se-cli-{secrets.token_hex(3)}"
    booted = subprocess.run(["bash", str(CLI), "boot", "--suite", str(debian_release.version), "--name", name, "--json"],
                            env=CLI_ENV, capture_output=True, text=True, timeout=300, check=False)
    try:
        assert booted.returncode == 0, booted.stderr
        state = json.loads(booted.stdout)
        assert state["inventory"]["ansible_port"] == state["ssh_port"]
        assert (state["suite"], state["debian_version"]) == (debian_release.suite, debian_release.version)
        out = subprocess.run(["bash", str(CLI), "ssh", name, "--", "systemctl", "is-system-running"],
                             env=CLI_ENV, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert out.stdout.strip() == "running", out.stderr
    finally:
        down = subprocess.run(["bash", str(CLI), "shutdown", name], env=CLI_ENV, capture_output=True, text=True, timeout=300, check=False)
    assert down.returncode == 0, down.stderr
    assert not Path(json.loads(booted.stdout)["workdir"]).exists()
