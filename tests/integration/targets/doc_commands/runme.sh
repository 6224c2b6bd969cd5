#!/usr/bin/env bash
# The commands the docs print (README.md, deploy/README.md, prometheus/README.md, docs/*.md, the playbooks' headers),
# run as printed with this leg's ansible-core where their marker says `here` (or they have none): in private
# namespaces with loopback alone, against the simulator. tests/harness/doc_commands.py extracts, classifies and runs
# them; a command that fails is named with its file, line, text and output. The `fleet`, `vm` and `pull` commands
# run in booted containers (tests/system/test_doc_commands.py, test_pull_packaged_ansible.py).
set -eu
source ../setup_imds_simulator/simulator.sh
python "$IMDS_COLLECTION_ROOT/tests/harness/doc_commands.py" here --root "$IMDS_COLLECTION_ROOT" \
  --workdir "$OUTPUT_DIR/doc-commands"
