#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# This file only documents the action plugin plugins/action/fleet_publish.py, which does the work on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_publish
short_description: Write the fleet report on the controller, and alert by email and webhook when something changed
version_added: 0.1.0
description:
  - Writes the fleet report built by the P(imds.scheduled_events.fleet_report_data#filter) filter as HTML, Markdown and
    JSON files on the controller. The HTML and Markdown are rendered by the caller (the C(imds.scheduled_events.fleet_report)
    role renders its templates); the JSON is the report itself.
  - With O(alert_state_file), compares the fleet with what the previous run saw (kept in that file, on the controller)
    and sends what is new - new events, events gone, events started, new and released holds, hosts newly unreachable
    and reachable again - by email (O(email)) and to a webhook (O(webhook)). When nothing changed, nothing is sent.
  - Each channel remembers what it last delivered, so a failed delivery is retried with everything it missed on the
    next run, and a channel added later starts from the whole picture (or from a baseline, see O(first_run)).
  - An event whose hosts are all unreachable now, or a hold on an unreachable host, is not reported as gone; it is
    carried over until its host can be read again.
  - Runs in the controller's process; no module is sent to any host.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is written or sent; RV(changes) and RV(alerts) say what would be.
  diff_mode:
    support: none
  action:
    support: full
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
options:
  report:
    description:
      - The report, from the P(imds.scheduled_events.fleet_report_data#filter) filter.
    type: dict
    required: true
  html_path:
    description: Where to write O(html), on the controller. Not written when not set.
    type: path
  html:
    description: The rendered HTML report.
    type: str
  markdown_path:
    description: Where to write O(markdown), on the controller. Not written when not set.
    type: path
  markdown:
    description: The rendered Markdown report.
    type: str
  json_path:
    description: Where to write the report as JSON, on the controller. Not written when not set.
    type: path
  mode:
    description: Permissions of the report files, as an octal string. The alert state file is always V(0600).
    type: raw
    default: "0644"
  alert_state_file:
    description:
      - The JSON file on the controller where what each run saw is kept for the next. Without it, nothing is compared
        and nothing is sent.
    type: path
  first_run:
    description:
      - What a channel does the first time, when it has nothing to compare with.
      - V(alert) sends everything as new. V(baseline) records the fleet as it is and sends nothing.
    type: str
    choices: [alert, baseline]
    default: alert
  report_url:
    description: Where readers find the HTML report (a URL or a path), quoted in alerts.
    type: str
  fail_on_delivery_error:
    description:
      - Fail the task when an alert could not be delivered (after writing the files, and the state of the channels
        that succeeded). The failed channel tries again with the same changes on the next run either way.
    type: bool
    default: true
  email:
    description:
      - Send alerts by email over SMTP. Not sent when not set.
    type: dict
    suboptions:
      host:
        description: The SMTP server.
        type: str
        required: true
      port:
        description: The port. Default V(465) with O(email.security=tls), else V(25).
        type: int
      security:
        description:
          - V(none) sends in clear text; V(starttls) upgrades the connection and fails if the server does not offer
            STARTTLS; V(tls) connects over TLS from the start (SMTPS).
          - A login (O(email.username)) over V(none) is refused, so that the password never travels in clear text.
        type: str
        choices: [none, starttls, tls]
        default: none
      username:
        description: Log in with this user name. No login when not set.
        type: str
      password:
        description: The password for O(email.username). Never logged, never part of a message.
        type: str
      sender:
        description: The C(From) address.
        type: str
        required: true
      to:
        description: The recipients.
        type: list
        elements: str
        required: true
      timeout:
        description: Seconds to wait for the server.
        type: float
        default: 30
      validate_certs:
        description: Verify the server's certificate and name. Turn off only for a test server.
        type: bool
        default: true
      ca_path:
        description: A PEM file of CA certificates to verify the server with, instead of the system's.
        type: path
  webhook:
    description:
      - POST alerts as JSON to a URL (chat webhooks accept the C(text) key of the payload). Not sent when not set.
      - The payload's C(text) and C(subject), which chat services display, carry no mention or link from the data
        (C(&), C(<) and C(>) as entities, a word joiner after C(@) and inside a Markdown link); its other keys carry
        the values as they came, for a receiver that escapes them for its own markup.
      - Redirects are refused, so the secret header never goes anywhere else. Only the URL's scheme, host and port
        appear in messages, since chat webhooks carry their token in the path.
    type: dict
    suboptions:
      url:
        description:
          - The URL, V(https://) (or V(http://) for a local receiver).
          - A URL with C(user:password@) is refused; put the credential in O(webhook.secret) instead. Its path and
            query are redacted from every message, where chat webhooks keep their token.
        type: str
        required: true
      secret_header:
        description: The name of the header that carries O(webhook.secret).
        type: str
        default: X-Webhook-Secret
      secret:
        description: The shared secret sent in O(webhook.secret_header). Never logged, never part of a message.
        type: str
      headers:
        description: Further headers.
        type: dict
        default: {}
      validate_certs:
        description: Verify the server's certificate and name. Turn off only for a test server.
        type: bool
        default: true
      ca_path:
        description: A PEM file of CA certificates to verify the server with, instead of the system's.
        type: path
      timeout:
        description: Seconds to wait for the answer.
        type: float
        default: 30
      use_proxy:
        description: Go through the proxy named by E(HTTPS_PROXY) and friends on the controller, if any.
        type: bool
        default: true
notes:
  - The C(imds.scheduled_events.fleet_report) role calls this with C(run_once) and C(delegate_to=localhost); the files
    and the state are always written on the controller, whatever the task's host.
seealso:
  - plugin: imds.scheduled_events.fleet_report_data
    plugin_type: filter
  - module: imds.scheduled_events.watcher_info
"""

EXAMPLES = r"""
- name: Write the report and alert on change
  imds.scheduled_events.fleet_publish:
    report: "{{ report }}"
    json_path: /srv/reports/fleet.json
    alert_state_file: /var/lib/fleet-report/alert-state.json
    email:
      host: smtp.example.com
      port: 587
      security: starttls
      username: reports
      password: "{{ vault_smtp_password }}"
      sender: fleet-report@example.com
      to: [oncall@example.com]
    webhook:
      url: https://hooks.example.com/services/T000/B000/XXXX
      secret: "{{ vault_webhook_secret }}"
  run_once: true
  delegate_to: localhost
  register: published

- name: Tell whether anything changed
  ansible.builtin.debug:
    var: published.change_counts
  run_once: true
"""

RETURN = r"""
files:
  description: The files written (or that would be), by kind (V(html), V(markdown), V(json)).
  returned: always
  type: dict
  sample: {html: /srv/reports/fleet.html, json: /srv/reports/fleet.json}
changes:
  description:
    - What changed since the last run - C(new_events), C(gone_events), C(started_events), C(new_holds),
      C(released_holds), C(newly_unreachable), C(reachable_again), each a list.
  returned: when O(alert_state_file) is set
  type: dict
change_counts:
  description: How many items each list of RV(changes) has.
  returned: when O(alert_state_file) is set
  type: dict
  sample: {new_events: 2, gone_events: 0, started_events: 0, new_holds: 1, released_holds: 0, newly_unreachable: 1,
           reachable_again: 0}
has_changes:
  description: Whether anything changed since the last run.
  returned: when O(alert_state_file) is set
  type: bool
alerts:
  description:
    - Per channel (V(email), V(webhook)) what happened - C(sent to ...), C(sent (HTTP 200)), C(nothing new),
      C(baseline recorded), C(would send) (check mode) or C(failed).
  returned: when O(alert_state_file) is set
  type: dict
  sample: {email: "sent to oncall@example.com", webhook: "nothing new"}
delivery_errors:
  description: Why a channel failed, one line each, secrets removed.
  returned: when a delivery failed
  type: list
  elements: str
first_run:
  description: Whether there was no alert state yet.
  returned: when O(alert_state_file) is set
  type: bool
alert_state_file:
  description: The alert state file.
  returned: when O(alert_state_file) is set
  type: str
"""
