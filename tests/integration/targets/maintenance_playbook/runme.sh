#!/usr/bin/env bash
# playbooks/maintenance.yml where IMDS does not name the VM: without imds_vm_name it stops, saying so, and approves
# nothing; a list given as a key=value extra var (a string) stops it at once, saying how to pass it; with
# imds_vm_name it approves the VM's own event, waits until it is gone, and leaves the peer's alone.
set -eu
source ../setup_imds_simulator/simulator.sh
start_imds_simulator --scenario "$PWD/files/no-compute-name.yaml"
maintenance=(ansible-playbook -i "$INVENTORY_PATH" imds.scheduled_events.maintenance -e "imds_endpoint=$IMDS_ENDPOINT"
             -e maintenance_wait_interval=1 -e maintenance_wait_timeout=300)
out="$OUTPUT_DIR/maintenance.log"

expect_failure() {  # expect_failure TEXT ARGS...: the play fails, and its output says TEXT
  local text=$1; shift
  if "${maintenance[@]}" "$@" >"$out" 2>&1; then cat "$out"; echo "FAILED: the play succeeded with $*"; exit 1; fi
  grep -qF -- "$text" "$out" || { cat "$out"; echo "FAILED: the output does not say: $text"; exit 1; }
}
expect_failure "this VM's resource name is needed"
expect_failure 'pass them as JSON' -e imds_vm_name=myvm -e 'maintenance_services=[myapp]'
ansible-playbook -i "$INVENTORY_PATH" check.yml -e "imds_control=$IMDS_SIM_CONTROL" -e '{"approved": []}'

"${maintenance[@]}" -e imds_vm_name=myvm | tee "$out"
ansible-playbook -i "$INVENTORY_PATH" check.yml -e "imds_control=$IMDS_SIM_CONTROL" \
  -e '{"approved": ["C7061BAC-AFDC-4513-B24B-AA5F13A16123"], "gone": ["C7061BAC-AFDC-4513-B24B-AA5F13A16123"]}'
