# One command runs the system, one runs every test (README). Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_STAMP := tests/js/node_modules/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(JS_STAMP): tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

install: $(STAMP) $(JS_STAMP)

## run: the whole system on this machine (2 workers + router), embedded storage under ./.collab
run: $(STAMP)
	$(BIN)/collab up --workers $${WORKERS_COUNT:-2} --port $${PORT:-8080}

## test: every test (unit, contract over local + S3 server process, interop, soak)
test: install
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check contract worker router ops tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) tests/js/node_modules .collab
