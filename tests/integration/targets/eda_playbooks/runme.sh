#!/usr/bin/env bash
# The playbooks the EDA rulebooks run (playbooks/), run as ansible-rulebook runs them (ansible-runner's
# `-e @env/extravars`) with events whose every field is hostile: nothing of them may run or be rendered, on this
# ansible-core. The cases and the checks are tests/harness/eda_extravars.py (also run on Debian's packaged
# ansible-core by tests/system/test_pull_packaged_ansible.py).
set -eu
source ../setup_imds_simulator/simulator.sh
start_imds_simulator --scenario "$IMDS_SIM_SCENARIOS/integration.yaml"
# 4CAEA225...: myvm's Scheduled Reboot in integration.yaml (myvm is IMDS_ENDPOINT's VM), for drain_and_approve
python "$IMDS_COLLECTION_ROOT/tests/harness/eda_extravars.py" --collection "$IMDS_COLLECTION_ROOT" \
  --imds-endpoint "$IMDS_ENDPOINT" --imds-control "$IMDS_SIM_CONTROL" \
  --pending 4CAEA225-A741-474D-A72E-428C86FCD853 --workdir "$OUTPUT_DIR/eda"
