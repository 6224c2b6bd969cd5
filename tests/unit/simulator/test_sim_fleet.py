"""Many VMs in one process, in both bind modes."""

from __future__ import annotations

import json
import random

import pytest

from imds_simulator import ConfigError, Simulator

NAME_PATH = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"


def test_500_vms_each_answer_with_their_own_name(start_sim):
    client = start_sim(None, fleet=500, vm_prefix="node-")
    sim = client.sim
    assert len(sim.world.vms) == 500
    ports = {sim.address(name)[1] for name in sim.world.vms}
    assert len(ports) == 500
    for name in sim.world.vms:
        status, body = client.call(name, "GET", NAME_PATH)
        assert (status, body.decode()) == (200, name)


def test_500_vm_availability_set_event_and_one_approval(start_sim):
    data = {"fleet": {"count": 500, "availability_set": "big"}, "seed": 9,
            "events": [{"type": "Freeze", "availability_set": "big", "notice": 900}]}
    client = start_sim(data)
    sim = client.sim
    doc = client.document("vm-499")
    event = doc["Events"][0]
    assert len(event["Resources"]) == 500
    assert client.approve("vm-0", event["EventId"])[0] == 200
    assert all(sim.world.document(name)["Events"][0]["EventStatus"] == "Started" for name in sim.world.vms)
    assert client.document("vm-250")["DocumentIncarnation"] == 3


def test_500_vms_on_their_own_loopback_addresses(start_sim):
    client = start_sim(None, fleet=500, bind_mode="addresses")
    sim = client.sim
    hosts = [sim.address(name)[0] for name in sim.world.vms]
    assert hosts[0] == "127.0.0.2" and hosts[1] == "127.0.0.3" and hosts[499] == "127.0.1.245"
    for name in ("vm-0", "vm-254", "vm-499"):
        status, body = client.call(name, "GET", NAME_PATH)
        assert (status, body.decode()) == (200, name)


def test_addresses_mode_shares_one_port():
    for _attempt in range(20):
        port = random.randint(20000, 60000)
        sim = Simulator.from_scenario(None, vms=["a", "b"], port=port, control_port=0, bind_mode="addresses")
        try:
            sim.start()
        except OSError:
            continue
        try:
            assert sim.endpoints() == {"a": f"http://127.0.0.2:{port}", "b": f"http://127.0.0.3:{port}"}
        finally:
            sim.stop()
        return
    pytest.skip("no free port found")


def test_ports_mode_uses_consecutive_ports():
    for _attempt in range(20):
        base = random.randint(20000, 60000)
        sim = Simulator.from_scenario(None, vms=["a", "b", "c"], port=base, control_port=0)
        try:
            sim.start()
        except OSError:
            continue
        try:
            assert [sim.address(name) for name in ("a", "b", "c")] == [
                ("127.0.0.1", base), ("127.0.0.1", base + 1), ("127.0.0.1", base + 2)]
        finally:
            sim.stop()
        return
    pytest.skip("no free port range found")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"host": "10.0.0.1"}, "not a loopback address"),
    ({"host": "0.0.0.0"}, "not a loopback address"),
    ({"host": "169.254.169.254"}, "not a loopback address"),
    ({"host": "::"}, "not a loopback address"),
    ({"host": "myhost.example"}, "not an IP address"),
    ({"host": "::1", "bind_mode": "addresses", "fleet": 2}, "not enough loopback addresses"),
    ({"bind_mode": "sideways"}, "unknown bind mode"),
    ({"port": -1}, "not a TCP port"),
    ({"control_port": 70000}, "not a TCP port"),
    ({"request_log_size": 0}, "at least 1"),
    ({"port": 8169, "control_port": 8170, "vms": ["a", "b"]}, "collides"),
])
def test_non_loopback_and_bad_bind_settings_are_refused(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Simulator.from_scenario(None, **kwargs)


def test_python_api_context_manager_and_endpoint():
    sim = Simulator.from_scenario({"vms": [{"name": "myvm"}]}, port=0, control_port=0, clock="manual")
    assert not sim.is_listening("myvm") and sim.control_url is None
    with sim:
        assert sim.endpoint("myvm").startswith("http://127.0.0.1:")
        assert sim.control_url.startswith("http://127.0.0.1:")
        assert json.loads(json.dumps(sim.world.document("myvm"))) == {"DocumentIncarnation": 1, "Events": []}
    assert sim.control_url is None
