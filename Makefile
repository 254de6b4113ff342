# evstream developer entry points. Thin: every target calls Python (the `evstream` CLI or pytest).
#   make demo   fresh machine -> venv, jars, local stack, demo topics, publish + consume demo events
#   make test   the same setup, then pytest unit + integration against the real stack
#   make down   stop the local stack started here

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

# One stack per checkout, so a second clone (or CI) never touches this one's processes.
export EVSTREAM_STACK_DIR ?= $(CURDIR)/.stack

.PHONY: venv jars up down status demo test lint fmt clean reliability

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

jars: venv
	$(BIN)/evstream stack fetch

up: jars
	$(BIN)/evstream stack up

down:
	@test -x $(BIN)/evstream || { echo "nothing to stop: no .venv here"; exit 1; }
	$(BIN)/evstream stack down

status: venv
	$(BIN)/evstream stack status

demo: up
	$(BIN)/evstream topics apply -f deploy/topics.yaml
	$(BIN)/evstream demo -f deploy/topics.yaml
	$(BIN)/python -m evstream.streams.showcase
	@echo
	@echo "The local stack is still running (EVSTREAM_STACK_DIR=$(EVSTREAM_STACK_DIR)). Stop it with: make down"

test: up  # the reliability scenarios marked `long` run only in `make reliability`
	$(BIN)/pytest -m "(unit or integration or reliability) and not long" --durations=30 $(PYTEST_ARGS)

reliability: up  # every fault-injection scenario and every `long` test; figures: tests/reliability/README.md
	$(BIN)/pytest -m "reliability or long" --durations=30 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	-test -x $(BIN)/evstream && $(BIN)/evstream stack down
	rm -rf $(VENV) .stack .mypy_cache .ruff_cache .pytest_cache
