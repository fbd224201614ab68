# Quick start:  make run   (the app on http://127.0.0.1:5000, in-memory, no Redis)
#               make test  (installs everything, runs the whole suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test bench autobahn lint clean web-vendor

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

run: $(VENV)/.runtime
	$(BIN)/gunicorn -c config/gunicorn.conf.py

# The whole suite, once per async mode (ASYNC_MODE=gevent make test for one mode); after
# each, the transport, protocol and socket tests again with python-engineio's own
# transport (ENGINEIO_TRANSPORT=stock, the fallback for an untested library version;
# about a minute per mode).
STOCK_TESTS := tests/transport tests/security/test_protocol.py tests/security/test_floods.py \
               tests/sockets/test_chat.py tests/sockets/test_connect_auth.py tests/recovery
test: $(VENV)/.dev
	scripts/ensure-test-tools.sh
	$(BIN)/ruff check .
	@for mode in $${ASYNC_MODE:-eventlet gevent}; do \
		echo "=== tests with ASYNC_MODE=$$mode ==="; \
		ASYNC_MODE=$$mode $(BIN)/python -m pytest $(PYTEST_ARGS) || exit 1; \
		echo "=== transport tests with ASYNC_MODE=$$mode ENGINEIO_TRANSPORT=stock ==="; \
		ASYNC_MODE=$$mode ENGINEIO_TRANSPORT=stock \
			$(BIN)/python -m pytest $(PYTEST_ARGS) $(STOCK_TESTS) || exit 1; \
	done

# Template vs Node Socket.IO reference vs bare python-socketio, ~6 minutes (docs/performance.md).
bench: $(VENV)/.dev
	scripts/ensure-test-tools.sh
	cd bench && npm ci --no-audit --no-fund --silent
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The demo page's socket.io-client (needs npm): install the version pinned in
# web/package.json and copy its dist file to app/web/static/vendor/, which is committed
# so that `make run` and the image need only Python (tests/web checks they match).
web-vendor:
	cd web && npm ci --no-audit --no-fund --silent
	cp web/node_modules/socket.io-client/dist/socket.io.min.js app/web/static/vendor/

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
