#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Test-only: return the JSON object of a file as this host's result, as watcher_info would (a module result is
what a host sends the controller; the hostile values in it must stay data)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: canned_result
short_description: Return a JSON file's object as the result (test only)
description: Return a JSON file's object as the result (test only).
options:
  path:
    description: The JSON file.
    type: path
    required: true
author: imds.scheduled_events maintainers (@imds-scheduled-events)
"""

EXAMPLES = r"""
- name: A result
  canned_result:
    path: /tmp/result.json
"""

RETURN = r"""
"""

import json

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True)), supports_check_mode=True)
    with open(module.params["path"], encoding="utf-8") as handle:
        module.exit_json(changed=False, **json.load(handle))


if __name__ == "__main__":
    main()
