# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The hostile-input table (tests/unit/utils/hostile.py) in everything the event_grid receiver reads: the bearer
token and the query's code, every aeg-* and CloudEvents header, a token's kid and claims, the Event Grid and
CloudEvents fields of a delivery, and bodies that are not UTF-8. Whatever comes, the answer is a clear status
(2xx for data that is merely odd, 4xx for what is refused, never 5xx), nothing runs, and no log line carries a
value raw (control characters, terminal escapes, a 100 KB value) or a token. Header bytes go on the wire as
they are (raw_request), since no HTTP client sends a newline or a NUL in a header."""

from __future__ import annotations

import copy
import json
import logging

import pytest

from ansible_collections.imds.scheduled_events.tests.unit.extensions.eda.plugins.event_source import (
    test_event_grid_auth as auth)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.test_event_grid import (
    EMITTED, grid_event)
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile
from ansible_collections.imds.scheduled_events.tests.unit.utils.entra import claims, header_bytes, raw_request

SECRET = "shared-s3cret-0123456789"
logs_fixture = auth.logs_fixture  # the fixture `logs`: every record of every logger, DEBUG included
MAX_LINE = 1500  # no log line is longer: values are cut


def strings_and_bytes(canary):
    """Every hostile string, and the bytes that are not UTF-8."""
    return [(v.name, v.value) for v in hostile.strings(canary)] + [("non-utf8", hostile.NON_UTF8)]


def every_value(canary):
    """Every hostile string and every JSON value of the wrong type."""
    return [(v.name, v.value) for v in hostile.strings(canary) + hostile.wrong_types()]


def check_logs(logs, *secrets_):
    """Every record's message is one printable line of bounded length, and holds no secret."""
    for record in logs.records:
        message = record.getMessage()
        assert message.isprintable(), "a raw value reached the log: %r" % message[:300]
        assert len(message) <= MAX_LINE, "a log line of %d characters" % len(message)
        assert record.exc_info is None or record.levelno >= logging.ERROR
        for secret in secrets_:
            assert secret not in message and secret not in (record.exc_text or "")
    assert hostile.LONG * "A" not in logs.text


def run(scenario):
    """`scenario(rig)` on a receiver with both the shared token and Entra, the tenant's keys fetched already, and no
    limit on failures (every answer is the one the value itself gets)."""

    async def with_keys(rig):
        await rig.post(rig.token())
        rig.events()
        return await scenario(rig)

    return auth.run(with_keys, token=SECRET, auth_failures_per_minute=1000000)


def head(rig, target=b"/", extra=()):
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: 127.0.0.1:%d" % rig.port, b"Content-Type: application/json"]
    return b"\r\n".join(lines + list(extra))


# -- the secrets ---------------------------------------------------------------------------------------------------


def test_hostile_bearer_tokens_and_codes_are_refused(tmp_path, logs):
    canary = str(tmp_path / "canary")
    body = json.dumps([grid_event()]).encode()

    async def scenario(rig):
        answers = {}
        for name, value in strings_and_bytes(canary):
            raw = header_bytes(value)
            framing = b"Content-Length: %d" % len(body)
            bearer = await raw_request(rig.port, head(rig, extra=[b"Authorization: Bearer " + raw, framing]), body)
            bare = await raw_request(rig.port, head(rig, extra=[b"Authorization: " + raw, framing]), body)
            code = await raw_request(rig.port, head(rig, b"/?code=" + raw.replace(b" ", b"%20"), [framing]), body)
            answers[name] = (bearer[0], bare[0], code[0])
        return answers, rig.events()

    answers, events = run(scenario)
    for name, statuses in answers.items():
        assert all(400 <= status < 500 for status in statuses), (name, statuses)
    assert events == []
    check_logs(logs, SECRET)
    hostile.assert_no_trace(canary, logs.text)


def test_hostile_headers_beside_a_valid_token(tmp_path, logs):
    """aeg-* headers are not read; Content-Type and WebHook-Request-Origin are: none of them can break a delivery
    into a 5xx, and a header broken on the wire is the parser's 400."""
    canary = str(tmp_path / "canary")
    names = [b"aeg-event-type", b"aeg-subscription-name", b"aeg-delivery-count", b"aeg-data-version",
             b"aeg-metadata-version", b"Content-Type", b"WebHook-Request-Origin"]

    async def scenario(rig):
        auth = b"Authorization: Bearer " + rig.token().encode()
        answers = {}
        n = 0
        for header in names:
            for name, value in strings_and_bytes(canary):
                n += 1
                body = json.dumps([grid_event("d-%d" % n)]).encode()
                post = await raw_request(rig.port, head(rig, extra=[auth, header + b": " + header_bytes(value),
                                                                    b"Content-Length: %d" % len(body)]), body)
                options = await raw_request(rig.port, b"OPTIONS / HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n" + header +
                                            b": " + header_bytes(value))
                answers[(header, name)] = (post[0], options[0])
        return answers

    answers = run(scenario)
    for key, (post, options) in answers.items():
        assert post in (200, 400) and 200 <= options < 500, (key, post, options)
    origin_ok = [name for (header, name), (post, options) in answers.items()
                 if header == b"WebHook-Request-Origin" and options == 200]
    assert "path-traversal" in origin_ok and "newlines" not in origin_ok and "non-utf8" not in origin_ok
    check_logs(logs, SECRET)
    hostile.assert_no_trace(canary, logs.text)


# -- the token's parts ---------------------------------------------------------------------------------------------


def test_a_hostile_kid_is_refused_and_fetches_nothing_more(tmp_path, logs):
    canary = str(tmp_path / "canary")

    async def scenario(rig):
        answers = {}
        for name, value in every_value(canary):
            token = rig.authority.sign(claims(), kid=value if isinstance(value, str) else None, headers={"kid": value})
            answers[name] = (await rig.post(token))[0]
        return answers, rig.keys.fetches

    answers, fetches = run(scenario)
    assert answers.pop("long") == 400  # a 100 KB token: over aiohttp's limit of 8 KB for a header line
    assert set(answers.values()) == {401}, answers
    assert fetches == 1  # the first; the hostile kids came within the same minute
    check_logs(logs, SECRET)
    hostile.assert_no_trace(canary, logs.text)


CHECKED = ["aud", "iss", "tid", "roles", "exp", "nbf"]
CLAIMS = CHECKED + ["appid", "oid", "sub", "ver"]


@pytest.mark.parametrize("claim", CLAIMS)
def test_hostile_claims_are_refused_or_ignored(claim, tmp_path, logs):
    canary = str(tmp_path / "canary")

    async def scenario(rig):
        answers = {}
        for name, value in every_value(canary):
            token = rig.token(**{claim: value})
            answers[name] = (await rig.post(token, [grid_event("d-%s" % name)]))[0]
            answers[name + "-in-a-list"] = (await rig.post(rig.token(**{claim: [value]}),
                                                           [grid_event("d-l-%s" % name)]))[0]
        return answers

    answers = run(scenario)
    for name, status in answers.items():
        if name.startswith("long"):
            assert status == 400, name  # a 100 KB token: over aiohttp's limit of 8 KB for a header line
        elif claim in CHECKED and not (claim == "nbf" and name in ("number", "float")):  # nbf 42: long past
            assert status == 401, name
        elif name in [v.name for v in hostile.strings(canary)]:
            assert status == 200, name  # not read (PyJWT checks sub is a string)
        else:
            assert status in (200, 401), name
    check_logs(logs, SECRET)
    hostile.assert_no_trace(canary, logs.text)


# -- the delivery's fields -----------------------------------------------------------------------------------------


def _set(event, path, value):
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


GRID_FIELDS = [("id",), ("eventType",), ("subject",), ("topic",), ("eventTime",), ("dataVersion",),
               ("metadataVersion",), ("data",), ("data", "resourceInfo"), ("data", "resourceInfo", "id"),
               ("data", "resourceInfo", "name"), ("data", "resourceInfo", "type"),
               ("data", "resourceInfo", "location"), ("data", "resourceInfo", "properties")] + [
    ("data", "resourceInfo", "properties", key) for key in (
        "EventId", "EventType", "ResourceType", "Resources", "EventStatus", "NotBefore", "Description",
        "EventSource", "DurationInSeconds")]


def cloud_event(delivery_id):
    event = grid_event(delivery_id)
    return {"specversion": "1.0", "id": delivery_id, "source": event["topic"], "subject": event["subject"],
            "type": EMITTED, "time": event["eventTime"], "data": event["data"]}


CLOUD_FIELDS = [("specversion",), ("id",), ("type",), ("source",), ("subject",), ("time",), ("data",)]
HANDSHAKE = {"id": "v-1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
             "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}, "dataVersion": "2"}


@pytest.mark.parametrize("schema, path", [("grid", p) for p in GRID_FIELDS] + [("cloud", p) for p in CLOUD_FIELDS] +
                         [("handshake", ("data", "validationCode")), ("handshake", ("data",))],
                         ids=["%s:%s" % (s, ".".join(p)) for s, p in [("grid", p) for p in GRID_FIELDS] +
                              [("cloud", p) for p in CLOUD_FIELDS] +
                              [("handshake", ("data", "validationCode")), ("handshake", ("data",))]])
def test_hostile_delivery_fields_stay_data(schema, path, tmp_path, logs):
    canary = str(tmp_path / "canary")

    async def scenario(rig):
        token = rig.token()
        answers = {}
        emitted = []
        for n, (name, value) in enumerate(every_value(canary)):
            if schema == "handshake":
                event = copy.deepcopy(HANDSHAKE)
            else:
                event = cloud_event("c-%d" % n) if schema == "cloud" else grid_event("d-%d" % n)
            _set(event, path, value)
            headers = {"Content-Type": "application/cloudevents-batch+json"} if schema == "cloud" else None
            answers[name] = await rig.post(token, [event], headers=headers)
            emitted.extend(rig.events())
        return answers, emitted

    answers, emitted = run(scenario)
    for name, (status, dummy, text) in answers.items():
        assert status in (200, 400), (name, status, text)
        if schema == "handshake" and status == 200:
            assert json.loads(text)["validationResponse"] in [v for n, v in every_value(canary) if n == name]
    hostile.assert_no_trace(canary, logs.text, json.dumps(emitted))
    check_logs(logs, SECRET)


def test_bodies_that_are_not_utf8(tmp_path, logs):
    canary = str(tmp_path / "canary")

    async def scenario(rig):
        token = rig.token().encode()
        answers = []
        for body in (hostile.NON_UTF8, b"[" + hostile.NON_UTF8 + b"]",
                     json.dumps([grid_event()]).encode().replace(b"Redeploy", hostile.NON_UTF8),
                     b'[{"id": "\xff"}]'):
            answers.append(await raw_request(rig.port, head(rig, extra=[b"Authorization: Bearer " + token,
                                                                        b"Content-Length: %d" % len(body)]), body))
        return answers, rig.events()

    answers, events = run(scenario)
    assert [a[0] for a in answers] == [400] * 4 and all(b"not JSON" in a[2] for a in answers)
    assert events == []
    check_logs(logs, SECRET)
    hostile.assert_no_trace(canary, logs.text)
