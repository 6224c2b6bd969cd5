"""Shared helpers for the simulator tests (a unique module name, unlike ``conftest``)."""

from __future__ import annotations

import datetime
import http.client
import json

EPOCH = datetime.datetime(2016, 9, 19, 18, 14, 47, tzinfo=datetime.timezone.utc)
LATEST = "2020-07-01"
SE_PATH = "/metadata/scheduledevents?api-version=" + LATEST
META = {"Metadata": "true"}
TOKEN_PATH = "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
GRAPH_QUERY = 'maintenanceresources | where type == "microsoft.maintenance/scheduledevents"'


class FakeTime:
    """A settable time source for wall / monotonic clocks and a recording sleep."""

    def __init__(self, now=1000.0):
        self.now = now
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        """Record instead of sleeping."""
        self.sleeps.append(seconds)


class Client:
    """Tiny HTTP client over http.client (no proxies, no environment)."""

    def __init__(self, sim, fake=None):
        self.sim = sim
        self.fake = fake
        self._token = None

    @staticmethod
    def _send(host, port, method, path, *, body=None, headers=None):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        try:
            payload = body if body is None or isinstance(body, bytes) else json.dumps(body).encode("utf-8")
            connection.request(method, path, body=payload, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def imds(self, vm, method, path, body=None, headers=None):
        """Raw request to a VM's IMDS listener: (status, headers, body bytes)."""
        host, port = self.sim.address(vm)
        return self._send(host, port, method, path, body=body, headers=META if headers is None else headers)

    def call(self, vm, method, path, body=None, headers=None):
        """Like ``imds`` without the response headers: (status, body bytes)."""
        status, _headers, raw = self.imds(vm, method, path, body, headers)
        return status, raw

    def document(self, vm, version=LATEST):
        """GET the scheduled-events document (asserting 200)."""
        status, body = self.call(vm, "GET", "/metadata/scheduledevents?api-version=" + version)
        assert status == 200, body
        return json.loads(body)

    def approve(self, vm, *event_ids, version=LATEST):
        """POST StartRequests as Microsoft documents it: (status, body bytes)."""
        body = {"StartRequests": [{"EventId": event_id} for event_id in event_ids]}
        return self.call(vm, "POST", "/metadata/scheduledevents?api-version=" + version, body)

    def control(self, method, path, body=None):
        """Request to the control API: (status, decoded JSON)."""
        host, port = self.sim.control_url.rsplit("//", 1)[1].rsplit(":", 1)
        status, _headers, raw = self._send(host, int(port), method, path, body=body)
        return status, json.loads(raw) if raw else None

    def arm_raw(self, method, path, body=None, headers=None):
        """Request to the control-plane face as given: (status, headers, body bytes)."""
        host, port = self.sim.arm_url.rsplit("//", 1)[1].rsplit(":", 1)
        return self._send(host, int(port), method, path, body=body, headers=headers or {})

    def token(self):
        """An access token from the simulator's managed-identity endpoint (fetched once)."""
        if self._token is None:
            status, _headers, raw = self.arm_raw("GET", TOKEN_PATH, headers={"X-IDENTITY-HEADER": self.sim.identity_header})
            assert status == 200, raw
            self._token = json.loads(raw)["access_token"]
        return self._token

    def arm(self, method, path, body=None, token=None, headers=None):
        """Authenticated request to the control-plane face: (status, response headers, decoded JSON)."""
        sent = {"Content-Type": "application/json", "Authorization": "Bearer " + (token or self.token())}
        sent.update(headers or {})
        status, response_headers, raw = self.arm_raw(method, path, body, sent)
        return status, response_headers, json.loads(raw) if raw else None

    def graph(self, query=GRAPH_QUERY, version="2024-04-01", **body):
        """POST a Resource Graph query: (status, decoded JSON)."""
        status, _headers, payload = self.arm("POST", "/providers/Microsoft.ResourceGraph/resources?api-version=" + version,
                                             dict(body, query=query))
        return status, payload


def two_vm_scenario(**event):
    """Scenario dict: VMs a and b in one availability set, c alone, and one event (defaults: Reboot of a and b)."""
    spec = {"type": "Reboot", "resources": ["a", "b"], "notice": 900, "started_for": 600}
    spec.update(event)
    return {
        "start_time": "2016-09-19T18:14:47Z",
        "clock": "manual",
        "seed": 42,
        "vms": [{"name": "a", "availability_set": "as1"}, {"name": "b", "availability_set": "as1"}, {"name": "c"}],
        "events": [spec],
    }
