# The usual verbs; each is a thin wrapper so the scripts stay the single source.
PYTHON ?= .venv/bin/python

.PHONY: install lock proto check test test-fast up bench

install:
	scripts/install.sh

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
