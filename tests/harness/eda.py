"""What the rulebook system tests and the EDA benchmark share: localhost as a host, tasks files that record each run
of the play that includes them, an inventory file, and a pager (the on-call system's webhook) on loopback."""

import http.server
import json
import threading
import time

# Playbooks run on localhost with the engine's own Python (interpreter discovery may pick a pyenv shim).
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}

# Each run appends one JSON line: when (epoch seconds, `date +%s.%N`), on which host, and for which event. The
# shipped playbooks that include a site's tasks give them the event as data in `eda` (imds.scheduled_events.eda_event):
# never ansible_eda, which ansible-core renders. Nothing of the event reaches a shell. One file per host: hosts run
# the tasks side by side, and lineinfile's read-and-replace of one shared file would lose a line.
RECORD_TASKS = """\
---
- name: Record that this ran, and for which event
  ansible.builtin.lineinfile:
    path: "{directory}/{{{{ inventory_hostname }}}}.jsonl"
    create: true
    mode: "0600"
    line: "{{{{ {{'time': lookup('ansible.builtin.pipe', 'date +%s.%N') | float, 'host': inventory_hostname,
             'change': eda.event.change, 'outcome': eda.event.outcome, 'event_id': eda.event.event_id}} | to_json }}}}"
"""


def records(directory):
    """The runs a record tasks file wrote (in `directory`), oldest first."""
    files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
    runs = [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted(runs, key=lambda run: run["time"])


def record_tasks(directory, name):
    """A tasks file that records its runs in the directory <name>/ (one file per host); returns (tasks file, that
    directory) for records()."""
    out = directory / name
    out.mkdir(mode=0o700)
    tasks = directory / ("%s.yml" % name)
    tasks.write_text(RECORD_TASKS.format(directory=out), encoding="utf-8")
    return tasks, out


def write_inventory(path, groups):
    """An inventory file of {group: {host: vars}}."""
    path.write_text(json.dumps({name: {"hosts": hosts} for name, hosts in groups.items()}), encoding="utf-8")
    return path


class Pager(object):
    """The on-call system's webhook: records each page posted to it, with the time it arrived."""

    def __init__(self):
        pages = self.pages = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802  pylint: disable=invalid-name
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                pages.append({"time": arrived, "page": json.loads(body)})
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/page" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
