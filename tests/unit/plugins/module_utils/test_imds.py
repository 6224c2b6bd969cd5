# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient, ImdsError, PaceRecord

from ansible_collections.imds.scheduled_events.tests.unit.utils.fault_matrix import FaultCase, Served
from ansible_collections.imds.scheduled_events.tests.unit.utils.loopback import refused_port
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import answer, outcome_of

GUID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
DOC = {"DocumentIncarnation": 4, "Events": [{
    "EventId": GUID, "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["myvm", "peer"],
    "EventStatus": "Scheduled", "NotBefore": "Mon, 11 Apr 2026 22:26:58 GMT"}]}
HERE = os.path.dirname(os.path.abspath(__file__))
GUARD = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", "guard"))


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
    with pytest.raises(ImdsError) as caught:
        make_client(retries=4).get_document()
    assert str(caught.value) == ("IMDS GET /metadata/scheduledevents: gave up after 5 attempts in 15.0 s; "
                                 "last: answered 500 Internal Server Error: boom")
    assert len(server.requests) == 5 and caught.value.attempts == 5
    assert sleep.calls == [1.0, 2.0, 4.0, 8.0] and caught.value.elapsed == 15.0  # on the injected clock


def test_backoff_grows_exponentially_is_capped_and_jittered(server, make_client, sleep):
    server.default = answer(503, "")
    with pytest.raises(ImdsError):
        make_client(retries=6, backoff=1.0, max_backoff=8.0, jitter=lambda: 1.0, deadline=600).get_document()
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


# -- the deadline ----------------------------------------------------------------------------

def test_a_server_that_answers_500_forever_is_bounded_by_the_deadline(server, make_client, sleep):
    server.default = answer(500, "boom")
    error = outcome_of(make_client(deadline=10, retries=1000, backoff=1.0, max_backoff=2.0).get_document)
    # on the injected clock: attempts at 0, 1, 3, 5, 7 and 9 s; a seventh, after 2 s more, would end past 10 s
    assert str(error) == ("IMDS GET /metadata/scheduledevents: no answer within the 10 s deadline: 6 attempts in 9.0 s; "
                          "another after 2.0 s of backoff would not fit; last: answered 500 Internal Server Error: boom")
    assert error.retryable and error.status == 500 and error.attempts == 6 and error.elapsed == 9.0
    assert len(server.requests) == 6 and sleep.calls == [1.0, 2.0, 2.0, 2.0, 2.0]


def _warm(server, client):
    server.script(answer(200, DOC))
    client.get_document()
    server.requests[:] = []


def check_deadline_message(error, server, bound, last):
    """The message names the bound, the attempts (as many as the server saw) and the time they took (as the client
    measured it), and the last error."""
    assert isinstance(error, ImdsError) and error.retryable, error
    match = re.match(r"IMDS GET /metadata/scheduledevents: no answer within %s: (\d+) attempts? in "
                     r"(\d+\.\d) s; (.*; )?last: %s$" % (re.escape(bound), last), str(error))
    assert match, str(error)
    assert int(match.group(1)) == error.attempts == len(server.requests) >= 1
    assert match.group(2) == "%.1f" % error.elapsed


def test_a_server_that_accepts_and_never_answers_is_bounded_by_the_deadline(server, make_client, real_clock):
    client = make_client(timeout=0.5, first_timeout=0.5, deadline=1.2, retries=1000, backoff=0.01,
                         clock=real_clock, sleep=real_clock.sleep)
    _warm(server, client)
    server.default = answer(action="hang")
    error = outcome_of(client.get_document)
    check_deadline_message(error, server, "the 1.2 s deadline", r"timed out after [\d.]+ s")
    assert len(real_clock.calls) == error.attempts - 1  # the backoff between them, and none after the last


@pytest.mark.parametrize("action", ["trickle", "trickle-head"])
def test_a_server_that_trickles_bytes_is_cut_off_at_the_deadline(server, make_client, real_clock, action):
    """A byte every 0.05 s never trips a socket's timeout: only the bound on the whole attempt stops it."""
    client = make_client(timeout=0.5, first_timeout=0.5, deadline=1.2, retries=1000, backoff=0.01,
                         clock=real_clock, sleep=real_clock.sleep)
    _warm(server, client)
    server.default = answer(action=action)
    error = outcome_of(client.get_document)
    check_deadline_message(error, server, "the 1.2 s deadline", r"timed out after [\d.]+ s")


def test_the_services_first_answer_does_not_count_against_the_deadline(server, make_client, real_clock):
    server.default = answer(action="hang")
    client = make_client(timeout=0.3, first_timeout=2.0, deadline=1.5, retries=1000, backoff=0.01,
                         clock=real_clock, sleep=real_clock.sleep)
    error = outcome_of(client.get_document)
    # cold: the first request waited first_timeout (2 s), longer than the whole deadline; what it took beyond the
    # timeout (1.7 s) did not count, so the retries still had their time
    check_deadline_message(error, server, "the 1.5 s deadline, plus 1.7 s for the service's first answer",
                           r"timed out after [\d.]+ s")
    assert error.attempts >= 2


def test_a_wait_bounds_each_call_by_what_is_left_of_it(server, make_client, sleep):
    server.default = answer(500, "boom")
    error = outcome_of(lambda: make_client(deadline=30, retries=1000, backoff=1.0, max_backoff=2.0)
                       .get_document(within=10))
    assert str(error).startswith("IMDS GET /metadata/scheduledevents: no answer within the 10 s left: 6 attempts in "
                                 "9.0 s;")
    assert sum(sleep.calls) == 9.0


def test_the_deadline_bounds_the_wait_for_a_slot_in_the_budget(server, make_client, clock, sleep):
    client = make_client(deadline=0.5, retries=0)
    for dummy in range(5):
        client.get_document()  # the budget of this (fake) second is spent
    error = outcome_of(client.get_document)
    assert str(error) == ("IMDS GET /metadata/scheduledevents: no answer within the 0.5 s deadline: 0 attempts in "
                          "0.0 s; no free slot in the budget of 5 requests per second")
    assert len(server.requests) == 5 and sleep.calls == []


def test_a_deadline_must_be_positive(server, make_client):
    with pytest.raises(ImdsError, match="deadline must be positive"):
        make_client(deadline=0)


def test_a_service_that_answered_another_process_lately_is_warm(server, make_client):
    make_client().get_document()
    imds._WARMED.clear()  # a new process of the same user
    server.default = answer(action="hang")
    error = outcome_of(make_client(timeout=0.2, first_timeout=60.0, retries=0).get_document, bound=50)
    assert str(error) == "IMDS GET /metadata/scheduledevents timed out after 0.2 s"  # not 60 s


def test_an_answer_older_than_the_warm_period_means_cold_again(server, make_client, clock):
    make_client().get_document()
    imds._WARMED.clear()
    clock.now += imds.WARM_FOR + 1
    server.default = answer(action="hang")
    error = outcome_of(make_client(timeout=0.2, first_timeout=0.6, retries=0).get_document)
    assert str(error) == "IMDS GET /metadata/scheduledevents timed out after 0.6 s"


def test_the_vms_name_never_waits_for_the_scheduled_events_warm_up(server, make_client):
    """compute/name is instance metadata, always on: only scheduled events enable themselves on first use."""
    server.default = answer(action="hang")
    error = outcome_of(make_client(timeout=0.2, first_timeout=60.0, retries=0).compute_name, bound=50)
    assert str(error) == "IMDS GET /metadata/instance/compute/name timed out after 0.2 s"


# -- the 5 requests/s budget -----------------------------------------------------------------

def test_pace_never_lets_more_than_five_arrive_in_any_second(clock):
    """A request counts from before it leaves until a second after its answer, so whenever the server logs its
    arrival (as it leaves, as it is answered, anything between), no second holds more than five."""
    record = PaceRecord()
    sent, answered = [], []
    for number in range(23):
        token = "t%d" % number
        while True:
            wait = record.take(token, clock(), hold=5.0, rate=5)
            if not wait:
                break
            clock.now += wait
        sent.append(clock())
        clock.now += (number % 4) * 0.1  # the answer takes 0 to 0.3 s
        record.finish(token, clock())
        answered.append(clock())
    for stamps in (sent, answered):
        for i, start in enumerate(stamps):
            assert len([s for s in stamps[i:] if s - start < 1.0]) <= 5


def test_a_request_in_flight_keeps_its_slot_until_it_ends(clock):
    record = PaceRecord()
    for number in range(5):
        assert record.take("t%d" % number, clock(), hold=5.0, rate=5) == 0
    clock.now += 3.0  # none answered yet: the budget is still spent
    assert record.take("late", clock(), hold=5.0, rate=5) > 0
    record.finish("t0", clock())
    clock.now += 1.0
    assert record.take("late", clock(), hold=5.0, rate=5) == 0


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


def test_pacing_costs_nothing_while_the_budget_is_free(server, make_client, sleep):
    client = make_client()
    for dummy in range(5):
        client.get_document()
    assert sleep.calls == []
    client.get_document()  # the sixth within the same (fake) second waits for the first to leave the window
    assert sleep.calls == [1.0]


def test_processes_of_the_same_user_share_one_budget(server, make_client, sleep):
    first, second = make_client(), make_client()  # each as a process of its own would have it
    for dummy in range(3):
        first.get_document()
        second.get_document()
    assert sleep.calls == [1.0]


def test_the_pace_file_is_the_users_own(server, make_client):
    make_client().get_document()
    (name,) = os.listdir(os.environ[imds.PACE_DIR_ENV])
    info = os.stat(os.path.join(os.environ[imds.PACE_DIR_ENV], name))
    assert name.startswith("pace-") and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()


def test_where_the_pace_file_lives():
    tmp = tempfile.gettempdir()
    assert imds.pace_directories({}, 0) == ["/run/imds-scheduled-events"]
    assert imds.pace_directories({"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000) == [
        "/run/user/1000/imds-scheduled-events", os.path.join(tmp, "imds-scheduled-events-1000")]
    assert imds.pace_directories({"XDG_RUNTIME_DIR": "relative"}, 1000) == [
        os.path.join(tmp, "imds-scheduled-events-1000")]
    assert imds.pace_directories({imds.PACE_DIR_ENV: "/srv/pace", "XDG_RUNTIME_DIR": "/run/user/0"}, 0) == [
        "/srv/pace"]


@pytest.mark.parametrize("flaw, message", [
    ("group-writable", "may be written by group or others"),
    ("other-user", "belongs to uid"),
    ("not-a-directory", "is not a directory"),
    ("symlink", "is not a directory"),
])
def test_a_directory_someone_else_may_write_is_refused(tmp_path, flaw, message):
    path = tmp_path / "pace"
    euid = os.geteuid()
    if flaw == "group-writable":
        path.mkdir()
        path.chmod(0o770)
    elif flaw == "other-user":
        path.mkdir(0o700)
        euid += 1
    elif flaw == "not-a-directory":
        path.write_text("")
    else:
        (tmp_path / "elsewhere").mkdir(0o700)
        path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(imds.PaceUnusable, match=message):
        imds.own_directory(str(path), euid)


def test_an_unusable_pace_directory_falls_back_to_this_process_and_says_so_once(server, make_client, tmp_path,
                                                                                monkeypatch, sleep):
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    monkeypatch.setenv(imds.PACE_DIR_ENV, str(loose))
    said = []
    clients = [make_client(warn=said.append) for dummy in range(2)]
    assert len(said) == 1, said
    assert "paced for this process alone" in said[0] and "%s may be written by group or others" % loose in said[0]
    for dummy in range(3):
        for client in clients:
            client.get_document()
    assert os.listdir(str(loose)) == [] and len(server.requests) == 6
    assert sleep.calls == [1.0]  # still within the budget, in this process


def test_a_pace_file_replaced_by_a_symlink_is_refused(server, make_client, tmp_path, sleep):
    said = []
    client = make_client(warn=said.append)
    client.get_document()
    path = imds.shared_pace(client.endpoint)[0].path
    os.remove(path)
    os.symlink(str(tmp_path / "elsewhere"), path)
    for dummy in range(5):
        client.get_document()
    assert len(said) == 1 and "%s is a symlink" % path in said[0]
    assert not os.path.exists(str(tmp_path / "elsewhere")) and len(server.requests) == 6


def test_a_damaged_pace_file_loses_only_what_it_held(server, make_client, sleep):
    """A write torn by a crash or stray bytes: what does not read as a time of this boot does not count."""
    client = make_client()
    client.get_document()
    path = imds.shared_pace(client.endpoint)[0].path
    with open(path) as handle:
        head = handle.read().splitlines()[:2]
    with open(path, "w") as handle:
        junk = ["slot a nan", "slot b inf", "slot c -inf", "answered", "slot torn 10", "slot d 10", "\x00\xff garbage"]
        handle.write("\n".join(head + junk))
    for dummy in range(5):
        client.get_document()
    assert sleep.calls == []


CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from imds_scheduled_events.imds import ImdsClient
client = ImdsClient(endpoint=sys.argv[2], retries=0, timeout=60, first_timeout=60)
sys.stdin.readline()  # every process starts at once
for dummy in range(int(sys.argv[3])):
    client.get_document()
"""


def test_several_processes_never_exceed_five_requests_a_second_together(tmp_path):
    """Real processes, each with the client as the watcher installs it, read as fast as they can: the simulator's
    record shows at most 5 requests in any second, and it never had to answer 429."""
    srv = Served(FaultCase())
    library = tmp_path / "lib"
    library.mkdir()
    (library / "imds_scheduled_events").symlink_to(os.path.dirname(imds.__file__))
    env = dict(os.environ, PYTHONPATH=GUARD)
    processes, each = 4, 6
    children = [subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", CHILD, str(library), srv.endpoint, str(each)], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for dummy in range(processes)]
    try:
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
        log = srv.check_budget(processes * each)
        assert len(log) == processes * each and all(entry["status"] == 200 for entry in log)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        srv.stop()


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
