# imds.scheduled_events: build, test and demo from a fresh clone.
#   make demo   the main job: the simulator plus an example playbook
#   make test   installs everything it needs, then runs every suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# ansible finds the checkout itself through this symlink tree ...
COLLECTIONS := $(CURDIR)/.build/collections
LIVE := $(COLLECTIONS)/ansible_collections/imds/scheduled_events
# ... while ansible-test gets a copy of what git would ship (it refuses symlinked roots),
# made a git repository of its own so ansible-test lists its files and not the outer checkout's.
TEST_TREE := $(CURDIR)/.build/ansible-test/ansible_collections/imds/scheduled_events
ANSIBLE_TEST := $(BIN)/ansible-test
PYVER := 3.11
OFFLINE_PIP := $(CURDIR)/../shared/tools/ansible-test-offline-pip

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false
export ANSIBLE_NOCOLOR := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv collection test-tree test lint sanity units integration system changelog-lint docs docs-check demo bench simulator build lock clean

help:
	@echo "make demo    run the simulator and the example playbook against it"
	@echo "make test    install what is needed and run every suite (CI=true: a skip is a failure)"
	@echo "make lint | sanity | units | integration | system | docs-check | changelog-lint | build"
	@echo "make bench   every benchmark on the simulator: bench/results.json, bench/results.md (QUICK=1: short runs)"

$(STAMP): tests/requirements.txt scripts/bootstrap
	bash scripts/bootstrap "$(PYTHON)" "$(VENV)"
	$(BIN)/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(STAMP)

collection:
	@mkdir -p $(dir $(LIVE))
	@[ -L $(LIVE) ] || ln -sfn $(CURDIR) $(LIVE)

test-tree:
	@rm -rf $(TEST_TREE) && mkdir -p $(TEST_TREE)
	@git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C $(TEST_TREE)
	@cd $(TEST_TREE) && git init -q && git add -A

test: venv collection changelog-lint lint docs-check sanity units integration system
	@echo "make test: every suite passed"

lint: venv collection
	$(BIN)/ansible-lint --profile production
	bash tests/roles/check-argument-specs

changelog-lint: venv
	$(BIN)/antsibull-changelog lint

ANTSIBULL_DOCS = $(BIN)/antsibull-docs collection --use-current --squash-hierarchy --output-format simplified-rst \
	--no-add-antsibull-docs-version --fail-on-error --cleanup everything

docs: venv collection
	@mkdir -p docs/plugins
	$(ANTSIBULL_DOCS) --dest-dir docs/plugins imds.scheduled_events

# Every plugin renders without warnings, and docs/plugins/ matches what the code says.
docs-check: venv collection
	bash tests/docs/check-plugin-docs
	$(BIN)/antsibull-docs lint-collection-docs --plugin-docs .
	@rm -rf .build/docs && mkdir -p .build/docs
	@$(ANTSIBULL_DOCS) --dest-dir .build/docs imds.scheduled_events >/dev/null
	@diff -r docs/plugins .build/docs || { echo "docs/plugins/ is out of date: run 'make docs'"; exit 1; }

sanity: venv test-tree
	@if [ -f "$(OFFLINE_PIP)" ]; then bash "$(OFFLINE_PIP)" $(BIN)/python >/dev/null; fi
	@bash scripts/need-program shellcheck shellcheck
	cd $(TEST_TREE) && $(ANSIBLE_TEST) sanity --venv --python $(PYVER) --color no

units: venv test-tree
	cd $(TEST_TREE) && $(ANSIBLE_TEST) units --local --python $(PYVER) --color no

integration: venv test-tree
	@if ls tests/integration/targets/*/aliases >/dev/null 2>&1; then \
	  cd $(TEST_TREE) && $(ANSIBLE_TEST) integration --local --python $(PYVER) --color no --allow-destructive; \
	else echo "integration: no targets yet"; fi

system: venv collection
	bash tests/system/run

demo: venv collection
	bash scripts/demo

# Benchmarks (never part of make test: timings belong here, not in assertions).
bench: venv collection
	PYTHONPATH=$(CURDIR)/tests/guard $(BIN)/python bench/run.py $(if $(QUICK),--quick)

simulator:
	PYTHON=$(PYTHON) simulator/imds-simulator --scenario simulator/scenarios/demo.yaml

build: venv
	$(BIN)/ansible-galaxy collection build --force --output-path .build/dist

lock:
	$(BIN)/pip install --quiet -r tests/requirements.in
	{ echo "# Frozen from requirements.in by 'make lock'. Installed into .venv by 'make venv'."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^pip=='; } > tests/requirements.txt

clean:
	rm -rf .build tests/output
