"""deploy/bootstrap.py: where secrets go. The extension's script, a settings file and a variables file hand them over;
the bootstrap moves them into the one 0600 secrets file before it starts anything, and no child process (apt-get,
ansible-galaxy, ansible-playbook and its workers) gets one in its environment or on its command line. The operator's
variables reach ansible-playbook marked !unsafe, so Jinja in a hook's content or a rule arrives as written."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
import yaml

import bootstrap
from bootstrap import BootstrapError
from harness import secret_scan
from harness.ansible_env import ansible_env, ansible_program
from harness.arm_template import Deployment

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "unit", "utils"))
import hostile  # noqa: E402  pylint: disable=wrong-import-position

WEBHOOK_SECRET = "wh-5c0f8e2a9b7d41e6"
SMTP_PASSWORD = "smtp-9d3b2c7e1f0a4b58"
WEBHOOK_URL = "https://hooks.example.com/services/T0KEN-7a1e9c3f5b2d"
SECRETS = {"webhook_secret": WEBHOOK_SECRET, "smtp_password": SMTP_PASSWORD, "webhook_url": WEBHOOK_URL}


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """The bootstrap's files under tmp_path, as root, with every child process recorded (argv, environment) instead
    of run; ansible-core and the collection are taken as installed."""
    etc = tmp_path / "etc" / "imds-scheduled-events"
    monkeypatch.setattr(bootstrap, "CONF_DIR", str(etc / "bootstrap"))
    monkeypatch.setattr(bootstrap, "STATE_DIR", str(tmp_path / "var" / "lib" / "imds-scheduled-events" / "bootstrap"))
    monkeypatch.setattr(bootstrap, "SECRETS_FILE", str(etc / "secrets.json"))
    monkeypatch.setattr(bootstrap.os, "geteuid", lambda: 0)
    plan = bootstrap.Plan()
    plan.bin_dir = "/opt/ansible/bin"
    monkeypatch.setattr(bootstrap, "plan_install", lambda settings, variables: plan)
    monkeypatch.setattr(bootstrap, "ansible_version", lambda bin_dir: ((2, 19, 4), "ansible-playbook [core 2.19.4]"))
    monkeypatch.setattr(bootstrap, "install_collection", lambda bin_dir, source: "0.1.0")
    children = []

    def run(argv, env=None, check=True, capture=False, timeout=3600):  # pylint: disable=unused-argument
        children.append({"argv": list(argv), "env": dict(os.environ if env is None else env)})
        return subprocess.CompletedProcess(argv, 0, stdout="active\n" if "is-active" in argv else "")
    monkeypatch.setattr(bootstrap, "run", run)
    return {"root": tmp_path, "etc": etc, "children": children}


def extension_script(tmp_path, name="0", **params):
    """The script deploy/arm/vm.json gives the extension, where the extension puts it (download/<seq>/script.sh)."""
    with open(os.path.join(ROOT, "deploy", "arm", "vm.json")) as handle:
        template = json.load(handle)
    params = dict({"vmName": "vm1", "createVm": False, "bootstrapMethod": "customScript"}, **params)
    extension = Deployment(template, params).resources("Microsoft.Compute/virtualMachines/extensions")[0]
    text = base64.b64decode(extension["properties"]["protectedSettings"]["script"]).decode()
    path = tmp_path / "download" / name / "script.sh"
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text(text)
    path.chmod(0o500)  # as the extension writes it
    return path, text


def role_vars(machine):  # pylint: disable=redefined-outer-name
    with open(str(machine["etc"] / "bootstrap" / "role-vars.yml")) as handle:
        return yaml.safe_load(handle.read().replace("!unsafe ", ""))


def assert_only_in_the_secrets_file(machine, found_by, output):  # pylint: disable=redefined-outer-name
    holding = secret_scan.files_holding(str(machine["root"]), found_by)
    assert list(holding) == [str(machine["etc"] / "secrets.json")], holding
    for child in machine["children"]:
        shown = json.dumps(child)
        assert not [label for needle, label in found_by.items() if needle in shown], child["argv"]
    assert not [label for needle, label in found_by.items() if needle in output + json.dumps(dict(os.environ))]


def test_the_scan_finds_a_secret_inside_base64_whatever_surrounds_it():
    """What the leak checks here and in tests/system/test_first_boot.py rely on."""
    for before in range(6):
        for after in range(6):
            document = "x" * before + WEBHOOK_SECRET + "y" * after
            encoded = base64.b64encode(document.encode()).decode()
            assert [form for form in secret_scan.base64_forms(WEBHOOK_SECRET) if form in encoded], (before, after)
    assert not [form for form in secret_scan.base64_forms(WEBHOOK_SECRET)
                if form in base64.b64encode(SMTP_PASSWORD.encode()).decode()]


def test_the_extension_secrets_go_to_the_secrets_file_and_nowhere_else(machine, capsys):  # pylint: disable=redefined-outer-name
    script, text = extension_script(machine["root"], webhookSecret=WEBHOOK_SECRET, smtpPassword=SMTP_PASSWORD,
                                    webhookUrl=WEBHOOK_URL, watcherVariables={
                                        "watcher_notify_webhook": {"secret_header": "X-Token"},
                                        "watcher_hooks": [{"name": "10-x", "phase": "pre", "content": hostile.TEMPLATE}]})
    found_by = secret_scan.needles(dict(SECRETS, url_token="T0KEN-7a1e9c3f5b2d"), documents=[text])
    assert [label for needle, label in found_by.items() if needle in text], "the script carries them, in base64"
    argv = ["--collection", str(script.parent / "collection.tar.gz"), "--script", str(script)]

    assert bootstrap.main(argv, environ={"HOME": "/root"}) == 0
    out = capsys.readouterr()
    secrets_file = machine["etc"] / "secrets.json"
    assert json.loads(secrets_file.read_text()) == SECRETS
    assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"
    assert_only_in_the_secrets_file(machine, found_by, out.out + out.err)
    assert oct(script.stat().st_mode & 0o777) == "0o500" and bootstrap.SCRIPT_SETTINGS in script.read_text()
    variables = role_vars(machine)
    assert variables["watcher_manage_secrets"] is False
    assert variables["watcher_notify_webhook"] == {"secret_header": "X-Token"}
    assert variables["watcher_hooks"][0]["content"] == hostile.TEMPLATE
    playbook = [c["argv"] for c in machine["children"] if c["argv"][0].endswith("ansible-playbook")]
    assert playbook == [["/opt/ansible/bin/ansible-playbook", "-i", "localhost,",
                         str(machine["etc"] / "bootstrap" / "site.yml"),
                         "-e", "@" + str(machine["etc"] / "bootstrap" / "role-vars.yml")]]
    assert "secrets file %s: updated (smtp_password, webhook_secret, webhook_url)" % secrets_file in out.out

    # The extension runs the same script again only when told to: nothing changes, the secrets stay.
    del machine["children"][:]
    assert bootstrap.main(argv, environ={"HOME": "/root"}) == 0
    assert json.loads(secrets_file.read_text()) == SECRETS
    assert not [c for c in machine["children"] if "try-restart" in c["argv"]]

    # A new deployment rotates: its secrets replace the file's, an empty one removes that secret; the running
    # watcher is restarted to read them (the role did not see them change).
    script, text = extension_script(machine["root"], name="1", webhookSecret="wh-rotated-0d9c8b7a")
    assert bootstrap.main(["--collection", "/x.tar.gz", "--script", str(script)], environ={}) == 0
    assert json.loads(secrets_file.read_text()) == {"webhook_secret": "wh-rotated-0d9c8b7a"}
    assert ["systemctl", "try-restart", "imds-watcher.service"] in [c["argv"] for c in machine["children"]]
    assert bootstrap.SCRIPT_SECRETS not in script.read_text()


def test_secrets_in_a_settings_file_and_a_vars_file_are_moved_there(machine, capsys):  # pylint: disable=redefined-outer-name
    conf = machine["root"] / "conf"
    conf.mkdir()
    existing = machine["etc"] / "secrets.json"
    existing.parent.mkdir(parents=True)
    existing.write_text(json.dumps({"smtp_password": "kept-from-before-3e4f"}))
    settings = conf / "settings.json"
    settings.write_text(json.dumps({"collection": "/x.tar.gz",
                                    "vars": {"watcher_webhook_secret": WEBHOOK_SECRET, "watcher_poll_interval": 2}}))
    vars_file = conf / "vars.yml"
    vars_file.write_text("---\n# the operator's\nwatcher_notify_webhook:\n  url: %s\n  secret_header: X-Token\n"
                         "watcher_hooks:\n  - {name: 10-x, phase: pre, content: !unsafe \"%s\"}\n"
                         % (WEBHOOK_URL, hostile.TEMPLATE))
    vars_file.chmod(0o600)
    found_by = secret_scan.needles({"webhook_secret": WEBHOOK_SECRET, "webhook_url": WEBHOOK_URL})

    assert bootstrap.main(["--settings", str(settings), "--vars", str(vars_file)], environ={}) == 0
    out = capsys.readouterr()
    assert json.loads(existing.read_text()) == {"smtp_password": "kept-from-before-3e4f", "webhook_secret": WEBHOOK_SECRET,
                                                "webhook_url": WEBHOOK_URL}
    assert_only_in_the_secrets_file(machine, found_by, out.out + out.err)
    assert json.loads(settings.read_text())["vars"] == {"watcher_poll_interval": 2}
    assert yaml.safe_load(vars_file.read_text())["watcher_notify_webhook"] == {"url": None, "secret_header": "X-Token"}
    assert oct(vars_file.stat().st_mode & 0o777) == "0o600"
    variables = role_vars(machine)
    assert variables["watcher_notify_webhook"] == {"url": None, "secret_header": "X-Token"}
    assert variables["watcher_poll_interval"] == 2 and variables["watcher_manage_secrets"] is False
    assert "watcher_webhook_secret" not in variables
    assert "moved the secrets of %s to %s" % (vars_file, existing) in out.out


def test_a_refused_run_still_takes_the_secrets_out_of_the_script(machine):  # pylint: disable=redefined-outer-name
    script, dummy = extension_script(machine["root"], webhookSecret=WEBHOOK_SECRET,
                                     watcherVariables={"watcher_notify_webhook": {"url": "not a URL"}})
    assert bootstrap.main(["--script", str(script)], environ={}) == 1
    assert WEBHOOK_SECRET not in script.read_text() and bootstrap.SCRIPT_SECRETS not in script.read_text()
    assert not (machine["etc"] / "secrets.json").exists() and machine["children"] == []


def test_secrets_are_refused_with_where_they_went_wrong_never_with_their_value(tmp_path):
    secrets = bootstrap.Secrets()
    with pytest.raises(BootstrapError) as caught:
        secrets.take_line({"webhook_secret": "s3cret", "smtp_passwd": "hunter2"}, "the secrets of script.sh")
    assert str(caught.value) == ("the secrets of script.sh: unknown key(s) smtp_passwd; known: webhook_secret, "
                                 "smtp_password, webhook_url")
    with pytest.raises(BootstrapError, match="webhook_url in the secrets of x must be an http") as caught:
        bootstrap.Secrets().take_line({"webhook_url": "hooks.example.com/T0KEN"}, "the secrets of x")
    assert "T0KEN" not in str(caught.value)
    broken = tmp_path / "vars.yml"
    broken.write_text("watcher_webhook_secret: \"s3cret\n  unterminated: [\n")
    with pytest.raises(BootstrapError) as caught:
        bootstrap.read_vars_file(str(broken))
    assert "is not YAML" in str(caught.value) and "line" in str(caught.value) and "s3cret" not in str(caught.value)


def test_a_secret_in_a_file_that_cannot_be_rewritten_is_refused_before_anything_changes(tmp_path, monkeypatch):
    conf = tmp_path / "readonly"
    conf.mkdir()
    vars_file = conf / "vars.yml"
    vars_file.write_text("watcher_webhook_secret: %s\n" % WEBHOOK_SECRET)
    writable = os.access
    monkeypatch.setattr(bootstrap.os, "access", lambda path, mode: path != str(conf) and writable(path, mode))
    settings = bootstrap.load_settings(bootstrap.parse_args(["--vars", str(vars_file)]), bootstrap.Secrets())
    with pytest.raises(BootstrapError) as caught:
        bootstrap.collect_variables(settings, bootstrap.Secrets())
    assert str(caught.value).startswith("%s holds secrets, which the bootstrap moves to %s, but it cannot rewrite"
                                        % (vars_file, bootstrap.SECRETS_FILE))
    assert WEBHOOK_SECRET not in str(caught.value)


def test_without_the_extension_secrets_are_added_and_with_it_replaced():
    secrets = bootstrap.Secrets()
    secrets.take({"watcher_smtp_password": "new", "watcher_webhook_secret": ""}, "vars.yml")
    expected = {"webhook_secret": "old", "smtp_password": "new"}
    assert secrets.merged({"webhook_secret": "old", "smtp_password": "old"}) == expected
    secrets.take_line({"webhook_secret": "", "smtp_password": "", "webhook_url": "https://h.example/x"}, "script")
    assert secrets.merged({"webhook_secret": "old"}) == {"webhook_url": "https://h.example/x"}


# --- the operator's variables are data ------------------------------------------------------------------------------


LOOKALIKES = ["", "123", "-7", "1.5", "1e3", ".inf", "0x1f", "1_000", "190:20:30", "true", "no", "On", "~", "null",
              "2024-01-01", "2001-12-14t21:59:43.10-05:00", "*", "&", "!", "=", "<<"]


def test_the_role_variables_read_back_as_written_and_no_string_is_a_template():
    """Ansible's own loader (the one ansible-playbook uses for -e @file) gives back every value: strings that look
    like numbers, booleans or null stay strings, and each string that could be a template is untrusted."""
    from ansible.parsing.yaml.loader import AnsibleLoader
    values = [case.value for case in hostile.strings("/nonexistent/canary") if case.name != "lone-surrogate"] + \
        LOOKALIKES + [None, True, False, 0, -7, 10 ** 30, 0.5, 1e20, -2.5e-7, [], {}, {"nested": [{"k": hostile.TEMPLATE}]}]
    text = bootstrap.role_vars_text({"probe": values, "watcher_hooks": [{"content": hostile.TEMPLATE}]})
    assert text.isascii()
    loaded = AnsibleLoader(text).get_single_data()
    assert loaded["probe"] == values and loaded["watcher_hooks"] == [{"content": hostile.TEMPLATE}]
    kinds = (bool, int, float, str, list, dict, type(None))  # bool first: it is an int too
    assert [next(k for k in kinds if isinstance(v, k)) for v in loaded["probe"]] == \
        [next(k for k in kinds if isinstance(v, k)) for v in values]
    templates = [v for v in loaded["probe"] if isinstance(v, str) and ("{" in v or "#" in v)]
    templates.append(loaded["probe"][-1]["nested"][0]["k"])
    assert len(templates) > 8
    try:
        from ansible.template import is_trusted_as_template  # ansible-core 2.19 and later
    except ImportError:
        from ansible.utils.unsafe_proxy import AnsibleUnsafe
        assert all(isinstance(v, AnsibleUnsafe) for v in templates)
    else:
        assert not any(is_trusted_as_template(v) for v in templates)


def test_text_that_is_not_unicode_and_numbers_that_are_not_are_refused_with_the_variable_named():
    with pytest.raises(BootstrapError, match=r"the variable watcher_hooks cannot be passed on: it holds a lone surrogate"):
        bootstrap.role_vars_text({"watcher_hooks": [{"content": "before\udcffafter"}]})
    with pytest.raises(BootstrapError, match=r"the variable watcher_poll_interval cannot be passed on: it holds nan"):
        bootstrap.role_vars_text({"watcher_poll_interval": float("nan")})


def test_jinja_in_the_operators_variables_reaches_the_playbook_as_written(tmp_path):
    """The real ansible-playbook reads the role's variables file: every hostile string arrives unrendered, nothing
    runs (ansible-core treats extra vars as trusted templates unless they are marked unsafe)."""
    canary = str(tmp_path / "canary")
    values = [case.value for case in hostile.strings(canary) if case.name not in ("nul-byte", "lone-surrogate")]
    values += LOOKALIKES
    variables = tmp_path / "role-vars.yml"
    variables.write_text(bootstrap.role_vars_text({"probe": values, "hook": {"content": hostile.TEMPLATE + "{{ x }}"}}))
    playbook = tmp_path / "site.yml"
    playbook.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy: {content: \"{{ probe | to_json }}\", dest: \"%s/probe.json\", mode: \"0600\"}\n"
        "    - ansible.builtin.copy: {content: \"{{ hook.content }}\", dest: \"%s/hook\", mode: \"0600\"}\n"
        % (tmp_path, tmp_path))
    proc = subprocess.run([ansible_program("ansible-playbook"), "-i", "localhost,", str(playbook),
                           "-e", "@%s" % variables, "-e", "ansible_python_interpreter=%s" % sys.executable],
                          env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, check=False)
    output = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, output[-4000:]
    assert json.loads((tmp_path / "probe.json").read_text()) == values
    assert (tmp_path / "hook").read_text() == hostile.TEMPLATE + "{{ x }}"
    hostile.assert_no_trace(canary, output, (tmp_path / "probe.json").read_text())
