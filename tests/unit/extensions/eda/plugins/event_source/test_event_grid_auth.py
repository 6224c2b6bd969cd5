# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Who may deliver to the event_grid receiver: Microsoft Entra tokens checked against a tenant on loopback (keys the
tests generate, served by an aiohttp key server that counts its fetches), the shared token beside them, the limit
on failed authentications, and the limits on bodies. Real HTTP on 127.0.0.1 through the receiver's own server
setup (source.serve); every log record is captured at DEBUG level and must never hold a token."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest
from aiohttp import web

from ansible_collections.imds.scheduled_events.extensions.eda.plugins.event_source import event_grid as source
from ansible_collections.imds.scheduled_events.plugins.module_utils import entra
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import ArgumentError
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.test_event_grid import grid_event
from ansible_collections.imds.scheduled_events.tests.unit.utils.entra import (
    APP, APP_ID, NOW, TENANT, Authority, KeyServer, claims, hs256_with_public_key, issuer, raw_request, unsigned)

SECRET = "shared-s3cret-0123456789"
HANDSHAKE = [{"id": "v-1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
              "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}, "dataVersion": "2"}]


class Rig(object):
    """A receiver with Entra authentication on 127.0.0.1, its tenant's key server, and clocks the test moves:
    `now` (seconds since the epoch, for exp and nbf) and `mono` (paces key fetches and failure counts)."""

    def __init__(self, **args):
        self.authority = Authority(wall=lambda: NOW)
        self.keys = KeyServer(self.authority)
        self.now = float(NOW)
        self.mono = 1000.0
        self.args = args
        self.queue = asyncio.Queue()
        self.receiver = self.runner = self.session = self.base = None

    async def __aenter__(self):
        await self.keys.start()
        args = dict({"entra_tenant_id": TENANT, "entra_audience": [APP, APP_ID],
                     "entra_openid_configuration_url": self.keys.configuration_url}, **self.args)
        self.receiver = source.Receiver(dict((k, v) for k, v in args.items() if v is not None), self.queue,
                                        clock=lambda: self.now, monotonic=lambda: self.mono)
        self.runner = await source.serve(self.receiver, "127.0.0.1", 0)
        self.base = "http://127.0.0.1:%d" % self.port
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.runner.cleanup()
        await self.keys.stop()

    @property
    def port(self):
        return self.runner.addresses[0][1]

    def token(self, **changes):
        return self.authority.sign(claims(**changes))

    async def post(self, token=None, body=None, query="", method="POST", headers=None):
        """(status, headers, text) of one request with `Authorization: Bearer <token>` when a token is given."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = "Bearer " + token
        data = json.dumps([grid_event()] if body is None else body) if method == "POST" else None
        async with self.session.request(method, self.base + "/" + query, data=data, headers=sent) as response:
            return response.status, dict(response.headers), await response.text()

    def events(self):
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


def run(scenario, **args):
    """Run `scenario(rig)` (a coroutine function) against a fresh rig; returns what it returns."""

    async def main():
        async with Rig(**args) as rig:
            return await scenario(rig)

    return asyncio.run(main())


@pytest.fixture(name="logs")
def logs_fixture(caplog):
    """Every record of every logger, DEBUG included (aiohttp's too)."""
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_not_logged(logs, *secrets_):
    for secret in secrets_:
        assert secret not in logs.text, "a token reached the log"
        for record in logs.records:
            assert secret not in repr(record.args)


# -- accepted ------------------------------------------------------------------------------------------------------


def test_a_valid_token_passes_the_handshake_and_the_deliveries(logs):
    async def scenario(rig):
        token = rig.token()
        handshake = await rig.post(token, HANDSHAKE, headers={"aeg-event-type": "SubscriptionValidation"})
        delivery = await rig.post(token, [grid_event("d-1")])
        cloud = await rig.post(token, method="OPTIONS", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
        v2 = await rig.post(rig.token(iss=issuer(TENANT, 2), aud=APP_ID, ver="2.0"), [grid_event("d-2")])
        return token, handshake, delivery, cloud, v2, rig.events(), rig.keys.fetches, rig.keys.config_fetches

    token, handshake, delivery, cloud, v2, events, fetches, config_fetches = run(scenario)
    assert handshake[0] == 200 and json.loads(handshake[2]) == {
        "validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert delivery[0] == 200 and cloud[0] == 200 and v2[0] == 200
    assert cloud[1]["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert [(e["change"], e["delivery_id"]) for e in events] == [("appeared", "d-1")]  # d-2: the same event, unchanged
    assert (fetches, config_fetches) == (1, 1)  # the keys were fetched once, for the first request
    assert "1 signing key(s) of tenant %s" % TENANT in logs.text
    assert_not_logged(logs, token)


def test_the_jwks_url_instead_of_the_openid_configuration():
    async def scenario(rig):
        rig.receiver.args["entra_jwks_url"] = rig.keys.base + "/keys"
        return await rig.post(rig.token()), rig.keys.config_fetches

    (status, dummy, dummy2), config_fetches = run(scenario)
    assert status == 200 and config_fetches == 0


# -- refused, and why ----------------------------------------------------------------------------------------------


def _foreign_key_known_kid(rig):
    return Authority(wall=lambda: NOW).sign(claims(), kid=rig.authority.kids()[0])


REFUSALS = [
    ("wrong-audience", lambda rig: rig.token(aud="api://another-app"), "wrong audience"),
    ("audience-list-without-ours", lambda rig: rig.token(aud=["api://a", "api://b"]), "wrong audience"),
    ("no-audience", lambda rig: rig.token(aud=None), "no 'aud' claim"),
    ("wrong-issuer", lambda rig: rig.token(iss=issuer("00000000-0000-0000-0000-000000000000", 1)), "wrong issuer"),
    ("issuer-of-another-cloud", lambda rig: rig.token(iss="https://login.microsoftonline.us/%s/v2.0" % TENANT),
     "wrong issuer"),
    ("wrong-tenant-id", lambda rig: rig.token(tid="00000000-0000-0000-0000-000000000000"), "wrong tenant"),
    ("no-tenant-id", lambda rig: rig.token(tid=None), "no 'tid' claim"),
    ("expired", lambda rig: rig.token(exp=NOW - 61), "expired 61 s ago"),
    ("not-yet-valid", lambda rig: rig.token(nbf=NOW + 3600), "not valid for another 3600 s"),
    ("exp-not-a-number", lambda rig: rig.token(exp="tomorrow"), "exp or nbf is not a number"),
    ("exp-infinite", lambda rig: rig.token(exp=float("inf")), "exp or nbf is not a number"),
    ("nbf-nan", lambda rig: rig.token(nbf=float("nan")), "exp or nbf is not a number"),
    ("no-exp", lambda rig: rig.token(exp=None), "no 'exp' claim"),
    ("unsigned-alg-none", lambda rig: unsigned({"alg": "none", "typ": "JWT", "kid": rig.authority.kids()[0]}, claims()),
     "algorithm 'none' is not RS256"),
    ("hs256-keyed-with-the-public-key", lambda rig: hs256_with_public_key(rig.authority, claims()),
     "algorithm 'HS256' is not RS256"),
    ("foreign-key-known-kid", _foreign_key_known_kid, "bad signature"),
    ("signature-cut", lambda rig: rig.token()[:-10], "bad signature"),
    ("payload-swapped", lambda rig: ".".join([rig.token().split(".")[0], rig.token(aud="x").split(".")[1],
                                              rig.token().split(".")[2]]), "bad signature"),
    ("missing-role", lambda rig: rig.token(roles=None), "the role AzureEventGridSecureWebhookSubscriber is missing"),
    ("other-roles-only", lambda rig: rig.token(roles=["Reader"]), "is missing"),
    ("role-as-a-string", lambda rig: rig.token(roles="AzureEventGridSecureWebhookSubscriber"), "is missing"),
    ("malformed-not-a-jwt", lambda rig: "definitely-not-a-jwt", "malformed token (not a JWT)"),
    ("malformed-header", lambda rig: "bm90LWpzb24.e30.c2ln", "malformed token (its header is not a JSON object)"),
    ("malformed-two-segments", lambda rig: ".".join(rig.token().split(".")[:2]), "malformed token (not a JWT)"),
    ("no-kid", lambda rig: unsigned({"alg": "RS256", "typ": "JWT"}, claims(), b"x" * 256), "no usable key id"),
]


@pytest.mark.parametrize("make, reason", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_token_is_refused_with_401_and_the_reason(make, reason, logs):
    async def scenario(rig):
        await rig.post(rig.token())  # the keys are there
        token = make(rig)
        return token, await rig.post(token), rig.events()

    token, (status, dummy, text), events = run(scenario)
    assert status == 401 and json.loads(text) == {"error": "a valid token is required"}
    assert len(events) == 1  # the first delivery only
    refusals = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert len(refusals) == 1 and reason in refusals[0], refusals
    assert_not_logged(logs, token)


def test_a_token_replayed_after_its_expiry_is_refused(logs):
    async def scenario(rig):
        token = rig.token(exp=NOW + 600)
        first = await rig.post(token, [grid_event("d-1")])
        rig.now = NOW + 600 + entra.DEFAULT_LEEWAY  # within the leeway: still good
        within = await rig.post(token, [grid_event("d-2", status="Started")])
        rig.now += 1
        replayed = await rig.post(token, [grid_event("d-3", status="Completed")])
        return token, first[0], within[0], replayed[0], [e["change"] for e in rig.events()]

    token, first, within, replayed, changes = run(scenario)
    assert (first, within, replayed) == (200, 200, 401)
    assert changes == ["appeared", "approved", "started"]  # nothing of the replay
    assert "expired 61 s ago" in logs.text
    assert_not_logged(logs, token)


def test_the_leeway_is_an_argument():
    async def scenario(rig):
        return (await rig.post(rig.token(exp=NOW - 1)))[0], (await rig.post(rig.token(nbf=NOW + 1)))[0]

    assert run(scenario, entra_leeway=0) == (401, 401)
    assert run(scenario) == (200, 200)


# -- the tenant's keys ---------------------------------------------------------------------------------------------


def test_an_unknown_kid_fetches_the_keys_once_and_is_refused(logs):
    async def scenario(rig):
        await rig.post(rig.token())
        rig.mono += entra.KEYS_MIN_INTERVAL
        stranger = Authority(wall=lambda: NOW).sign(claims(), kid="a-kid-nobody-published")
        unknown = await rig.post(stranger)
        fetches_after_unknown = rig.keys.fetches
        again = await rig.post(Authority(wall=lambda: NOW).sign(claims(), kid="another-made-up-kid"))
        return stranger, unknown, fetches_after_unknown, again, rig.keys.fetches

    stranger, unknown, fetches_after_unknown, again, fetches = run(scenario)
    assert unknown[0] == 401 and fetches_after_unknown == 2  # fetched again for it, and still unknown
    assert "unknown key id 'a-kid-nobody-published' (not in the tenant's keys, fetched just now)" in logs.text
    assert again[0] == 401 and fetches == 2  # within the minute: no other fetch
    assert "unknown key id 'another-made-up-kid' (not in the tenant's keys, fetched less than a minute ago)" in logs.text
    assert_not_logged(logs, stranger)


def test_a_flood_of_unknown_kids_makes_one_fetch_a_minute(logs):
    async def scenario(rig):
        await rig.post(rig.token())
        rig.mono += entra.KEYS_MIN_INTERVAL
        stranger = Authority(wall=lambda: NOW)
        answers = await asyncio.gather(*[rig.post(stranger.sign(claims(), kid="kid-%d" % n)) for n in range(30)])
        good = await rig.post(rig.token(), [grid_event("d-9")])
        return sorted(set(a[0] for a in answers)), rig.keys.fetches, good[0]

    statuses, fetches, good = run(scenario, auth_failures_per_minute=1000)
    assert fetches == 2  # the first, and one for the whole flood
    assert statuses == [401] and good == 200


def test_key_rotation_is_accepted_once_the_keys_are_fetched_again():
    async def scenario(rig):
        before = await rig.post(rig.token(), [grid_event("d-1")])
        rig.authority.rotate()  # Entra publishes a new key and signs with it
        early = await rig.post(rig.token(), [grid_event("d-2", status="Started")])
        rig.mono += entra.KEYS_MIN_INTERVAL
        after = await rig.post(rig.token(), [grid_event("d-2", status="Started")])
        return before[0], early[0], after[0], rig.keys.fetches, [e["change"] for e in rig.events()]

    before, early, after, fetches, changes = run(scenario)
    # Entra publishes a key well before it signs with it; one first used within a minute of a fetch is refused
    assert (before, early, after) == (200, 401, 200)
    assert fetches == 2 and changes == ["appeared", "approved", "started"]


def test_the_keys_are_fetched_again_after_a_day():
    async def scenario(rig):
        await rig.post(rig.token())
        rig.mono += entra.KEYS_MAX_AGE - 1
        await rig.post(rig.token())
        same_day = rig.keys.fetches
        rig.mono += 1
        await rig.post(rig.token())
        return same_day, rig.keys.fetches

    assert run(scenario) == (1, 2)


def _big(request):
    return web.Response(body=b"{" + b" " * (entra.MAX_JWKS_BYTES + 10) + b"}", content_type="application/json")


@pytest.mark.parametrize("answer, problem", [
    (lambda request: web.json_response({"error": "no"}, status=500), "answered HTTP 500"),
    (lambda request: web.Response(status=302, headers={"Location": "https://example.invalid/keys"}),
     "answered HTTP 302"),
    (_big, "sent more than %d bytes" % entra.MAX_JWKS_BYTES),
    (lambda request: web.Response(body=b"[]", content_type="application/json"), "the key set is not a JSON object"),
    (lambda request: web.json_response({"keys": [{"kty": "EC", "kid": "e"}, {"kty": "RSA", "kid": "small",
                                                                             "n": "AQAB", "e": "AQAB"}]}),
     "no RSA signing key (2 entries left out)"),
    ("hang", "TimeoutError"),
], ids=["500", "redirect", "too-big", "not-an-object", "no-usable-key", "no-answer"])
def test_a_key_set_that_cannot_be_had_gives_503_and_the_old_keys_stay(answer, problem, logs, monkeypatch):
    monkeypatch.setattr(entra, "FETCH_TIMEOUT", 0.5)

    async def scenario(rig):
        first = await rig.post(rig.token(), [grid_event("d-1")])
        rig.keys.keys_answer = rig.keys.hang if answer == "hang" else answer
        rig.mono += entra.KEYS_MAX_AGE  # old: fetched again, and that fails
        old_key = await rig.post(rig.token(), [grid_event("d-2", status="Started")])
        rig.authority.rotate()
        rig.mono += entra.KEYS_MIN_INTERVAL
        new_key = await rig.post(rig.token())
        return first[0], old_key[0], new_key, rig.keys.fetches

    first, old_key, new_key, fetches = run(scenario)
    assert (first, old_key) == (200, 200)  # a failed fetch keeps the keys there were
    assert new_key[0] == 503 and int(new_key[1]["Retry-After"]) == entra.KEYS_MIN_INTERVAL and fetches == 3
    errors = [r.getMessage() for r in logs.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all(problem in e for e in errors), errors


def test_no_key_set_at_all_gives_503(logs):
    async def scenario(rig):
        rig.keys.keys_answer = lambda request: web.json_response({}, status=404)
        return await rig.post(rig.token())

    status, headers, dummy = run(scenario)
    assert status == 503 and headers["Retry-After"] == str(entra.KEYS_MIN_INTERVAL)
    assert "answered HTTP 404" in logs.text


# -- the two modes -------------------------------------------------------------------------------------------------


def test_entra_only_refuses_the_code_and_a_shared_bearer(logs):
    async def scenario(rig):
        return ((await rig.post(query="?code=" + SECRET))[0], (await rig.post(SECRET))[0],
                (await rig.post())[0], (await rig.post(rig.token()))[0])

    assert run(scenario) == (401, 401, 401, 200)
    assert "no Microsoft Entra token (Authorization: Bearer)" in logs.text and "no token" in logs.text
    assert_not_logged(logs, SECRET)


def test_both_modes_accept_either(logs):
    async def scenario(rig):
        return ((await rig.post(query="?code=" + SECRET))[0], (await rig.post(SECRET))[0],
                (await rig.post(rig.token()))[0], (await rig.post(rig.token(aud="x"), query="?code=" + SECRET))[0],
                (await rig.post(rig.token(aud="x")))[0], (await rig.post("wrong"))[0])

    assert run(scenario, token=SECRET) == (200, 200, 200, 200, 401, 401)
    assert "not the token, nor an acceptable Entra token: wrong audience" in logs.text
    assert_not_logged(logs, SECRET)


@pytest.mark.parametrize("args, message", [
    ({"entra_audience": None}, "need both entra_tenant_id and entra_audience"),
    ({"entra_tenant_id": None}, "need both entra_tenant_id and entra_audience"),
    ({"entra_tenant_id": "contoso.onmicrosoft.com"}, "must be the tenant's id (a GUID)"),
    ({"entra_jwks_url": "https://login.microsoftonline.com/common/discovery/v2.0/keys"}, "not both"),
    ({"entra_openid_configuration_url": "http://login.example/x"}, "must be https:// (http:// only on loopback)"),
    ({"entra_openid_configuration_url": "ftp://127.0.0.1/x"}, "is not an https:// URL"),
    ({"entra_leeway": 3600}, "between 0 and 300"),
    ({"entra_tennant_id": TENANT}, "unknown argument(s) entra_tennant_id"),
    ({"insecure_no_token": True}, "goes with neither token nor entra_tenant_id"),
    ({"max_events": 0}, "between 1 and 5000"),
    ({"max_body_bytes": 10}, "between 1024 and"),
    ({"auth_failures_per_minute": 0}, "between 1 and"),
])
def test_bad_entra_arguments_stop_the_source(args, message):
    given = dict({"entra_tenant_id": TENANT, "entra_audience": [APP],
                  "entra_openid_configuration_url": "https://login.microsoftonline.com/%s/v2.0/"
                                                    ".well-known/openid-configuration" % TENANT}, **args)
    with pytest.raises(ArgumentError) as caught:
        source.Receiver(dict((k, v) for k, v in given.items() if v is not None), None)
    assert message in str(caught.value)


def test_the_defaults_come_from_the_tenant():
    receiver = source.Receiver({"entra_tenant_id": TENANT.upper(), "entra_audience": APP}, None)
    assert receiver.policy.issuers == ("https://sts.windows.net/%s/" % TENANT,
                                       "https://login.microsoftonline.com/%s/v2.0" % TENANT)
    assert receiver.policy.audiences == (APP,) and receiver.policy.role == "AzureEventGridSecureWebhookSubscriber"
    assert entra.openid_configuration_url(TENANT) == (
        "https://login.microsoftonline.com/%s/v2.0/.well-known/openid-configuration" % TENANT)


# -- failed authentications, per peer ------------------------------------------------------------------------------


def test_failed_authentications_get_429_once_over_the_limit_and_a_delivery_still_passes(logs):
    async def scenario(rig):
        statuses = [(await rig.post("wrong-%d" % n))[0] for n in range(5)]
        limited = await rig.post("wrong-again")
        good = await rig.post(rig.token(), [grid_event("d-1")])
        expired = await rig.post(rig.token(exp=NOW - 3600))
        rig.mono += 60
        later = await rig.post("wrong-later")
        return statuses, limited, good[0], expired[0], later[0], rig.receiver.counts

    statuses, limited, good, expired, later, counts = run(scenario, auth_failures_per_minute=5)
    assert statuses == [401] * 5
    assert limited[0] == 429 and int(limited[1]["Retry-After"]) == 60
    assert good == 200  # an authenticated request is never limited
    assert expired == 429
    assert later == 401  # a minute later, counted afresh
    assert counts["limited"] == 2 and counts["refused"] == 8
    warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING and "429" in r.getMessage()]
    assert len(warnings) == 1 and "more than 5 failed authentications within a minute" in warnings[0]


def test_failures_are_counted_per_peer():
    limiter = source.FailedAuthentications(2)
    for when in (0, 1):
        assert limiter.failed("192.0.2.1", when) == (0.0, False)
    assert limiter.failed("192.0.2.1", 2) == (59.0, True)  # until the failure at 1 is a minute old
    assert limiter.failed("192.0.2.1", 3) == (59.0, False)  # the last two are at 2 and 3; said once a minute
    assert limiter.failed("192.0.2.2", 3) == (0.0, False)
    assert limiter.limited("192.0.2.1", 3) and not limiter.limited("192.0.2.1", 62)


# -- bodies --------------------------------------------------------------------------------------------------------


def test_oversized_bodies_get_413_whatever_their_framing(logs):
    limit = 4096

    async def scenario(rig):
        token = rig.token()
        auth = ("Authorization: Bearer %s" % token).encode()
        big = json.dumps([grid_event("d-%d" % n) for n in range(10)]).encode()
        assert len(big) > limit
        declared = await raw_request(rig.port, b"POST / HTTP/1.1\r\nHost: x\r\n" + auth +
                                     b"\r\nContent-Type: application/json\r\nContent-Length: %d" % len(big), big)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 500]), big[i:i + 500]) for i in range(0, len(big), 500))
        chunked = await raw_request(rig.port, b"POST / HTTP/1.1\r\nHost: x\r\n" + auth +
                                    b"\r\nTransfer-Encoding: chunked", chunks + b"0\r\n\r\n")
        unframed = await raw_request(rig.port, b"POST / HTTP/1.1\r\nHost: x\r\n" + auth, big)
        many = await rig.post(token, [grid_event("d-1"), grid_event("d-2"), grid_event("d-3")])
        fits = await rig.post(token, [grid_event("d-1"), grid_event("d-2")])
        return token, declared, chunked, unframed, many, fits, rig.events()

    token, declared, chunked, unframed, many, fits, events = run(scenario, max_body_bytes=limit, max_events=2)
    assert declared[0] == 413 and b"larger than 4096 bytes" in declared[2]
    assert chunked[0] == 413 and b"larger than 4096 bytes" in chunked[2]
    assert 400 <= unframed[0] < 500  # HTTP/1.1 without a length has an empty body: not JSON, or a bad request
    assert many[0] == 413 and "3 events, more than 2" in many[2]
    assert fits[0] == 200 and len(events) == 1
    assert "BadHttpMessage (400; its details are not logged" in logs.text and '"topic"' not in logs.text
    assert_not_logged(logs, token)
