# Paygate: `make run` starts the suite in the foreground, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := .tools/node_modules/.bin/buf

.PHONY: run test setup certs lint protos clean stop status

setup: $(STAMP) certs/ca.pem certs/totp.key var/log

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

certs/ca.pem: | $(STAMP)
	$(BIN)/python ops/gen_certs.py --dir certs

# The gateway's key for two-factor secrets; made once, beside certificates made earlier.
certs/totp.key: | $(STAMP)
	$(BIN)/python ops/gen_certs.py --dir certs

certs: $(STAMP)
	$(BIN)/python ops/gen_certs.py --dir certs

var/log:
	mkdir -p var/log

# RUN_DIR is where the suite keeps var/ (databases, logs, socket): the repository by default.
# Relative paths of the configuration resolve against it, so pair another RUN_DIR with a
# PAYGATE_CONFIG file that names certs_dir (and demo_accounts) by absolute path.
RUN_DIR ?= $(CURDIR)
# SUPERVISOR_CONF=ops/supervisord-relay.conf runs paygate-relay too (docs/events.md).
SUPERVISOR_CONF ?= supervisord.conf

# -u names the user supervisord runs as: the one running make (no change of user). Without
# it, supervisord run by root (a container) logs a CRIT line that it did not drop privileges.
run: setup
	mkdir -p $(RUN_DIR)/var/log
	cd $(RUN_DIR) && $(CURDIR)/$(BIN)/supervisord -n -c $(CURDIR)/$(SUPERVISOR_CONF) -u "$$(id -u)"

status:
	cd $(RUN_DIR) && $(CURDIR)/$(BIN)/supervisorctl -c $(CURDIR)/supervisord.conf status

# Returns once supervisord has exited, i.e. once every program has drained and stopped.
STOP_WAIT_S := 60
stop:
	@cd $(RUN_DIR) || exit 1; \
	pid=$$(cat var/supervisord.pid 2>/dev/null); \
	$(CURDIR)/$(BIN)/supervisorctl -c $(CURDIR)/supervisord.conf shutdown || exit 1; \
	[ -n "$$pid" ] || exit 0; \
	for i in $$(seq $$(( $(STOP_WAIT_S) * 10 ))); do \
		kill -0 "$$pid" 2>/dev/null || { echo "stopped"; exit 0; }; \
		sleep 0.1; \
	done; \
	echo "supervisord (pid $$pid) still running after $(STOP_WAIT_S) s" >&2; exit 1

test: setup $(BUF)
	$(BIN)/python -m pytest

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0

lint: $(BUF)
	cd proto && ../$(BUF) lint
	$(BIN)/ruff check services tests ops
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python ops/gen_protos.py

clean:
	rm -rf $(VENV) .tools var
