# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: task_timer
type: aggregate
short_description: Writes each task's wall time to the JSON file named by TASK_TIMER_OUT (benchmarks only)
description:
  - Used by bench/module_overhead.py to time modules inside one ansible-playbook run, so process start-up
    does not blur the comparison.
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self._started = {}
        self._timings = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._started[task._uuid] = time.perf_counter()

    def _done(self, result, ok):
        started = self._started.get(result._task._uuid)
        if started is not None:
            self._timings.append({"name": result._task.get_name(), "seconds": time.perf_counter() - started,
                                  "ok": ok})

    def v2_runner_on_ok(self, result):
        self._done(result, True)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, False)

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["TASK_TIMER_OUT"], "w") as handle:
            json.dump(self._timings, handle)
