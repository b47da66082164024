# The usual verbs; each is a thin wrapper so the scripts stay the single source.
PYTHON ?= .venv/bin/python

.PHONY: install lock proto check test test-fast up bench compile pure

install:
	scripts/install.sh

# The data path (router/relay and router.relay.build.ROUTER_MODULES) compiled with mypyc, in
# place (run again after editing one of its modules: the relay warns at import when a source
# is newer than its compiled module), or pure again.
compile:
	TIDEPOOL_RELAY_BUILD=compiled $(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .

pure:
	TIDEPOOL_RELAY_BUILD=pure $(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .

lock:
	PYTHON=$(PYTHON) scripts/lock.sh

proto:
	PYTHON=$(PYTHON) scripts/gen_proto.sh

check:
	PYTHON=$(PYTHON) scripts/check_proto.sh
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test:
	PYTHON=$(PYTHON) scripts/test.sh

test-fast:
	PYTHON=$(PYTHON) scripts/test.sh -m "not slow"

up:
	.venv/bin/tidepool up

bench:
	$(PYTHON) -m loadtest.registry_capacity
