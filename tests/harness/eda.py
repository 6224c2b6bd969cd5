"""What the rulebook system tests and the EDA benchmark share: localhost as a host, tasks files that record each run
of the play that includes them, an inventory file, and a pager (the on-call system's webhook) on loopback."""

import http.server
import json
import threading
import time

# Playbooks run on localhost with the engine's own Python (interpreter discovery may pick a pyenv shim).
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}

# Each run appends one JSON line: when (epoch seconds, `date +%s.%N`), on which host, and for which event.
# Nothing of the event reaches a shell.
RECORD_TASKS = """\
---
- name: Record that this ran, and for which event
  ansible.builtin.lineinfile:
    path: {path}
    create: true
    mode: "0600"
    line: "{{{{ {{'time': lookup('ansible.builtin.pipe', 'date +%s.%N') | float, 'host': inventory_hostname,
             'change': ansible_eda.event.change, 'outcome': ansible_eda.event.outcome,
             'event_id': ansible_eda.event.event_id}} | to_json }}}}"
"""


def records(path):
    """The runs a record tasks file wrote, oldest first."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def record_tasks(directory, name):
    """A tasks file that records its runs in <name>.jsonl; returns (tasks file, records file)."""
    out = directory / ("%s.jsonl" % name)
    tasks = directory / ("%s.yml" % name)
    tasks.write_text(RECORD_TASKS.format(path=out), encoding="utf-8")
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
