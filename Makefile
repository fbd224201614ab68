# Quick start:  make run   (the app on http://127.0.0.1:5000, in-memory, no Redis)
#               make test  (installs everything, runs the whole suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test compat bench autobahn lint clean web-vendor client-types

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when a requirements file changes.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt bench/requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# The gevent profile (gevent on the newest gunicorn, requirements-gevent.txt): the
# gevent pass of `make test` runs in it.
GEVENT_VENV ?= .venv-gevent
$(GEVENT_VENV)/.dev: requirements.txt requirements-dev.txt requirements-gevent.txt bench/requirements.txt
	$(PYTHON) -m venv $(GEVENT_VENV)
	$(GEVENT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GEVENT_VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	$(GEVENT_VENV)/bin/python -m pip install --quiet -r requirements-gevent.txt
	touch $@

run: $(VENV)/.runtime
	$(BIN)/gunicorn -c config/gunicorn.conf.py

# The whole suite in tiers (scripts/test.sh, docs/testing.md): lint, the in-process
# tests, then per async mode the tests against real servers in parallel processes and
# the transport tests on python-engineio's own transport. Every step runs; the summary
# names each that failed. ASYNC_MODE=gevent make test runs one mode.
test: $(VENV)/.dev $(GEVENT_VENV)/.dev
	scripts/ensure-test-tools.sh
	BIN=$(BIN) GEVENT_BIN=$(GEVENT_VENV)/bin scripts/test.sh

# The adapters' contract tests against the installed library releases, seconds: run
# after changing a pin, before `make test` (docs/architecture.md, "Library internals").
compat: $(VENV)/.dev
	TEST_TIER=in-process $(BIN)/python -m pytest -q tests/adapters -m "not servers"

# Template vs Node (plain and with recovery) vs bare python-socketio, 3 interleaved rounds,
# ~45 minutes (docs/performance.md; BENCH_ARGS="--rounds 1" for one).
bench: $(VENV)/.dev
	scripts/ensure-test-tools.sh
	cd bench && npm ci --no-audit --no-fund --silent
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The client types, from the models that validate every event (app/api/client_types.py):
# clients/typescript/socket-events.d.ts for socket.io-client, clients/python/socket_events.py
# for python-socketio. Committed; tests/web fails when they differ from the models.
client-types: $(VENV)/.runtime
	$(BIN)/python -m app.api.client_types

# The browser code the template serves (needs npm): install the versions pinned in
# web/package.json and copy the demo page's socket.io-client to app/web/static/vendor/
# and the Socket.IO Admin UI (without source maps) with its icon font to
# app/web/admin_ui/, which are committed so that `make run` and the image need only
# Python (tests/web checks they match).
ADMIN_UI := app/web/admin_ui
web-vendor:
	cd web && npm ci --no-audit --no-fund --silent
	cp web/node_modules/socket.io-client/dist/socket.io.min.js app/web/static/vendor/
	rm -rf $(ADMIN_UI) && cp -r web/node_modules/@socket.io/admin-ui/ui/dist $(ADMIN_UI)
	find $(ADMIN_UI) -name '*.map' -delete
	mkdir -p $(ADMIN_UI)/mdi/css $(ADMIN_UI)/mdi/fonts
	cp web/node_modules/@mdi/font/css/materialdesignicons.min.css $(ADMIN_UI)/mdi/css/
	cp web/node_modules/@mdi/font/fonts/materialdesignicons-webfont.woff2 $(ADMIN_UI)/mdi/fonts/

# RFC 6455 conformance of the WebSocket code, Autobahn|Testsuite (docs/conformance.md).
# wstest is Python 2 code: installed once into its own virtualenv.
PYTHON2       ?= $(HOME)/.pyenv/versions/2.7.18/bin/python
AUTOBAHN_VENV ?= /tmp/autobahn-venv

$(AUTOBAHN_VENV)/bin/wstest: bench/autobahn/requirements-py2.txt
	$(PYTHON2) -m pip install --quiet --user virtualenv==20.15.1
	$(PYTHON2) -m virtualenv --quiet $(AUTOBAHN_VENV)
	$(AUTOBAHN_VENV)/bin/pip install --quiet -r bench/autobahn/requirements-py2.txt
	touch $@

autobahn: $(VENV)/.runtime $(AUTOBAHN_VENV)/bin/wstest
	@for mode in $${ASYNC_MODE:-eventlet gevent}; do \
		$(BIN)/python bench/autobahn/run.py --wstest $(AUTOBAHN_VENV)/bin/wstest --mode $$mode || exit 1; \
	done

lint: $(VENV)/.dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
