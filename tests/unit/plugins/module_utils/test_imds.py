# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient, ImdsError, RateLimiter

from ansible_collections.imds.scheduled_events.tests.unit.utils.loopback import refused_port
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import answer

GUID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
DOC = {"DocumentIncarnation": 4, "Events": [{
    "EventId": GUID, "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["myvm", "peer"],
    "EventStatus": "Scheduled", "NotBefore": "Mon, 11 Apr 2026 22:26:58 GMT"}]}


# -- the request itself ------------------------------------------------------------

def test_get_sends_metadata_header_and_api_version(server, make_client):
    server.script(answer(200, DOC))
    doc = make_client().get_document()
    assert doc.incarnation == 4 and doc.events[0].event_id == GUID
    request = server.requests[0]
    assert request["method"] == "GET"
    assert request["path"] == "/metadata/scheduledevents"
    assert request["query"] == [("api-version", "2020-07-01")]
    assert request["headers"]["Metadata"] == "true"
    assert "X-Forwarded-For" not in request["headers"]


@pytest.mark.parametrize("version", imds.API_VERSIONS)
def test_older_api_versions_are_selectable(server, make_client, version):
    make_client(api_version=version).get_document()
    assert server.requests[0]["query"] == [("api-version", version)]


def test_unknown_api_version_is_refused_before_any_request(server, make_client):
    with pytest.raises(ImdsError, match="not a scheduled-events version"):
        make_client(api_version="2021-01-01")
    assert server.requests == []


def test_approve_posts_microsofts_documented_body_once_for_all_ids(server, make_client):
    other = "A626E37F-793E-44E1-89B5-99AE0B96044C"
    assert make_client().approve([GUID, other]) == [GUID, other]
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["method"] == "POST" and request["headers"]["Metadata"] == "true"
    assert json.loads(request["body"]) == {"StartRequests": [{"EventId": GUID}, {"EventId": other}]}


def test_preview_api_sends_document_incarnation_with_approval(server, make_client):
    make_client(api_version="2017-03-01").approve([GUID], incarnation=5)
    assert json.loads(server.requests[0]["body"]) == {"StartRequests": [{"EventId": GUID}],
                                                      "DocumentIncarnation": "5"}


@pytest.mark.parametrize("ids", [[], ["not-a-guid"], [GUID, "$(reboot)"]])
def test_approve_refuses_bad_ids_before_any_request(server, make_client, ids):
    with pytest.raises(ImdsError):
        make_client().approve(ids)
    assert server.requests == []


def test_compute_name_is_read_as_text(server, make_client):
    server.script(answer(200, "myvm\n", {"Content-Type": "text/plain"}))
    vm = make_client().this_vm()
    assert vm.name == "myvm"
    assert server.requests[0]["path"] == "/metadata/instance/compute/name"
    assert ("format", "text") in server.requests[0]["query"]


@pytest.mark.parametrize("body", ["", "   ", "two words", "x" * 300, b"\xff\xfe"])
def test_unusable_compute_name_is_an_error(server, make_client, body):
    server.script(answer(200, body))
    with pytest.raises(ImdsError, match="compute/name"):
        make_client().compute_name()


def test_this_vm_is_cached(server, make_client):
    server.script(answer(200, "myvm"))
    client = make_client()
    assert client.this_vm() is client.this_vm()
    assert len(server.requests) == 1


# -- endpoint ----------------------------------------------------------------------------

def test_endpoint_option_then_environment_then_default():
    assert imds.resolve_endpoint("http://127.0.0.1:8080/", {}) == "http://127.0.0.1:8080"
    assert imds.resolve_endpoint(None, {"IMDS_ENDPOINT": "http://127.0.0.2"}) == "http://127.0.0.2"
    assert imds.resolve_endpoint(None, {}) == "http://169.254.169.254"


@pytest.mark.parametrize("bad", ["169.254.169.254", "ftp://x", "http://", "http://h/metadata", "http://h?x=1",
                                 "http://u:p@h", "http://h:99999"])
def test_bad_endpoints_are_refused(bad):
    with pytest.raises(ImdsError, match="endpoint"):
        imds.resolve_endpoint(bad, {})


# -- proxies ------------------------------------------------------------------------------

def test_proxy_settings_in_the_environment_are_ignored(server, make_client, monkeypatch):
    dead = "http://127.0.0.1:9"  # nothing listens there: using it would fail the request
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.setenv("NO_PROXY", "")
    server.script(answer(200, DOC))
    assert make_client().get_document().incarnation == 4
    assert len(server.requests) == 1


def test_redirects_are_not_followed(server, make_client):
    server.script(answer(302, "", {"Location": "http://127.0.0.1:9/elsewhere"}))
    with pytest.raises(ImdsError, match="302"):
        make_client().get_document()
    assert len(server.requests) == 1


# -- retries -----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [404, 410, 429, 500, 502, 503, 504])
def test_retried_statuses_then_success(server, make_client, sleep, status):
    server.script(answer(status, "busy"), answer(status, "busy"), answer(200, DOC))
    assert make_client().get_document().incarnation == 4
    assert len(server.requests) == 3
    assert len(sleep.calls) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 405, 409, 413])
def test_other_4xx_are_not_retried(server, make_client, sleep, status):
    server.script(answer(status, {"error": "Bad request. Required metadata header not specified"}))
    with pytest.raises(ImdsError) as caught:
        make_client().get_document()
    assert len(server.requests) == 1 and sleep.calls == []
    err = caught.value
    assert err.status == status
    assert "IMDS GET /metadata/scheduledevents answered %d" % status in str(err)
    assert "Required metadata header" in str(err)


def test_retries_are_bounded_and_the_error_says_so(server, make_client, sleep):
    server.default = answer(500, "boom")
    with pytest.raises(ImdsError, match=r"answered 500 .*gave up after 5 attempts"):
        make_client(retries=4).get_document()
    assert len(server.requests) == 5
    assert len(sleep.calls) == 4


def test_backoff_grows_exponentially_is_capped_and_jittered(server, make_client, sleep):
    server.default = answer(503, "")
    with pytest.raises(ImdsError):
        make_client(retries=6, backoff=1.0, max_backoff=8.0, jitter=lambda: 1.0).get_document()
    assert sleep.calls == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    sleep.calls[:] = []
    with pytest.raises(ImdsError):
        make_client(retries=3, backoff=4.0, jitter=lambda: 0.0).get_document()
    assert sleep.calls == [2.0, 4.0, 8.0]  # equal jitter: never below half the ceiling


def test_throttling_waits_at_least_a_second(server, make_client, sleep):
    server.script(answer(429, ""), answer(200, DOC))
    make_client(backoff=0.1, jitter=lambda: 0.0).get_document()
    assert sleep.calls == [1.0]


def test_no_retries_when_asked(server, make_client):
    server.default = answer(503, "")
    with pytest.raises(ImdsError) as caught:
        make_client(retries=0).get_document()
    assert "gave up" not in str(caught.value) and len(server.requests) == 1


def test_connection_refused_is_retried_and_reported():
    with refused_port() as port:  # bound, never listening: refused, and no other xdist worker can take it
        sleeps = []
        client = ImdsClient(endpoint="http://127.0.0.1:%d" % port, retries=2, sleep=sleeps.append)
        with pytest.raises(ImdsError, match="failed to connect to http://127.0.0.1:%d" % port) as caught:
            client.get_document()
    assert caught.value.retryable and len(sleeps) == 2


def test_dropped_connection_is_retried(server, make_client):
    server.script(answer(action="drop"), answer(200, DOC))
    assert make_client().get_document().incarnation == 4
    assert len(server.requests) == 2


def test_timeout_is_retried_with_the_short_timeout(server, make_client):
    # The first answer never comes; the retry's must come within `timeout`, so that is not cut fine (3 s) for a
    # loaded machine.
    server.script(answer(action="hang"), answer(200, DOC))
    client = make_client(timeout=3.0, first_timeout=3.0)
    assert client.get_document().incarnation == 4
    assert len(server.requests) == 2


def test_first_call_of_a_process_waits_for_the_warm_up(server, make_client):
    server.script(answer(200, DOC, delay=1.0), answer(action="hang"))
    client = make_client(timeout=0.2, first_timeout=60.0, retries=0)
    assert client.get_document().incarnation == 4   # longer than `timeout`, within `first_timeout`
    with pytest.raises(ImdsError, match="timed out after 0.2 s"):
        client.get_document()                       # warm now: the short timeout applies


def test_warm_up_is_granted_once_per_process_not_per_client(server, make_client):
    make_client().get_document()
    server.script(answer(action="hang"))
    with pytest.raises(ImdsError, match="timed out"):
        make_client(timeout=0.2, first_timeout=60.0, retries=0).get_document()


# -- the 5 requests/s budget -----------------------------------------------------------------

def test_rate_limiter_never_lets_more_than_five_through_in_any_second(clock, sleep):
    limiter = RateLimiter(5, clock=clock, sleep=sleep)
    stamps = []
    for dummy in range(23):
        limiter.acquire()
        stamps.append(clock())
    for i, start in enumerate(stamps):
        assert len([s for s in stamps[i:] if s - start < 1.0]) <= 5


def test_retry_storm_stays_within_budget(server, make_client, clock):
    stamps = []
    server.default = answer(429, "")
    client = make_client(retries=9, backoff=0.01, max_backoff=0.01, max_rate=5)
    real = client._session.request

    def stamped(*args, **kwargs):
        stamps.append(clock())
        return real(*args, **kwargs)

    client._session.request = stamped
    with pytest.raises(ImdsError):
        client.get_document()
    assert len(stamps) == 10
    for i, start in enumerate(stamps):
        assert len([s for s in stamps[i:] if s - start < 1.0]) <= 5


# -- hostile and broken bodies ---------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ('{"DocumentIncarnation": 1, "Events": [', "malformed JSON"),
    ("<html>proxy error</html>", "malformed JSON"),
    ("", "malformed JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[]", "JSON array, not an object"),
    ('"Events"', "JSON string, not an object"),
    ('{"Events": 5}', "Events is a JSON number"),
    ('{"Events": [{"EventType": "Reboot"}]}', "has no EventId"),
    ("[" * 100000 + "]" * 100000, "nested too deeply|deeper than"),
    ('{"Events": []' + ', "x": ' + "[" * 40 + "]" * 40 + "}", "deeper than 32"),
])
def test_hostile_bodies_give_one_clear_error(server, make_client, body, message):
    server.script(answer(200, body))
    with pytest.raises(ImdsError, match=message) as caught:
        make_client(retries=0).get_document()
    assert str(caught.value).startswith("IMDS GET /metadata/scheduledevents")
    assert len(str(caught.value)) < 600


def test_huge_body_is_refused_without_reading_it_all(server, make_client):
    server.script(answer(200, b" " * (2 * 1024 * 1024)))
    with pytest.raises(ImdsError, match="more than the 1048576 bytes allowed"):
        make_client(retries=0).get_document()


def test_huge_body_without_content_length_is_cut_off(server, make_client):
    server.script(answer(200, b" " * (64 * 1024), action="no-length"))
    with pytest.raises(ImdsError, match="more than the 1000 bytes allowed$"):
        make_client(retries=0, max_body_bytes=1000).get_document()


def test_truncated_body_is_retried_then_reported(server, make_client):
    server.script(answer(200, '{"DocumentIncarnation": 1, "Events": []}', action="truncate"))
    server.default = answer(200, '{"DocumentIncarnation": 1, "Events": []}', action="truncate")
    with pytest.raises(ImdsError, match="broke off|malformed"):
        make_client(retries=1).get_document()


def test_error_excerpt_is_short_and_single_line(server, make_client):
    server.script(answer(400, "line one\nline two\n" + "x" * 5000))
    with pytest.raises(ImdsError) as caught:
        make_client().get_document()
    text = str(caught.value)
    assert "\n" not in text and "line one line two" in text and len(text) < 400


def test_missing_requests_library_is_reported(monkeypatch):
    monkeypatch.setattr(imds, "HAS_REQUESTS", False)
    with pytest.raises(ImdsError, match="'requests' is required"):
        ImdsClient(endpoint="http://127.0.0.1:1")
