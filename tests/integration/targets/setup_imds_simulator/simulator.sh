# shellcheck shell=bash
# Sourced by integration targets' runme.sh: start the bundled IMDS simulator on
# ephemeral loopback ports, export where it listens, and stop it on exit.
#   start_imds_simulator [simulator options...]
#   -> IMDS_ENDPOINT (first VM), IMDS_SIM_CONTROL, IMDS_SIM_READY (the ready file);
#   with --arm-port 0 also IMDS_SIM_ARM (the control-plane face, instead of https://management.azure.com),
#   IMDS_SIM_IDENTITY_HEADER, and IDENTITY_ENDPOINT / IDENTITY_HEADER for azure-identity's managed identity;
#   IMDS_SIM_SCENARIOS is where the targets' scenarios are

IMDS_COLLECTION_ROOT="${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/imds/scheduled_events"
IMDS_SIM_SCENARIOS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/files"
export IMDS_SIM_SCENARIOS
# Every Python process below (ansible-playbook, modules, the simulator) refuses non-loopback connections.
export PYTHONPATH="$IMDS_COLLECTION_ROOT/tests/guard${PYTHONPATH:+:$PYTHONPATH}"
# Ansible's own files (temp dirs, async results) stay in this target's output directory, not in the home. The
# explicit async dir also keeps the async start and async_status agreeing when HOME is not the user's home.
export ANSIBLE_HOME="${OUTPUT_DIR:?ansible-test sets OUTPUT_DIR}/ansible-home"
export ANSIBLE_ASYNC_DIR="$ANSIBLE_HOME/async" ANSIBLE_LOCAL_TEMP="$ANSIBLE_HOME/tmp" ANSIBLE_REMOTE_TEMP="$ANSIBLE_HOME/tmp"
# So does the IMDS client's pacing file (ansible-test passes no IMDS_SE_PACE_DIR: as root it would be in /run).
export IMDS_SE_PACE_DIR="$OUTPUT_DIR/pace"
[ -d "$IMDS_SE_PACE_DIR" ] || mkdir -m 0700 "$IMDS_SE_PACE_DIR"

start_imds_simulator() {
  # in the target's output directory, which ansible-test removes: nothing is left in /tmp
  IMDS_SIM_DIR=$(mktemp -d "$OUTPUT_DIR/simulator.XXXXXX")
  local dir=$IMDS_SIM_DIR
  IMDS_SIM_READY="$dir/ready.json"
  PYTHON=python "$IMDS_COLLECTION_ROOT/simulator/imds-simulator" --port 0 --control-port 0 \
    --ready-file "$IMDS_SIM_READY" "$@" >"$dir/simulator.log" 2>&1 &
  IMDS_SIM_PID=$!
  trap 'stop_imds_simulator' EXIT
  # up to 60 s (a Python start-up on a loaded machine); the loop ends as soon as the ready file is there
  for _ in $(seq 1 600); do
    [ -s "$IMDS_SIM_READY" ] && break
    kill -0 "$IMDS_SIM_PID" 2>/dev/null || { cat "$dir/simulator.log"; return 1; }
    sleep 0.1
  done
  [ -s "$IMDS_SIM_READY" ] || { echo "the simulator did not start"; cat "$dir/simulator.log"; return 1; }
  IMDS_SIM_CONTROL=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["control"])' "$IMDS_SIM_READY")
  IMDS_ENDPOINT=$(python -c 'import json,sys; print((list(json.load(open(sys.argv[1]))["vms"].values()) or [""])[0])' "$IMDS_SIM_READY")
  export IMDS_SIM_CONTROL IMDS_ENDPOINT IMDS_SIM_READY
  IMDS_SIM_ARM=$(python -c 'import json,sys; print(json.load(open(sys.argv[1])).get("arm") or "")' "$IMDS_SIM_READY")
  if [ -n "$IMDS_SIM_ARM" ]; then
    IMDS_SIM_IDENTITY_HEADER=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["identity_header"])' "$IMDS_SIM_READY")
    IDENTITY_ENDPOINT="$IMDS_SIM_ARM/msi/token"
    IDENTITY_HEADER="$IMDS_SIM_IDENTITY_HEADER"
    export IMDS_SIM_ARM IMDS_SIM_IDENTITY_HEADER IDENTITY_ENDPOINT IDENTITY_HEADER
  else
    unset IMDS_SIM_ARM IMDS_SIM_IDENTITY_HEADER IDENTITY_ENDPOINT IDENTITY_HEADER
  fi
}

stop_imds_simulator() {
  if [ -n "${IMDS_SIM_PID:-}" ]; then
    kill "$IMDS_SIM_PID" 2>/dev/null || true
    wait "$IMDS_SIM_PID" 2>/dev/null || true
    IMDS_SIM_PID=
  fi
}
