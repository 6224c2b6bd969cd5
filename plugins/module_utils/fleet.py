# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet report's data: one document built from every host's watcher_info and
event_info results, the snapshot that alerting keeps between runs, and what changed.

Events are read back through the domain model (events.Event, events.ThisVm), so
"affects this VM", NotBefore and unknown statuses mean what they mean everywhere
else. The HTML, JSON and Markdown reports all render this one document, so they
show the same data. Nothing here imports ansible: a filter and an action plugin
wrap it, and the tests call it directly.
"""

from __future__ import annotations

import datetime
import re

from .events import (CONTROL_PLANE_STATUSES, FINISHED_STATUSES, DocumentError, Event, ThisVm, format_iso,
                     normalize_resource_name, parse_not_before, utcnow)

FORMAT = "imds-scheduled-events/fleet-report"
VERSION = 1
SNAPSHOT_FORMAT = "imds-scheduled-events/fleet-alert-state"

OK = "ok"
UNREACHABLE = "unreachable"
FAILED = "failed"
NO_DATA = "no data"

APPROVAL_STATES = ("approved", "approve", "approval")
WHO_KEYS = ("by", "approved_by", "actor", "holder", "who")

# Where an event was seen: a host's IMDS (over SSH), or Azure's control plane (Resource Graph).
IMDS_SOURCE = "imds"
RESOURCE_GRAPH_SOURCE = "resource_graph"

CHANGE_KEYS = ("new_events", "gone_events", "started_events", "finished_events", "new_holds", "released_holds",
               "newly_unreachable", "reachable_again")
CHANGE_TITLES = {
    "new_events": "New events",
    "gone_events": "Events gone (over or cancelled)",
    "started_events": "Events started",
    "finished_events": "Events finished (Completed or Canceled, from Azure's control plane)",
    "new_holds": "New holds",
    "released_holds": "Holds released",
    "newly_unreachable": "Hosts newly unreachable",
    "reachable_again": "Hosts reachable again",
}


def _as_utc(now):
    if now is None:
        return utcnow()
    if isinstance(now, str):
        parsed, problem = parse_not_before(now)
        if parsed is None:
            raise ValueError("now %r is not a date: %s" % (now, problem))
        return parsed
    if now.tzinfo is None:
        return now.replace(tzinfo=datetime.timezone.utc)
    return now.astimezone(datetime.timezone.utc)


def _seconds_until(moment, now):
    if moment is None:
        return None
    return max(0, int((moment - now).total_seconds()))


def _text(value):
    return None if value is None else str(value)


# Characters that no UTF-8 file, mail or JSON consumer can carry (lone surrogates, as json.loads lets through) or that
# HTML and SMTP refuse (NUL): each becomes U+FFFD, once, in the report document; everything else is kept as it came.
_UNWRITABLE = re.compile("[\x00\ud800-\udfff]")
# What would break a one-line display or steer a terminal: line breaks, other C0/C1 controls (ANSI escapes), DEL,
# and the bidirectional overrides that reorder what a reader sees. Shown as \xNN / \uNNNN escapes.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Chat markup (Slack's mrkdwn, Mattermost, Teams, Discord, Rocket.Chat): mentions and links with a label.
_MENTION = re.compile("@(?=\\w)")
WORD_JOINER = "\u2060"


def displayable(value):
    """`value` (a report, or any JSON value) with every string writable as UTF-8 anywhere."""
    if isinstance(value, str):
        return _UNWRITABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return dict((displayable(k), displayable(v)) for k, v in value.items())
    if isinstance(value, list):
        return [displayable(v) for v in value]
    return value


def one_line(value):
    """A value shown inside one line of a plain-text alert: no line break, control or bidi override of its own."""
    text = displayable("" if value is None else str(value))
    return _CONTROLS.sub(lambda m: "\\x%02x" % ord(m.group()) if ord(m.group()) < 0x100
                         else "\\u%04x" % ord(m.group()), text)


def chat_text(text):
    """Plain text made inert for chat webhooks, which render what they receive: &, < and > as Slack's entities (no
    <!here>, <@U...>, <url|label> or HTML), a word joiner after @ (no @channel, @here or @user mention) and between
    ] and ( (no [label](url) link). Every character of the value stays, and shows, as it was."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub("@" + WORD_JOINER, text).replace("](", "]" + WORD_JOINER + "(")


def _host_status(watcher, events):
    """(status, message) of one host from its registered results."""
    for result in (watcher, events):
        if isinstance(result, dict) and result.get("unreachable"):
            return UNREACHABLE, _text(result.get("msg")) or "unreachable"
    for result in (watcher, events):
        if isinstance(result, dict) and result.get("failed"):
            return FAILED, _text(result.get("msg")) or "the module failed"
    if not isinstance(watcher, dict) and not isinstance(events, dict):
        return NO_DATA, "no result (the host did not run the gathering task)"
    for result in (watcher, events):
        if isinstance(result, dict) and result.get("skipped"):
            return NO_DATA, "the gathering task was skipped"
    return OK, None


class _EventRow(object):
    def __init__(self, event):
        self.event = event
        self.seen_by = []
        self.hosts = []
        self.sources = []
        self.owner = None

    def saw(self, source):
        if source not in self.sources:
            self.sources.append(source)


def build_report(hosts, now=None, title="Fleet maintenance report", control_plane=None):
    """The report document.

    `hosts`: an ordered mapping of inventory host name to a dict with
      - "watcher": the host's watcher_info result (or None);
      - "events": its event_info result (or None: then watcher["event_info"] is used);
      - "group": an optional group name shown in the report (availability set, ...).
    A result may also be a registered unreachable or failed result.
    `control_plane`: a control_plane_event_info result (Resource Graph), merged by EventId with what the hosts'
    IMDS said; each event says which source saw it. Only the control plane knows Completed and Canceled.
    """
    now = _as_utc(now)
    rows = []
    events = {}
    event_order = []
    holds = []
    approvals = []
    unreadable = []
    problems = []
    by_resource = {}
    for name, data in hosts.items():
        data = data or {}
        watcher = data.get("watcher")
        info = data.get("events")
        status, message = _host_status(watcher, info)  # registered results only: a nested IMDS failure is no host failure
        if info is None and isinstance(watcher, dict):
            info = watcher.get("event_info")
        row = {"host": name, "status": status, "error": message, "group": _text(data.get("group")),
               "vm_name": None, "events_error": None, "pending": False, "in_progress": False,
               "next_not_before": None, "seconds_until_next": None, "event_ids": [], "held": None,
               "hold_reasons": [], "held_targets": [], "watcher_service": "unknown", "journal_unparseable": 0,
               "problems": []}
        rows.append(row)
        if status != OK:
            unreadable.append({"host": name, "status": status, "msg": message})
            continue
        if isinstance(watcher, dict):
            _read_watcher(name, watcher, row, holds, approvals)
        if isinstance(info, dict) and info.get("failed"):
            row["events_error"] = _text(info.get("msg")) or "IMDS could not be read"
        elif isinstance(info, dict):
            _read_events(name, info, row, events, event_order, now)
            if row["vm_name"]:
                by_resource.setdefault(normalize_resource_name(row["vm_name"]), name)
        for line in row["problems"]:
            problems.append("%s: %s" % (name, line))

    if control_plane is not None:
        _read_control_plane(control_plane, events, event_order, problems)
        for name in hosts:  # hosts whose IMDS was not read: their inventory names are taken as the VMs' names
            by_resource.setdefault(normalize_resource_name(name), name)
    host_rows = dict((r["host"], r) for r in rows)
    event_list = []
    for key in event_order:
        item = events[key]
        event = item.event
        affected = list(item.hosts)
        for resource in event.resources:
            mapped = by_resource.get(normalize_resource_name(resource))
            if mapped is not None and mapped not in affected:
                affected.append(mapped)
        outside = [r for r in event.resources if normalize_resource_name(r) not in by_resource]
        not_before = event.not_before
        event_list.append({
            "event_id": event.event_id, "event_type": event.event_type, "status": event.status,
            "not_before": format_iso(not_before),
            "seconds_until_start": 0 if event.is_started else None if event.is_finished else
            _seconds_until(not_before, now),
            "resources": list(event.resources), "hosts": affected, "other_resources": outside,
            "seen_by": item.seen_by, "shared": len(event.resources) > 1, "source": event.source,
            "description": event.description, "duration_seconds": event.duration_seconds,
            "problems": list(event.problems), "sources": item.sources, "owner": item.owner,
            "finished": event.is_finished,
        })
        if event.is_finished:
            continue  # over: it makes no host pending
        for host in affected:
            if event.event_id not in host_rows[host]["event_ids"]:
                host_rows[host]["event_ids"].append(event.event_id)
    event_list.sort(key=lambda e: (2 if e["finished"] else 0 if e["status"] == "Started" else 1,
                                   e["not_before"] is None, e["not_before"] or "", e["event_id"]))
    approvals.sort(key=lambda a: (a["time"] or "", a["host"], a["event_id"] or ""))

    summary = {
        "hosts": len(rows),
        "ok": sum(1 for r in rows if r["status"] == OK),
        "unreachable": sum(1 for r in rows if r["status"] == UNREACHABLE),
        "failed": sum(1 for r in rows if r["status"] == FAILED),
        "no_data": sum(1 for r in rows if r["status"] == NO_DATA),
        "events": len(event_list),
        "events_scheduled": sum(1 for e in event_list if e["status"] != "Started" and not e["finished"]),
        "events_started": sum(1 for e in event_list if e["status"] == "Started"),
        "events_finished": sum(1 for e in event_list if e["finished"]),
        "sources": sorted(set(source for e in event_list for source in e["sources"])),
        "hosts_pending": sum(1 for r in rows if r["pending"]),
        "hosts_in_progress": sum(1 for r in rows if r["in_progress"]),
        "hosts_held": sum(1 for r in rows if r["held"]),
        "holds": len(holds),
        "approvals": len(approvals),
        "watcher_active": sum(1 for r in rows if r["watcher_service"] == "active"),
        "next_not_before": min((e["not_before"] for e in event_list
                                if e["status"] != "Started" and not e["finished"] and e["not_before"]), default=None),
    }
    summary["seconds_until_next"] = _seconds_until(parse_not_before(summary["next_not_before"])[0], now) \
        if summary["next_not_before"] else None
    return displayable({"format": FORMAT, "version": VERSION, "title": title, "generated": format_iso(now),
                        "summary": summary, "hosts": rows, "events": event_list, "holds": holds,
                        "approvals": approvals, "unreachable": unreadable, "problems": problems})


def _read_watcher(name, watcher, row, holds, approvals):
    row["held"] = watcher.get("held")
    service = watcher.get("service") or {}
    row["watcher_service"] = _text(service.get("state")) or "unknown"
    journal = watcher.get("journal") or {}
    row["journal_unparseable"] = int(journal.get("unparseable") or 0)
    row["problems"].extend(_text(p) for p in watcher.get("problems") or [])
    row["problems"].extend("the watcher is degraded (%s) since %s: %s" % (_text(d.get("reason")), _text(d.get("since")),
                                                                          _text(d.get("detail")))
                           for d in watcher.get("degraded") or [] if isinstance(d, dict))
    status = watcher.get("holds") or {}
    phases = dict((_text(t.get("key")), _text(t.get("phase"))) for t in status.get("targets") or []
                  if isinstance(t, dict))
    row["held_targets"] = sorted(k for k in phases if k)
    for reason in status.get("reasons") or []:
        if not isinstance(reason, dict):
            continue
        targets = [_text(t) for t in reason.get("targets") or []]
        item = {"host": name, "reason_id": _text(reason.get("id")), "text": _text(reason.get("text")),
                "holder": _text(reason.get("holder")), "since": _text(reason.get("since")),
                "event_id": _text(reason.get("event_id")), "targets": targets,
                "phases": sorted(set(phases.get(t) or "?" for t in targets))}
        holds.append(item)
        row["hold_reasons"].append(item["reason_id"])
    for entry in journal.get("entries") or []:
        if not isinstance(entry, dict) or str(entry.get("state") or "").casefold() not in APPROVAL_STATES:
            continue
        who = next((entry[k] for k in WHO_KEYS if entry.get(k)), None)
        approvals.append({"host": name, "event_id": _text(entry.get("event_id")),
                          "event_type": _text(entry.get("event_type")), "time": _text(entry.get("time")),
                          "by": _text(who) or "imds-watcher on %s" % name, "detail": _text(entry.get("detail"))})


def _read_events(name, info, row, events, order, now):
    vm_name = info.get("this_vm")
    try:
        vm = ThisVm(vm_name) if vm_name else None
        parsed = [Event.from_json(dict(e)) for e in info.get("events") or [] if isinstance(e, dict)]
    except (DocumentError, ValueError) as exc:
        row["events_error"] = "unreadable event_info result: %s" % exc
        return
    row["vm_name"] = _text(vm_name)
    mine = [e for e in parsed if vm is None or e.affects(vm)]
    scheduled = [e for e in mine if e.is_scheduled]
    row["pending"] = bool(scheduled)
    row["in_progress"] = any(e.is_started for e in mine)
    starts = [e.not_before for e in scheduled if e.not_before is not None]
    if starts:
        row["next_not_before"] = format_iso(min(starts))
        row["seconds_until_next"] = _seconds_until(min(starts), now)
    for event in parsed:
        key = event.event_id.casefold()
        item = events.get(key)
        if item is None:
            item = events[key] = _EventRow(event)
            order.append(key)
        elif event.is_started and not item.event.is_started:
            item.event = event  # one host may have read it just before it started
        item.seen_by.append(name)
        item.saw(IMDS_SOURCE)
        if vm is not None and event.affects(vm) and name not in item.hosts:
            item.hosts.append(name)


def _read_control_plane(result, events, order, problems):
    """Merge a control_plane_event_info result: a status the control plane knows to be later wins."""
    if not isinstance(result, dict) or result.get("failed"):
        message = _text(result.get("msg")) if isinstance(result, dict) else None
        problems.append("control plane: %s" % (message or "no control_plane_event_info result"))
        return
    for raw in result.get("events") or []:
        if not isinstance(raw, dict):
            continue
        try:
            event = Event.from_json(dict(raw), known_statuses=CONTROL_PLANE_STATUSES)
        except DocumentError as exc:
            problems.append("control plane: %s" % exc)
            continue
        key = event.event_id.casefold()
        item = events.get(key)
        if item is None:
            item = events[key] = _EventRow(event)
            order.append(key)
        elif event.is_finished or (event.is_started and not item.event.is_started):
            item.event = event
        item.saw(RESOURCE_GRAPH_SOURCE)
        if isinstance(raw.get("owner"), dict):
            item.owner = dict(raw["owner"])
    for bad in result.get("problems") or []:
        if isinstance(bad, dict):
            problems.append("control plane row %s: %s" % (bad.get("id"), bad.get("problem")))


# --- alerting: what changed since the last run ---------------------------------------


def snapshot(report):
    """What alerting remembers of a report: identities, not times, so an unchanged
    fleet gives an identical snapshot."""
    unreadable = set(u["host"] for u in report["unreachable"])
    return {
        "format": SNAPSHOT_FORMAT, "version": VERSION, "generated": report["generated"],
        "events": dict((e["event_id"].casefold(), {
            "event_id": e["event_id"], "event_type": e["event_type"], "status": e["status"],
            "not_before": e["not_before"], "hosts": sorted(e["hosts"]) or sorted(e["resources"])})
            for e in report["events"]),
        "holds": dict(("%s|%s" % (h["host"], h["reason_id"]), {
            "host": h["host"], "reason_id": h["reason_id"], "text": h["text"], "holder": h["holder"],
            "since": h["since"], "event_id": h["event_id"], "targets": sorted(h["targets"])})
            for h in report["holds"]),
        "unreachable": dict((u["host"], {"status": u["status"], "msg": u["msg"]}) for u in report["unreachable"]),
        "hosts": sorted(r["host"] for r in report["hosts"] if r["host"] not in unreadable),
    }


def compare(previous, current):
    """(changes, snapshot to keep). Without a previous snapshot, everything is new.

    What cannot be seen now is not reported gone: an event whose every host is
    unreadable, or a hold on an unreadable host, is carried over unchanged.
    """
    previous = previous or {"events": {}, "holds": {}, "unreachable": {}}
    kept = dict(current, events=dict(current["events"]), holds=dict(current["holds"]))
    unreadable = set(current["unreachable"])
    changes = dict((k, []) for k in CHANGE_KEYS)
    for key, event in current["events"].items():
        before = previous["events"].get(key)
        if event["status"] in FINISHED_STATUSES:
            if before is None or before.get("status") not in FINISHED_STATUSES:
                changes["finished_events"].append(event)
        elif before is None:
            changes["new_events"].append(event)
        elif event["status"] == "Started" and before.get("status") != "Started":
            changes["started_events"].append(event)
    for key, event in previous["events"].items():
        if key in current["events"]:
            continue
        if event.get("status") in FINISHED_STATUSES:
            continue  # its end was announced already; the row has just aged out of Resource Graph
        hosts = event.get("hosts") or []
        if hosts and all(h in unreadable for h in hosts):
            kept["events"][key] = event
        else:
            changes["gone_events"].append(event)
    for key, item in current["holds"].items():
        if key not in previous["holds"]:
            changes["new_holds"].append(item)
    for key, item in previous["holds"].items():
        if key in current["holds"]:
            continue
        if item.get("host") in unreadable:
            kept["holds"][key] = item
        else:
            changes["released_holds"].append(item)
    for host, item in current["unreachable"].items():
        if host not in previous["unreachable"]:
            changes["newly_unreachable"].append(dict(item, host=host))
    for host, item in previous["unreachable"].items():
        if host not in current["unreachable"] and host in current.get("hosts", ()):
            changes["reachable_again"].append(dict(item, host=host))
    for key in ("new_events", "gone_events", "started_events", "finished_events"):
        changes[key].sort(key=lambda e: (e.get("not_before") or "", e["event_id"]))
    for key in ("new_holds", "released_holds"):
        changes[key].sort(key=lambda h: (h["host"], h["reason_id"] or ""))
    for key in ("newly_unreachable", "reachable_again"):
        changes[key].sort(key=lambda h: h["host"])
    return changes, kept


def has_changes(changes):
    return any(changes.get(k) for k in CHANGE_KEYS)


def change_counts(changes):
    return dict((k, len(changes.get(k) or [])) for k in CHANGE_KEYS)


def _hosts(items, limit=8):
    items = [one_line(i) for i in items]
    text = ", ".join(items[:limit])
    return text + (" and %d more" % (len(items) - limit) if len(items) > limit else "")


def describe_change(key, item):
    """One line per changed item, for email and chat: every value on it through one_line, so that none can add
    a line (a change that did not happen) or steer the reader's terminal."""
    show = dict((k, one_line(v)) for k, v in item.items() if isinstance(v, str))
    if key in ("new_events", "gone_events", "started_events", "finished_events"):
        when = " NotBefore %s" % show["not_before"] if item.get("not_before") and key == "new_events" else ""
        hosts = _hosts(item.get("hosts") or []) or "no inventory host"
        return "%s %s (%s)%s on %s" % (show.get("event_type") or "event", show["event_id"], show.get("status"), when,
                                       hosts)
    if key in ("new_holds", "released_holds"):
        event = ", event %s" % show["event_id"] if item.get("event_id") else ""
        return "%s: %s held by %s since %s: %s [reason %s%s]" % (
            show["host"], _hosts(item.get("targets") or []) or "nothing", show.get("holder") or "unknown",
            show.get("since") or "?", show.get("text") or "", show.get("reason_id"), event)
    return "%s (%s): %s" % (show["host"], show.get("status"), show.get("msg") or "")


def subject(changes, title="Fleet maintenance report"):
    """One line (a mail header: a line break in the title would start a header of its own)."""
    counts = change_counts(changes)
    parts = ["%d %s" % (n, CHANGE_TITLES[k].lower()) for k, n in counts.items() if n]
    return "[%s] %s" % (one_line(title), "; ".join(parts) if parts else "no change")


def render_text(changes, report, link=None):
    """The plain-text alert: what changed, then where things stand."""
    lines = ["%s, %s" % (one_line(report.get("title") or "Fleet maintenance report"), report["generated"]), ""]
    for key in CHANGE_KEYS:
        items = changes.get(key) or []
        if not items:
            continue
        lines.append("%s (%d):" % (CHANGE_TITLES[key], len(items)))
        lines.extend("  - " + describe_change(key, item) for item in items)
        lines.append("")
    summary = report["summary"]
    lines.append("Now: %d hosts, %d unreachable or failed, %d events (%d started), %d hosts held."
                 % (summary["hosts"], summary["unreachable"] + summary["failed"] + summary["no_data"],
                    summary["events"], summary["events_started"], summary["hosts_held"]))
    if summary.get("next_not_before"):
        lines.append("Next NotBefore: %s." % summary["next_not_before"])
    if link:
        lines.append("Report: %s" % one_line(link))
    return "\n".join(lines) + "\n"


def webhook_payload(changes, report, link=None):
    """What the webhook receives: `subject` and `text` are what chat services display, made inert by chat_text;
    every other key carries the values as they are (JSON), for a receiver that escapes them for its own markup."""
    return {
        "source": "imds.scheduled_events.fleet_report",
        "title": report.get("title"),
        "generated": report["generated"],
        "subject": chat_text(subject(changes, report.get("title") or "Fleet maintenance report")),
        "text": chat_text(render_text(changes, report, link)),
        "counts": change_counts(changes),
        "changes": dict((k, changes.get(k) or []) for k in CHANGE_KEYS),
        "summary": report["summary"],
        "report": link,
    }
