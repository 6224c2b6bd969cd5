# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""fleet_publish: write the fleet report on the controller and alert on change.

Runs entirely in the controller's process (no module is sent anywhere), so the
report costs no extra process per run; see plugins/modules/fleet_publish.py for
the documentation. The data, the snapshot and the diff come from
module_utils/fleet.py, delivery from module_utils/notify.py.
"""

from __future__ import annotations

import json
import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.action import ActionBase

from ansible_collections.imds.scheduled_events.plugins.module_utils import fleet, notify
from ansible_collections.imds.scheduled_events.plugins.module_utils.files import write_atomically

STATE_FORMAT = "imds-scheduled-events/fleet-alert-state"
STATE_VERSION = 1

ARGUMENT_SPEC = dict(
    report=dict(type="dict", required=True),
    html_path=dict(type="path"),
    html=dict(type="str"),
    markdown_path=dict(type="path"),
    markdown=dict(type="str"),
    json_path=dict(type="path"),
    mode=dict(type="raw", default="0644"),
    alert_state_file=dict(type="path"),
    first_run=dict(type="str", default="alert", choices=["alert", "baseline"]),
    report_url=dict(type="str"),
    fail_on_delivery_error=dict(type="bool", default=True),
    email=dict(type="dict", options=dict(
        host=dict(type="str", required=True),
        port=dict(type="int"),
        security=dict(type="str", default="none", choices=list(notify.SECURITY)),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        sender=dict(type="str", required=True),
        to=dict(type="list", elements="str", required=True),
        timeout=dict(type="float", default=30),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
    )),
    webhook=dict(type="dict", options=dict(
        url=dict(type="str", required=True),
        secret_header=dict(type="str", default="X-Webhook-Secret", no_log=False),
        secret=dict(type="str", no_log=True),
        headers=dict(type="dict", default={}),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        timeout=dict(type="float", default=30),
        use_proxy=dict(type="bool", default=True),
    )),
)


def _plain(value):
    """Templated data to plain JSON types (and a deep copy)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _mode(value):
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        raise AnsibleActionFail("mode must be an octal string such as '0644', not %r" % (value,))


def write_file(path, data, mode, check_mode):
    """Atomically replace `path` when its content differs; True when it did (or would)."""
    data = to_bytes(data)
    try:
        with open(path, "rb") as handle:
            if handle.read(len(data) + 1) == data and os.stat(path).st_mode & 0o7777 == mode:
                return False
    except FileNotFoundError:
        pass
    if check_mode:
        return True
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    write_atomically(path, data, mode=mode)
    return True


def read_state(path):
    try:
        with open(path, "rb") as handle:
            state = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnsibleActionFail("cannot read the alert state %s: %s. Move it away to start afresh (the next run then "
                                "alerts about everything, or only records it with first_run=baseline)" % (path, exc))
    known = isinstance(state, dict) and state.get("format") == STATE_FORMAT
    if not known or not isinstance(state.get("snapshots"), dict):
        raise AnsibleActionFail("%s is not an alert state file of this collection; refusing to overwrite it" % path)
    return state


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        check_mode = bool(self._task.check_mode)
        report = _plain(args["report"])
        if report.get("format") != fleet.FORMAT:
            raise AnsibleActionFail("report is not a fleet report (build it with imds.scheduled_events.fleet_report_data)")
        mode = _mode(args["mode"])

        files = {}
        changed = False
        outputs = (("html", args["html_path"], args["html"]), ("markdown", args["markdown_path"], args["markdown"]),
                   ("json", args["json_path"], None))
        for kind, path, content in outputs:
            if not path:
                continue
            if kind == "json":
                content = json.dumps(report, indent=2, sort_keys=True) + "\n"
            elif content is None:
                raise AnsibleActionFail("%s_path is set but %s (the rendered content) is not" % (kind, kind))
            try:
                changed = write_file(path, content, mode, check_mode) or changed
            except OSError as exc:
                raise AnsibleActionFail("cannot write the %s report %s: %s" % (kind, path, exc.strerror or exc))
            files[kind] = path
        result["files"] = files

        if args["alert_state_file"]:
            alert, state_changed = self._alert(args, report, check_mode)
            result.update(alert)
            changed = changed or state_changed
        result["changed"] = changed
        if result.get("delivery_errors") and args["fail_on_delivery_error"]:
            result["failed"] = True
            result["msg"] = "alert delivery failed: %s" % "; ".join(result["delivery_errors"])
        return result

    def _alert(self, args, report, check_mode):
        path = args["alert_state_file"]
        state = read_state(path)
        first = state is None
        state = state or {"format": STATE_FORMAT, "version": STATE_VERSION, "snapshots": {}}
        snapshots = dict(state["snapshots"])
        current = fleet.snapshot(report)
        changes, kept = fleet.compare(snapshots.get("run"), current)
        snapshots["run"] = _without_time(kept)
        title = report.get("title") or "Fleet maintenance report"

        channels = [c for c in ("email", "webhook") if args[c]]
        deliveries = {}
        errors = []
        for channel in channels:
            previous = snapshots.get(channel)
            if previous is None and args["first_run"] == "baseline":
                snapshots[channel] = _without_time(current)
                deliveries[channel] = "baseline recorded"
                continue
            pending, kept = fleet.compare(previous, current)
            if not fleet.has_changes(pending):
                snapshots[channel] = _without_time(kept)
                deliveries[channel] = "nothing new"
                continue
            if check_mode:
                deliveries[channel] = "would send"
                continue
            try:
                if channel == "email":
                    accepted = notify.send_email(args["email"], fleet.subject(pending, title),
                                                 fleet.render_text(pending, report, args["report_url"]))
                    deliveries[channel] = "sent to %s" % ", ".join(accepted)
                else:
                    status = notify.post_webhook(args["webhook"], fleet.webhook_payload(pending, report,
                                                                                        args["report_url"]))
                    deliveries[channel] = "sent (HTTP %s)" % status
                snapshots[channel] = _without_time(kept)
            except notify.DeliveryError as exc:
                deliveries[channel] = "failed"
                errors.append("%s: %s" % (channel, exc))

        new_state = dict(state, snapshots=snapshots)
        state_changed = first or new_state["snapshots"] != state["snapshots"]
        if state_changed and not check_mode:
            new_state["updated"] = report["generated"]
            try:
                write_file(path, json.dumps(new_state, indent=2, sort_keys=True) + "\n", 0o600, False)
            except OSError as exc:
                raise AnsibleActionFail("cannot write the alert state %s: %s" % (path, exc.strerror or exc))
        out = {"changes": changes, "change_counts": fleet.change_counts(changes),
               "has_changes": fleet.has_changes(changes), "alerts": deliveries, "alert_state_file": path,
               "first_run": first}
        if errors:
            out["delivery_errors"] = errors
        return out, state_changed


def _without_time(snap):
    snap = dict(snap)
    snap.pop("generated", None)
    return snap
