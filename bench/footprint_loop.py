# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The baseline of bench/footprint.py: the minimal poller of Azure's Scheduled Events documentation, a
requests GET with `Metadata: true` every second, the JSON parsed, nothing else.
Usage: python bench/footprint_loop.py ENDPOINT
"""

import sys
import time

import requests


def main(endpoint):
    url = endpoint + "/metadata/scheduledevents?api-version=2020-07-01"
    while True:
        try:
            requests.get(url, headers={"Metadata": "true"}, timeout=10).json()
        except (requests.RequestException, ValueError) as exc:
            sys.stderr.write("poll failed: %s\n" % exc)
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1])
