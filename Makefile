# imds.scheduled_events: build, test and demo from a fresh clone.
#   make demo   the main job: the simulator plus an example playbook
#   make test   installs everything it needs, then runs every suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The test matrix. Each ansible-core release runs sanity, units and integration on one controller Python it
# supports; the main venv (.venv, the newest release) also carries the tools (lint, docs, molecule, system suites).
# Node Pythons older than every controller's run the module and module_utils unit tests with the newest
# ansible-test (3.11 to 3.13 are covered by the core legs). README's "Tested with" lists exactly this.
MAIN_CORE := 2.21
CORES := 2.21 2.20 2.19
PY_2.21 := 3.13
PY_2.20 := 3.12
PY_2.19 := 3.11
NODE_PYTHONS := 3.9 3.10

VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
VENVS := $(CURDIR)/.build/venvs
REQS := tests/requirements
STAMP := $(VENV)/.matrix-stamp
# The Event-Driven Ansible engine (ansible-rulebook) for the rulebook system tests, on the main core's Python; the tests
# run in .venv and start its bin/ansible-rulebook as a program (tests/harness/rulebook.py, docs/testing-eda.md).
EDA_VENV := $(VENVS)/eda
# ansible finds the checkout itself through this symlink tree ...
COLLECTIONS := $(CURDIR)/.build/collections
LIVE := $(COLLECTIONS)/ansible_collections/imds/scheduled_events
# ... while ansible-test gets, per leg, a copy of what git would ship (it refuses symlinked roots), made a git
# repository of its own so ansible-test lists its files and not the outer checkout's.
TEST_TREES := $(CURDIR)/.build/ansible-test
TREE = $(TEST_TREES)/$(1)/ansible_collections/imds/scheduled_events

# Nothing is written to the user's home: Ansible's own files go under .build, and the caches that outlive a
# checkout (Debian rootfs, ansible-test's sanity venvs, pip and molecule caches) under one documented
# directory, IMDS_SE_TEST_CACHE (/var/cache/imds-scheduled-events-tests as root, else .build/cache).
IMDS_SE_TEST_CACHE ?= $(if $(shell [ -w /var/cache ] && echo y),/var/cache/imds-scheduled-events-tests,$(CURDIR)/.build/cache)
TEST_HOME := $(IMDS_SE_TEST_CACHE)/home
# ansible-test keeps its venvs and pip bootstrap under ~/.ansible/test: give it a home of its own
ANSIBLE_TEST = HOME=$(TEST_HOME) $(1)/bin/ansible-test

export PATH := $(BIN):$(PATH)
export IMDS_SE_TEST_CACHE
export ANSIBLE_HOME := $(CURDIR)/.build/ansible-home
export ANSIBLE_LOCAL_TEMP := $(ANSIBLE_HOME)/tmp
# a task on localhost (the demo, -c local) would otherwise make its remote temp dir in ~/.ansible/tmp
export ANSIBLE_REMOTE_TEMP := $(ANSIBLE_HOME)/tmp
export ANSIBLE_ASYNC_DIR := $(ANSIBLE_HOME)/async
# molecule's ansible.cfg names the ssh control sockets' directory itself; the variable wins over the file
export ANSIBLE_SSH_CONTROL_PATH_DIR := $(ANSIBLE_HOME)/cp
export XDG_CACHE_HOME := $(IMDS_SE_TEST_CACHE)/xdg
# pip runs `rustc --version` for its user agent; where that is rustup's proxy and the home has no ~/.rustup (a fresh
# HOME), the proxy writes ~/.rustup/settings.toml. Then it writes into the cache instead; an existing ~/.rustup or
# RUSTUP_HOME (a real rustup install, its toolchains) is kept.
export RUSTUP_HOME := $(or $(RUSTUP_HOME),$(wildcard $(HOME)/.rustup),$(IMDS_SE_TEST_CACHE)/rustup)
# the IMDS client's pacing file (shared by the processes of a user) for everything make runs on this host, root
# included, instead of /run/imds-scheduled-events (the containers of the system suites use their own /run)
export IMDS_SE_PACE_DIR := $(CURDIR)/.build/pace
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false
export ANSIBLE_NOCOLOR := 1
export PYTHONDONTWRITEBYTECODE := 1

venv_of = $(if $(filter $(MAIN_CORE),$(1)),$(VENV),$(VENVS)/core-$(1))

.PHONY: help venv venvs eda-venv collection test system-lane matrix-lane matrix lint sanity units integration system changelog-lint docs \
	docs-check kql portal demo bench simulator build lock clean $(foreach c,$(CORES),sanity-$(c) units-$(c) integration-$(c)) \
	$(foreach p,$(NODE_PYTHONS),units-node-$(p))

help:
	@echo "make demo    run the simulator and the example playbook against it"
	@echo "make test    install what is needed and run every suite (CI=true: a skip is a failure)"
	@echo "make lint | sanity | units | integration | system | docs-check | changelog-lint | build"
	@echo "make kql     every KQL query through Microsoft's Kusto parser (npm @kusto/language-service-next, pinned)"
	@echo "make portal  rebuild deploy/arm/portal.json and the queries of docs/portal.md from plugins/module_utils/kql.py"
	@echo "make eda-venv   the ansible-rulebook venv the rulebook system tests start (.build/venvs/eda; make system builds it)"
	@echo "make sanity-2.20 | units-2.19 | units-node-3.9 | integration-2.21 ...   one leg of the matrix"
	@echo "make bench   every benchmark on the simulator: bench/results.json, bench/results.md (QUICK=1: short runs; ONLY=a,b: those, the others kept)"
	@echo "make lock    resolve tests/requirements/*.in afresh into their lock files"

$(STAMP): $(REQS)/tools.txt scripts/venv scripts/find-python
	bash scripts/venv $(VENV) $(PY_$(MAIN_CORE)) $(REQS)/tools.txt

venv: $(STAMP)
	@mkdir -p $(dir $(IMDS_SE_PACE_DIR)) && mkdir -p -m 0700 $(IMDS_SE_PACE_DIR)

$(VENVS)/core-%/.matrix-stamp: $(REQS)/core-%.txt scripts/venv scripts/find-python
	bash scripts/venv $(VENVS)/core-$* $(PY_$*) $(REQS)/core-$*.txt

$(VENVS)/node-%/.matrix-stamp: $(REQS)/node-%.txt scripts/venv scripts/find-python
	bash scripts/venv $(VENVS)/node-$* $* $(REQS)/node-$*.txt

$(EDA_VENV)/.matrix-stamp: $(REQS)/eda.txt scripts/venv scripts/find-python
	bash scripts/venv $(EDA_VENV) $(PY_$(MAIN_CORE)) $(REQS)/eda.txt

eda-venv: $(EDA_VENV)/.matrix-stamp

venvs: venv $(foreach c,$(filter-out $(MAIN_CORE),$(CORES)),$(VENVS)/core-$(c)/.matrix-stamp) \
	$(foreach p,$(NODE_PYTHONS),$(VENVS)/node-$(p)/.matrix-stamp)

collection:
	@mkdir -p $(dir $(LIVE))
	@[ -L $(LIVE) ] || ln -sfn $(CURDIR) $(LIVE)

# A fresh copy of the shipped files for one leg (sanity, units and integration of a leg share it).
define test_tree
	@rm -rf $(call TREE,$(1)) && mkdir -p $(call TREE,$(1))
	@git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C $(call TREE,$(1))
	@cd $(call TREE,$(1)) && git init -q && git add -A
endef

# The system suites mostly wait on containers and ssh while the matrix legs mostly compute: two lanes side by side
# from the start, each a make of its own (under one -j2 make, make would run two matrix legs at once and start the
# system suites only when a slot is free, at the end). The system lane, the shorter, also takes the node-Python unit
# legs once the system suites are done. A lane's make knows no jobserver (taken out of MAKEFLAGS, the other flags
# kept), so its legs run one by one, each printed as a block when it ends; tests/system/run prints each system leg
# as a block when it ends.
LANE = MAKEFLAGS="$(filter-out -j% --jobserver%,$(MAKEFLAGS))" $(MAKE) --no-print-directory --output-sync=target

test: venvs collection changelog-lint lint docs-check kql
	$(MAKE) --no-print-directory -j2 system-lane matrix-lane
	@echo "make test: every suite passed"

system-lane:
	@$(MAKE) --no-print-directory system
	+@$(LANE) $(foreach p,$(NODE_PYTHONS),units-node-$(p))

matrix-lane:
	+@$(LANE) sanity $(foreach c,$(CORES),units-$(c)) integration

matrix: sanity units integration

lint: venv collection
	$(BIN)/ansible-lint --profile production
	bash tests/roles/check-argument-specs

changelog-lint: venv
	$(BIN)/antsibull-changelog lint

# tests/docs/antsibull.cfg: problems on stderr, and no ~/antsibull.log (antsibull's default log file)
ANTSIBULL_DOCS = $(BIN)/antsibull-docs --config-file tests/docs/antsibull.cfg collection --use-current --squash-hierarchy --output-format simplified-rst \
	--no-add-antsibull-docs-version --fail-on-error --cleanup everything

docs: venv collection
	@mkdir -p docs/plugins
	$(ANTSIBULL_DOCS) --dest-dir docs/plugins imds.scheduled_events
	$(BIN)/python scripts/render_eda_docs.py docs/eda-sources

# Every plugin renders without warnings, and docs/plugins/ (and docs/eda-sources/, the event sources, which
# antsibull-docs does not render) matches what the code says.
docs-check: venv collection
	bash tests/docs/check-plugin-docs
	$(BIN)/antsibull-docs --config-file tests/docs/antsibull.cfg lint-collection-docs --plugin-docs .
	@rm -rf .build/docs && mkdir -p .build/docs
	@$(ANTSIBULL_DOCS) --dest-dir .build/docs imds.scheduled_events >/dev/null
	@diff -r docs/plugins .build/docs || { echo "docs/plugins/ is out of date: run 'make docs'"; exit 1; }
	@rm -rf .build/eda-sources && $(BIN)/python scripts/render_eda_docs.py .build/eda-sources >/dev/null
	@diff -r docs/eda-sources .build/eda-sources || { echo "docs/eda-sources/ is out of date: run 'make docs'"; exit 1; }

# Microsoft's Kusto parser, installed as tests/kusto/package-lock.json pins it (npm ci; npm's cache under
# IMDS_SE_TEST_CACHE), checks every query the collection can emit (tests/kusto, docs/portal.md).
KUSTO := $(CURDIR)/.build/kusto
NPM = npm_config_update_notifier=false npm_config_cache=$(IMDS_SE_TEST_CACHE)/npm npm

# Without node or npm (need-program could not install them, and CI is not true: it said so and exits 0 then) there
# is no stamp, and tests/kusto skips saying what is missing; with CI=true need-program has failed already.
$(KUSTO)/.stamp: tests/kusto/package.json tests/kusto/package-lock.json
	@bash scripts/need-program node nodejs
	@bash scripts/need-program npm npm
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
	  rm -rf $(KUSTO) && mkdir -p $(KUSTO) && \
	  cp tests/kusto/package.json tests/kusto/package-lock.json $(KUSTO)/ && \
	  (cd $(KUSTO) && $(NPM) ci --prefer-offline --no-audit --no-fund --ignore-scripts) && touch $@; fi

kql: venv collection $(KUSTO)/.stamp
	IMDS_SE_KUSTO_MODULES=$(KUSTO)/node_modules $(BIN)/python -m pytest -q tests/kusto

# deploy/arm/portal.json and the query listings of the docs, from plugins/module_utils/kql.py (a unit test fails
# when what ships differs).
portal: venv collection
	$(BIN)/python scripts/portal.py

sanity: $(foreach c,$(CORES),sanity-$(c))
units: $(foreach c,$(CORES),units-$(c)) $(foreach p,$(NODE_PYTHONS),units-node-$(p))
integration: $(foreach c,$(CORES),integration-$(c))

$(foreach c,$(CORES),sanity-$(c)): sanity-%: venvs
	@echo "=== matrix: ansible-core $* sanity on Python $(PY_$*)"
	$(call test_tree,sanity-$*)
	@mkdir -p $(TEST_HOME)
	@HOME=$(TEST_HOME) bash scripts/ansible-test-offline-pip $(call venv_of,$*)
	@bash scripts/need-program shellcheck shellcheck
	cd $(call TREE,sanity-$*) && PATH=$(call venv_of,$*)/bin:$$PATH \
	  $(call ANSIBLE_TEST,$(call venv_of,$*)) sanity --venv --python $(PY_$*) --color no

$(foreach c,$(CORES),units-$(c)): units-%: venvs
	@echo "=== matrix: ansible-core $* units on Python $(PY_$*) (controller and node)"
	$(call test_tree,units-$*)
	cd $(call TREE,units-$*) && PATH=$(call venv_of,$*)/bin:$$PATH \
	  $(call ANSIBLE_TEST,$(call venv_of,$*)) units --local --python $(PY_$*) --color no

$(foreach p,$(NODE_PYTHONS),units-node-$(p)): units-node-%: venvs
	@echo "=== matrix: node Python $* units (modules, module_utils) with ansible-core $(MAIN_CORE)'s ansible-test"
	$(call test_tree,units-node-$*)
	cd $(call TREE,units-node-$*) && $(call ANSIBLE_TEST,$(VENV)) units --local --python $* \
	  --python-interpreter $(VENVS)/node-$*/bin/python --color no

$(foreach c,$(CORES),integration-$(c)): integration-%: venvs
	@echo "=== matrix: ansible-core $* integration on Python $(PY_$*)"
	$(call test_tree,integration-$*)
	@bash scripts/need-program jq jq && bash scripts/need-program curl curl   # the docs' commands (doc_commands)
	cd $(call TREE,integration-$*) && PATH=$(call venv_of,$*)/bin:$$PATH \
	  $(call ANSIBLE_TEST,$(call venv_of,$*)) integration --local --python $(PY_$*) --color no --allow-destructive

# venvs: tests/system/test_doc_commands.py runs the docs' commands with every matrix leg's ansible-playbook
system: venvs eda-venv collection
	bash tests/system/run

demo: venv collection
	bash scripts/demo

# Benchmarks (never part of make test: timings belong here, not in assertions).
bench: venv collection
	PYTHONPATH=$(CURDIR)/tests/guard $(BIN)/python bench/run.py $(if $(QUICK),--quick) $(if $(ONLY),--only $(ONLY))

simulator:
	PYTHON=$(PYTHON) simulator/imds-simulator --scenario simulator/scenarios/demo.yaml

build: venv
	$(BIN)/ansible-galaxy collection build --force --output-path .build/dist

# Resolve every requirements file afresh, each with its own Python.
lock:
	bash scripts/venv --lock $(VENVS)/lock-tools $(PY_$(MAIN_CORE)) $(REQS)/tools.in $(REQS)/tools.txt
	$(foreach c,$(filter-out $(MAIN_CORE),$(CORES)),bash scripts/venv --lock $(VENVS)/lock-$(c) $(PY_$(c)) $(REQS)/core-$(c).in $(REQS)/core-$(c).txt;)
	$(foreach p,$(NODE_PYTHONS),bash scripts/venv --lock $(VENVS)/lock-node-$(p) $(p) $(REQS)/node.in $(REQS)/node-$(p).txt;)
	bash scripts/venv --lock $(VENVS)/lock-eda $(PY_$(MAIN_CORE)) $(REQS)/eda.in $(REQS)/eda.txt
	rm -rf $(VENVS)/lock-*

clean:
	rm -rf .build tests/output
