#!/usr/bin/env bash
# Every hostile value (tests/unit/utils/hostile.py) in every field that hosts report to the fleet report and the
# rolling-approval plan, through real ansible-playbook on this leg's ansible-core: nothing runs, nothing renders,
# the plan selects only the exact hosts, and the report's files show every value as text (check.py).
set -eu -o pipefail
HERE=$(pwd)
COLLECTION="${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/imds/scheduled_events"
export PYTHONPATH="$COLLECTION/tests/guard${PYTHONPATH:+:$PYTHONPATH}"
export ANSIBLE_HOME="${OUTPUT_DIR:?ansible-test sets OUTPUT_DIR}/ansible-home"
export ANSIBLE_LOCAL_TEMP="$ANSIBLE_HOME/tmp" ANSIBLE_REMOTE_TEMP="$ANSIBLE_HOME/tmp"
export ANSIBLE_LIBRARY="$HERE/library"
WORK="$OUTPUT_DIR/fleet-hostile"
rm -rf "$WORK"
mkdir -p "$WORK"
PYTHON=$(command -v python || command -v python3)  # ansible-test puts python on PATH; a VM has python3
"$PYTHON" "$HERE/fleet_inputs.py" "$COLLECTION" "$WORK"
ansible-playbook -i "$WORK/inventory.yml" "$HERE/test.yml" -f 10 -e "work_dir=$WORK" "$@" | tee "$WORK/output.log"
"$PYTHON" "$HERE/check.py" "$COLLECTION" "$WORK"
