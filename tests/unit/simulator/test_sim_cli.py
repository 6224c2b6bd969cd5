"""The launcher as a user runs it: startup lines, ready file, clean stop, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
LAUNCHER = os.path.join(ROOT, "simulator", "imds-simulator")
DEMO = os.path.join(ROOT, "simulator", "scenarios", "demo.yaml")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ENV = dict(os.environ, PYTHON=sys.executable)  # the launcher runs the simulator with this interpreter


def run(*args):
    return subprocess.run(["bash", LAUNCHER, *args], env=ENV, capture_output=True, text=True, timeout=60, check=False)


def wait_for(path, process):
    """Wait until the ready file exists (the simulator is listening) or the process died."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"simulator did not become ready\nstdout: {out}\nstderr: {err}")
    return None


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with NO_PROXY.open(request, timeout=60) as response:
        return response.status, response.read()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_launcher_serves_scenario_and_stops_cleanly(tmp_path, stop_signal):
    ready = str(tmp_path / "ready.json")
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        ["bash", LAUNCHER, "--scenario", DEMO, "--clock", "manual", "--port", "0", "--control-port", "0",
         "--ready-file", ready, "--log-requests"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for(ready, process)
        assert set(info["vms"]) == {"myvm", "myvm-peer"} and info["control"].startswith("http://127.0.0.1:")
        status, body = get(info["vms"]["myvm"] + "/metadata/scheduledevents?api-version=2020-07-01",
                           {"Metadata": "true"})
        types = sorted(event["EventType"] for event in json.loads(body)["Events"])
        assert status == 200 and types == ["Freeze", "Reboot"]
        status, body = get(info["control"] + "/state")
        assert status == 200 and json.loads(body)["scenario"]["name"] == "demo"
    finally:
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"VM myvm IMDS listening on {info['vms']['myvm']}" in out
    assert f"VM myvm-peer IMDS listening on {info['vms']['myvm-peer']}" in out
    assert f"control API listening on {info['control']}" in out
    assert "myvm GET /metadata/scheduledevents?api-version=2020-07-01 -> 200" in err
    assert "Traceback" not in err
    assert not os.path.exists(ready)


def test_fleet_flags_generate_vms(tmp_path):
    ready = str(tmp_path / "ready.json")
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        ["bash", LAUNCHER, "--vms", "3", "--vm-prefix", "node-", "--port", "0", "--control-port", "0",
         "--ready-file", ready], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for(ready, process)
        assert list(info["vms"]) == ["node-0", "node-1", "node-2"]
        status, body = get(info["vms"]["node-2"] + "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
                           {"Metadata": "true"})
        assert (status, body) == (200, b"node-2")
    finally:
        process.terminate()
        out, _err = process.communicate(timeout=30)
    assert process.returncode == 0 and out.count("IMDS listening on") == 3


def test_arm_port_serves_the_control_plane_and_the_ready_file_says_where(tmp_path):
    ready = str(tmp_path / "ready.json")
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        ["bash", LAUNCHER, "--port", "0", "--control-port", "0", "--arm-port", "0", "--identity-header", "s3cret",
         "--ready-file", ready], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for(ready, process)
        assert info["arm"].startswith("http://127.0.0.1:") and info["identity_header"] == "s3cret"
        status, body = get(info["arm"] + "/msi/token?api-version=2019-08-01&resource=https://management.azure.com/",
                           {"X-IDENTITY-HEADER": "s3cret"})
        assert status == 200 and json.loads(body)["token_type"] == "Bearer"
    finally:
        process.terminate()
        out, _err = process.communicate(timeout=30)
    assert process.returncode == 0 and f"control plane (ARM, Resource Graph) listening on {info['arm']}" in out


def test_without_arm_port_the_ready_file_has_no_control_plane(tmp_path):
    ready = str(tmp_path / "ready.json")
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        ["bash", LAUNCHER, "--port", "0", "--control-port", "0", "--ready-file", ready],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for(ready, process)
        assert "arm" not in info and "identity_header" not in info
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_no_imds_needs_arm_port():
    result = run("--no-imds")
    assert result.returncode == 2 and "--no-imds needs --arm-port" in result.stderr


def test_bad_scenario_exits_2_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("vms: [{name: a}]\nevents:\n  - {type: Restart, resources: [a]}\n", encoding="utf-8")
    result = run("--scenario", str(path))
    assert result.returncode == 2
    assert f"{path}:3: events[0].type: unknown event type 'Restart'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_key_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("vms:\n  - name: a\n    zone: 3\n", encoding="utf-8")
    result = run("--scenario", str(path))
    assert result.returncode == 2 and "vms[0].zone: unknown key 'zone'" in result.stderr
    assert "Traceback" not in result.stderr


def test_non_loopback_host_is_refused():
    result = run("--host", "192.168.1.10")
    assert result.returncode == 2 and "not a loopback address" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_exits_1(tmp_path):
    ready = str(tmp_path / "ready.json")
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        ["bash", LAUNCHER, "--port", "0", "--control-port", "0", "--ready-file", ready],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for(ready, process)
        busy = info["vms"]["myvm"].rsplit(":", 1)[1]
        result = run("--port", busy, "--control-port", "0")
        assert result.returncode == 1 and "cannot listen for VM myvm" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_python_m_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "imds_simulator", "--help"], capture_output=True, text=True,
                            timeout=60, check=False, cwd=os.path.join(ROOT, "simulator"))
    assert result.returncode == 0 and "--scenario" in result.stdout and "--bind-mode" in result.stdout
