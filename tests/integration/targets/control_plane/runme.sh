#!/usr/bin/env bash
# The control-plane modules through real ansible-playbook and the real azure-identity managed-identity credential
# (IDENTITY_ENDPOINT / IDENTITY_HEADER point it at the simulator's token endpoint).
set -eu
source ../setup_imds_simulator/simulator.sh
start_imds_simulator --scenario "$IMDS_SIM_SCENARIOS/control-plane.yaml" --arm-port 0
[ -n "${IMDS_SIM_ARM:-}" ] || { echo "the simulator has no control-plane face"; exit 1; }
solo=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["vms"]["solo"])' "$IMDS_SIM_READY")
ansible-playbook -i "$INVENTORY_PATH" test.yml \
  -e "arm=$IMDS_SIM_ARM control=$IMDS_SIM_CONTROL solo_imds=$solo" "$@"
