# The usual verbs; each is a thin wrapper so the scripts stay the single source.
PYTHON ?= .venv/bin/python

.PHONY: install proto check test up bench

install:
	python3 -m venv .venv
	$(PYTHON) -m pip install -e ".[dev]"

proto:
	PYTHON=$(PYTHON) scripts/gen_proto.sh

check:
	PYTHON=$(PYTHON) scripts/check_proto.sh
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test:
	PYTHON=$(PYTHON) scripts/test.sh

up:
	.venv/bin/tidepool up

bench:
	$(PYTHON) -m loadtest.registry_capacity
