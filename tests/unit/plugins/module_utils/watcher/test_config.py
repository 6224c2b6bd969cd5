# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The config and secrets files: strict schema, key paths in errors, trust checks, secrets never shown."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import config as c

UID = os.getuid()
TRUST = c.Trust(owner_uid=UID)


def write(path, data, mode=0o644):
    with open(str(path), "w") as handle:
        handle.write(data if isinstance(data, str) else json.dumps(data))
    os.chmod(str(path), mode)
    return str(path)


@pytest.fixture
def etc(tmp_path):
    path = tmp_path / "etc"
    path.mkdir()
    os.chmod(str(path), 0o755)
    return path


def test_defaults():
    config = c.parse({})
    assert config["poll_interval"] == 1.0 and config["max_backoff"] == 5.0 and config["keepalive_interval"] == 3600
    assert config["confirm_polls"] == 3 and config["peer_events"] == "ignore" and config["event_types"] == []
    assert config["journal_file"] == "/var/lib/imds-scheduled-events/journal.jsonl"
    assert config["metrics_file"] == c.DEFAULT_METRICS_FILE
    assert config["hold"]["state_file"] == "/var/lib/imds-scheduled-events/holds.json"
    assert config["notify"] == {"webhook": None, "email": None, "syslog": True}
    assert config.policy.rules == [] and config.hold_targets == []
    assert config.state_file == "/var/lib/imds-scheduled-events/watcher-state.json"


def test_a_full_config():
    config = c.parse({
        "endpoint": "http://127.0.0.1:8169", "vm_name": "myvm", "event_types": ["Reboot", "Freeze"],
        "peer_events": "hold", "metrics_file": "",
        "hold": {"systemd_units": ["ansible-pull.timer", "chef-client"], "systemd_mask": True, "puppet": True,
                 "guard": True, "commands": [{"name": "lb", "hold": ["/usr/local/bin/lb", "drain"],
                                              "release": ["/usr/local/bin/lb", "undrain"]}]},
        "approval": {"rules": [{"name": "freeze", "when": "EventType=='Freeze'"}]},
        "notify": {"webhook": {"url": "https://hooks.example.net/x", "secret_header": "X-Token"},
                   "email": {"host": "smtp.example.net", "port": 587, "username": "u", "from": "w@example.net",
                             "to": ["ops@example.net"]}},
    }, secrets={"webhook_secret": "s3cret", "smtp_password": "pw"})
    assert [t.key for t in config.hold_targets] == ["systemd:ansible-pull.timer", "systemd:chef-client.service",
                                                    "puppet", "guard", "command:lb"]
    assert config.policy.rules[0].name == "freeze"
    assert config.secret("webhook_secret") == "s3cret"
    text = repr(config) + repr(config.secrets) + json.dumps(config.summary())
    assert "s3cret" not in text and "pw\"" not in text
    assert config.summary()["secrets"] == ["smtp_password", "webhook_secret"]


@pytest.mark.parametrize("data, message", [
    ({"poll_intervall": 1}, "poll_intervall: unknown key"),
    ({"poll_interval": "1"}, "poll_interval: expected a number, got a string"),
    ({"poll_interval": True}, "poll_interval: expected a number, got a boolean"),
    ({"poll_interval": 0.01}, "poll_interval: must be at least 0.2"),
    ({"confirm_polls": 2.5}, "confirm_polls: expected an integer"),
    ({"peer_events": "sometimes"}, "peer_events: 'sometimes' is not one of ignore, hold"),
    ({"api_version": "2099-01-01"}, "api_version"),
    ({"state_dir": "relative/dir"}, "state_dir: 'relative/dir' is not an absolute path"),
    ({"event_types": "Reboot"}, "event_types: expected a list"),
    ({"hold": {"systemd_units": ["ansible-pull.timer", 3]}}, r"hold.systemd_units\[1\]: expected a string"),
    ({"hold": {"systemd_units": ["evil;rm"]}}, r"hold.systemd_units\[0\]: .* is not the name of a systemd"),
    ({"hold": {"commands": [{"name": "lb", "hold": ["x"], "release": "lb undrain"}]}},
     r"hold.commands\[0\].release: expected a list"),
    ({"hold": {"commands": [{"name": "lb", "hold": ["x"]}]}}, r"hold.commands\[0\].release: is required"),
    ({"hold": {"commands": [{"name": "lb", "hold": ["x"], "release": ["y"], "shell": True}]}},
     r"hold.commands\[0\].shell: unknown key"),
    ({"hold": {"commands": [{"name": "a", "hold": ["x"], "release": ["y"]},
                            {"name": "a", "hold": ["x"], "release": ["y"]}]}}, r"hold.commands\[1\].name: 'a' is used twice"),
    ({"approval": {"rules": [{"name": "x", "when": "EventTyp=='Freeze'"}]}}, "approval.rules: rule x: EventTyp"),
    ({"approval": {"rules": [{"when": "`true`"}]}}, r"approval.rules\[0\].name: is required"),
    ({"notify": {"webhook": {"url": "ftp://x"}}}, "notify.webhook.url: expected an http"),
    ({"notify": {"webhook": {"url": "https://x", "secret_header": "X-T"}}}, "the secrets file has no webhook_secret"),
    ({"notify": {"webhook": {"url": "https://bot:pa55@hooks.example.com/x"}}},
     r"notify.webhook.url: the webhook URL https://hooks.example.com/\.\.\. carries user:password@"),
    ({"notify": {"webhook": {"url": "https://hooks.example.com:99999/x"}}}, "notify.webhook.url: .* cannot be parsed"),
    ({"notify": {"webhook": {"headers": {"X-Team": "ops"}}}},
     "notify.webhook: no URL; put it in the secrets file as webhook_url"),
    ({"notify": {"email": {"host": "h", "from": "f", "to": []}}}, "notify.email.to: must not be empty"),
    ({"notify": {"email": {"host": "h", "from": "f", "to": ["t"], "username": "u", "starttls": False}}},
     "without starttls"),
    ({"endpoint": "http://127.0.0.1:8169/metadata"}, "endpoint: .*must not carry a path"),
    ({"poll_interval": 10, "max_backoff": 5}, "max_backoff: must be at least poll_interval"),
    ([], r"\(top level\): expected an object"),
])
def test_errors_name_the_key_path(data, message):
    with pytest.raises(c.ConfigError, match=message):
        c.parse(data, path="/etc/w.json")


TOKEN_URL = "https://hooks.example.net/services/T0KEN-PATH-9f8e7d?sig=QUERY-T0KEN-1a2b"


def test_the_webhook_url_lives_in_the_secrets_file_and_is_never_shown():
    config = c.parse({"notify": {"webhook": {"secret_header": "X-T"}}},
                     secrets={"webhook_url": TOKEN_URL, "webhook_secret": "s3cret"})
    assert config.webhook_url() == TOKEN_URL and config.warnings == []
    summary = config.summary()
    assert summary["notify"]["webhook"]["url"] == "https://hooks.example.net/..."
    assert summary["secrets"] == ["webhook_secret", "webhook_url"]
    shown = repr(config) + repr(config.secrets) + json.dumps(summary)
    assert "T0KEN" not in shown and "services" not in shown


def test_a_url_still_in_the_config_works_with_a_warning_that_says_how_to_move_it():
    config = c.parse({"notify": {"webhook": {"url": TOKEN_URL}}}, path="/etc/w.json", secrets_path="/etc/s.json")
    assert config.webhook_url() == TOKEN_URL
    assert config.warnings == [
        "/etc/w.json: notify.webhook.url: the config file may be read by every user of this machine, and a chat "
        "webhook's URL is its credential: move the URL to /etc/s.json (0600) as webhook_url and remove it here (the "
        "watcher role does this when applied again)"]
    assert config.summary()["warnings"] == config.warnings
    assert "T0KEN" not in json.dumps(config.summary())


@pytest.mark.parametrize("webhook, secrets, message", [
    ({"url": TOKEN_URL}, {"webhook_url": TOKEN_URL}, "the secrets file has a webhook_url too; keep the URL only there"),
    ({}, {"webhook_url": "ftp://hooks.example.net/x"}, "webhook_url: expected an http:// or https:// URL"),
    ({}, {"webhook_url": "https://bot:T0KEN@hooks.example.net/x"},
     r"the secrets file's webhook_url: the webhook URL https://hooks.example.net/\.\.\. carries user:password@"),
])
def test_a_bad_or_doubled_webhook_url_is_refused_without_showing_it(webhook, secrets, message):
    with pytest.raises(c.ConfigError, match=message) as caught:
        c.parse({"notify": {"webhook": webhook}}, secrets=secrets)
    assert "T0KEN" not in str(caught.value)


def test_load_from_files(etc):
    path = write(etc / "watcher.json", {"vm_name": "myvm"})
    secrets = write(etc / "secrets.json", {"webhook_secret": "s3cret"}, 0o600)
    config = c.load(path, secrets, trust=TRUST)
    assert config["vm_name"] == "myvm" and config.secret("webhook_secret") == "s3cret"
    assert c.load(path, str(etc / "missing.json"), trust=TRUST).secrets == {}


def test_untrusted_files_are_refused(etc):
    path = write(etc / "watcher.json", {}, 0o664)
    with pytest.raises(c.ConfigError, match="may be written by group or others"):
        c.load(path, None, trust=TRUST)
    os.chmod(path, 0o644)
    with pytest.raises(c.ConfigError, match="is owned by uid %d, not uid 4242" % UID):
        c.load(path, None, trust=c.Trust(owner_uid=4242))
    secrets = write(etc / "secrets.json", {"smtp_password": "pw"}, 0o640)
    with pytest.raises(c.ConfigError, match="may be read by group or others"):
        c.load(path, secrets, trust=TRUST)
    os.chmod(str(etc), 0o777)
    try:
        with pytest.raises(c.ConfigError, match="the directory of the config file"):
            c.load(path, None, trust=TRUST)
    finally:
        os.chmod(str(etc), 0o755)
    os.symlink(path, str(etc / "link.json"))
    with pytest.raises(c.ConfigError, match="symlink"):
        c.load(str(etc / "link.json"), None, trust=TRUST)
    with pytest.raises(c.ConfigError, match="does not exist"):
        c.load(str(etc / "nope.json"), None, trust=TRUST)


def test_bad_json_and_bad_secrets_never_show_the_secret(etc):
    path = write(etc / "watcher.json", "{not json")
    with pytest.raises(c.ConfigError, match="is not valid JSON"):
        c.load(path, None, trust=TRUST)
    path = write(etc / "watcher.json", {})
    secrets = write(etc / "secrets.json", '{"smtp_password": "hunter2"', 0o600)
    with pytest.raises(c.ConfigError) as info:
        c.load(path, secrets, trust=TRUST)
    assert "hunter2" not in str(info.value)
    secrets = write(etc / "secrets.json", {"smtp_pasword": "hunter2"}, 0o600)
    with pytest.raises(c.ConfigError, match="smtp_pasword: unknown key") as info:
        c.load(path, secrets, trust=TRUST)
    assert "hunter2" not in str(info.value)


def test_secret_wrapper():
    secret = c.Secret("hunter2")
    assert "hunter2" not in repr(secret) + str(secret) + "%s %r" % (secret, secret)
    assert secret.reveal() == "hunter2" and secret == c.Secret("hunter2") and hash(secret) == hash(c.Secret("hunter2"))
