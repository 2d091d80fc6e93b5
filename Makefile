# One command runs the system, one runs every test (README). Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_STAMP := tests/js/node_modules/.installed
# The browser workspace: web/ built into router/webapp (package data the router serves).
WEB_DEPS := web/node_modules/.installed
WEB_STAMP := router/webapp/.built
WEB_SOURCES := web/build.mjs web/package.json $(wildcard web/src/*)

.PHONY: install run test lint bench clean screenshots web

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(JS_STAMP): tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

$(WEB_DEPS): web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_DEPS)

# Rebuilt only when a source or the lock file changed (the build empties router/webapp first).
$(WEB_STAMP): $(WEB_DEPS) $(WEB_SOURCES)
	cd web && node build.mjs
	touch $(WEB_STAMP)

## web: build the browser workspace (needs Node.js >= 20; nothing of it is needed at run time)
web: $(WEB_STAMP)

install: $(STAMP) $(JS_STAMP) $(WEB_STAMP)

## run: the whole system on this machine (2 workers + router), embedded storage under ./.collab
run: $(STAMP) $(WEB_STAMP)
	$(BIN)/collab up --workers $${WORKERS_COUNT:-2} --port $${PORT:-8080}

## test: every test (unit, contract over local + S3 server process, interop, soak)
test: install
	$(BIN)/python -m pytest -q

## screenshots: the browser tests, replacing the pictures in docs/images
screenshots: install
	COLLAB_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/web

lint: $(STAMP)
	$(BIN)/ruff check contract worker router ops tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) tests/js/node_modules web/node_modules router/webapp .collab
