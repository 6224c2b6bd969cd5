# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The watcher daemon: hold drift correction while a scheduled event is pending, release it after.

A pure per-event state machine in the middle, I/O at the edges:

    machine.py   events and action results in, decisions out (no sockets, sleeps or clock reads)
    policy.py    approval rules as JMESPath expressions over the event
    config.py    the JSON config and secrets files, validated strictly
    hooks.py     pre/post executables, run without a shell, with a timeout
    notify.py    webhook, email and syslog, once per transition
    metrics.py   the Prometheus textfile-collector file
    journal.py   one JSON line per transition, bounded
    state.py     the machine's state on disk, written atomically
    lanes.py     where actions run beside the loop: serial lanes, results queued back to it
    daemon.py    the loop: poll, feed the machine, hand its actions to lanes, act on their results
    cli.py       imds-watcher run | status | check-config

Nothing here imports ansible: the watcher role installs these files on VMs as is,
next to the model, client, approval rules and hold library they reuse.
"""
