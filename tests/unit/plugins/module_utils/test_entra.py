# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""module_utils/entra.py without HTTP: which key set entries are keys, when keys are fetched, which URLs may serve
them, and a token checked against a policy (the refusals over HTTP are the event_grid source's tests)."""

from __future__ import annotations

import json
import re

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import entra
from ansible_collections.imds.scheduled_events.tests.unit.utils.entra import (
    APP, NOW, TENANT, Authority, claims, issuer)


@pytest.fixture(scope="module", name="authority")
def authority_fixture():
    return Authority(wall=lambda: NOW)


def jwks(*entries):
    return json.dumps({"keys": list(entries)}).encode()


def test_only_rsa_signing_keys_of_2048_bits_or_more_are_kept(authority):
    good = authority.jwks()["keys"][0]
    private = dict(good, kid="with-private-parts", d="AQAB", p="AQAB", q="AQAB")  # only n and e are read
    keys, skipped = entra.parse_jwks(jwks(
        good, private, dict(good, kid="enc", use="enc"), dict(good, kid="ps256", alg="PS256"),
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AQAB", "y": "AQAB"}, dict(good, kid="short", n="AQAB"),
        dict(good, kid=""), dict(good, kid=7), dict(good, kid="n-not-a-string", n=12), "not an object"))
    assert sorted(keys) == sorted([good["kid"], "with-private-parts"]) and skipped == 8
    assert not hasattr(keys["with-private-parts"], "sign")  # a public key


@pytest.mark.parametrize("raw, problem", [
    (b"not json", "the key set is not JSON"),
    (b"\xff\xfe", "the key set is not JSON"),
    (b"[" * 100000 + b"]" * 100000, "the key set is not JSON"),
    (b"[]", "is not a JSON object"),
    (b'{"keys": {}}', "has no keys list"),
    (b'{"keys": []}', "has no RSA signing key (0 entries left out)"),
    (b" " * (entra.MAX_JWKS_BYTES + 1), "larger than"),
])
def test_a_key_set_that_cannot_be_read_says_why(raw, problem):
    with pytest.raises(entra.KeysUnavailable, match=re.escape(problem)):
        entra.parse_jwks(raw)


def test_the_jwks_uri_of_an_openid_configuration():
    assert entra.jwks_uri_of(b'{"jwks_uri": "https://login.example/keys"}') == "https://login.example/keys"
    with pytest.raises(entra.KeysUnavailable, match="must be https"):
        entra.jwks_uri_of(b'{"jwks_uri": "http://login.example/keys"}')
    with pytest.raises(entra.KeysUnavailable, match="has no jwks_uri"):
        entra.jwks_uri_of(b'{"issuer": "x"}')


@pytest.mark.parametrize("url, problem", [
    ("https://login.microsoftonline.com/x", None),
    ("http://127.0.0.1:9/x", None),
    ("http://[::1]:9/x", None),
    ("http://localhost/x", None),
    ("http://login.microsoftonline.com/x", "must be https://"),
    ("http://127.0.0.1.example/x", "must be https://"),
    ("file:///etc/passwd", "is not an https:// URL"),
    ("https://host:99999/x", "is not a URL"),
    ("login.microsoftonline.com", "is not an https:// URL"),
])
def test_keys_come_over_https_or_from_loopback(url, problem):
    found = entra.key_url_problem(url)
    assert (found is None) if problem is None else (problem in found)


def test_the_key_set_is_fetched_when_needed_and_never_twice_a_minute():
    keys = entra.KeySet()
    assert keys.wants_fetch("k1", 0) and keys.wait(0) == 0
    keys.attempt(0)
    keys.update({"k1": object()}, 0)
    assert not keys.wants_fetch("k1", 10) and keys.wants_fetch("k2", 10)
    assert keys.wait(10) == entra.KEYS_MIN_INTERVAL - 10 and keys.wait(entra.KEYS_MIN_INTERVAL) == 0
    assert keys.wants_fetch("k1", entra.KEYS_MAX_AGE)  # a day old
    keys.attempt(100)  # a failed attempt: the keys stay, and so does the pause
    assert keys.get("k1") is not None and keys.wait(110) == entra.KEYS_MIN_INTERVAL - 10


def test_verify_returns_the_claims_of_a_good_token(authority):
    keys, dummy = entra.parse_jwks(json.dumps(authority.jwks()).encode())
    token = authority.sign(claims())
    policy = entra.Policy(TENANT, [APP])
    kid = entra.key_id(token)
    assert entra.verify(token, keys[kid], policy, NOW)["roles"] == [entra.EVENT_GRID_ROLE]
    assert entra.verify(authority.sign(claims(iss=issuer(TENANT, 2))), keys[kid], policy, NOW)["aud"] == APP
    other_cloud = entra.Policy(TENANT, [APP], issuers=["https://login.microsoftonline.us/%s/v2.0" % TENANT])
    with pytest.raises(entra.TokenRefused, match="wrong issuer") as caught:
        entra.verify(token, keys[kid], other_cloud, NOW)
    assert caught.value.status == 401


@pytest.mark.parametrize("token", [None, 42, "a" * (entra.MAX_TOKEN_CHARS + 1), "a.b.c\n", "a.b.c.d", "é.b.c",
                                   "a.b.c\udcff"])
def test_key_id_refuses_what_is_not_shaped_like_a_jwt(token):
    with pytest.raises(entra.TokenRefused, match="malformed token \\(not a JWT\\)"):
        entra.key_id(token)
