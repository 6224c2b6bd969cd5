# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The hostile-input table (tests/unit/utils/hostile.py) in every setting of the watcher's config and secrets.

Why: a setting is refused with an error naming it, or kept verbatim as data; never one that would break or forge a
line where it goes (an HTTP or mail header, an SMTP command, a URL), name a path where a name is expected, or be
parsed as anything but what it is (an approval rule's `when` is the operator's JMESPath: it must compile)."""

from __future__ import annotations

import copy
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import config as c
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile

CANARY = "/tmp/imds-config-canary-%d" % os.getpid()
VALUES = hostile.strings(CANARY) + hostile.wrong_types()
BASE = {
    "vm_name": "myvm",
    "event_types": ["Reboot"],
    "hold": {"systemd_units": ["ansible-pull.timer"], "commands": [
        {"name": "recorder", "hold": ["/usr/local/bin/hold", "on"], "release": ["/usr/local/bin/hold", "off"]}]},
    "approval": {"rules": [{"name": "reboots", "when": "EventType=='Reboot'"}]},
    "notify": {"webhook": {"url": "https://hooks.example.invalid/x", "headers": {"X-Team": "ops"},
                           "secret_header": "X-Secret"},
               "email": {"host": "smtp.example.invalid", "username": "watcher", "from": "w@example.invalid",
                         "to": ["ops@example.invalid"]}},
}
SECRETS = {"webhook_secret": "s3cret", "smtp_password": "hunter2"}
# Every string setting, as (path, where it goes).
SETTINGS = [
    ("endpoint", "url"), ("api_version", "choice"), ("vm_name", "line"), ("event_types.0", "data"),
    ("peer_events", "choice"), ("state_dir", "path"), ("hooks_dir", "path"), ("hold.systemd_units.0", "unit"),
    ("hold.commands.0.name", "name"), ("hold.commands.0.hold.0", "argv"), ("hold.commands.0.hold.1", "argv"),
    ("hold.state_file", "path"), ("approval.rules.0.name", "data"), ("approval.rules.0.when", "jmespath"),
    ("notify.webhook.url", "url"), ("notify.webhook.headers.X-Team", "line"), ("notify.webhook.headers", "header"),
    ("notify.webhook.secret_header", "header"), ("notify.webhook.ca_file", "path"), ("notify.email.host", "line"),
    ("notify.email.username", "line"), ("notify.email.from", "line"), ("notify.email.to.0", "line"),
    ("metrics_file", "path"), ("journal_file", "path"), ("log_level", "choice"),
    ("secrets.webhook_secret", "line"), ("secrets.smtp_password", "data"),
]
CONTROL = set(chr(i) for i in range(0x20) if i != 9) | {"\x7f"}


def put(data, path, value):
    """Set `path` (dots; digits index lists; notify.webhook.headers alone: the value becomes a header name)."""
    if path == "notify.webhook.headers":
        data["notify"]["webhook"]["headers"] = {value: "x"} if isinstance(value, str) else value
        return
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def get(data, path):
    if path == "notify.webhook.headers":
        return next(iter(data["notify"]["webhook"]["headers"]))
    node = data
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    return node


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
@pytest.mark.parametrize("path, sink", SETTINGS, ids=[p for p, s in SETTINGS])
def test_every_setting_is_refused_naming_it_or_kept_verbatim(path, sink, case):
    data, secrets = copy.deepcopy(BASE), copy.deepcopy(SECRETS)
    if path.startswith("secrets."):
        put(secrets, path[len("secrets."):], case.value)
    else:
        put(data, path, case.value)
    try:
        config = c.parse(data, secrets, path="/etc/imds-watcher/watcher.json")
    except c.ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and "Traceback" not in message, message
        assert any(part in message for part in path.split(".") if not part.isdigit()), message  # names the setting
        hostile.assert_no_trace(CANARY, message)
        if path.startswith("secrets.") and isinstance(case.value, str) and len(case.value.strip()) > 3:
            assert case.value not in message  # a secret is never echoed
        return
    if path.startswith("secrets."):
        kept = config.secret(path[len("secrets."):])
    else:
        kept = get(config.data, path)
    assert kept == case.value or path == "journal_file" and case.value is None  # verbatim (null: the default)
    hostile.assert_no_trace(CANARY, repr(config.summary()))
    if kept is None or kept == "" and path == "metrics_file":  # unset; no metrics file
        return
    if sink in ("line", "url", "header"):  # it goes into a header, an SMTP command or a URL: one line
        assert not CONTROL & set(kept) and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in kept), repr(kept)
    if sink == "header":
        assert ":" not in kept and " " not in kept
    if sink == "name":  # a command's name names a hold target, never a path
        assert "/" not in kept
    if sink == "path":
        assert os.path.isabs(kept)
