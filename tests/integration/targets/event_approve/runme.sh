#!/usr/bin/env bash
set -eu
source ../setup_imds_simulator/simulator.sh
start_imds_simulator --scenario "$IMDS_SIM_SCENARIOS/integration.yaml"
ansible-playbook -i "$INVENTORY_PATH" test.yml -e "imds_endpoint=$IMDS_ENDPOINT imds_control=$IMDS_SIM_CONTROL" "$@"
