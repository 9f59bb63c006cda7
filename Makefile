# The two commands of README.md: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test check bench bench-profile install system i18n clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

system:
	bash scripts/setup-system.sh

# Set up, migrate, seed the demo organization if the database is empty, and serve.
run: install
	$(BIN)/helpdesk serve --demo

# Set up the same way, then lint and run the whole suite.
test: install system
	$(BIN)/ruff check .
	$(BIN)/pytest

check: install
	$(BIN)/ruff check .

# The standard mail mix (../shared/bench) through the gateway on SQLite and PostgreSQL, 1 and 8
# SMTP clients, and one 25 MB mail: a table on stdout, var/bench/results.json. A few minutes.
# Quicker while developing: make bench BENCH_ARGS="--n 200 --db sqlite --clients 8 --no-big"
# Then the notifier, and the web area under 16 clients (bench.web: var/bench/web.json).
# First, `helpdesk ingest` against django-helpdesk 2.6.1's get_email on the same mix (bench.peer:
# the peer in its own virtualenv under var/bench, var/bench/peer.json). About a minute.
bench: install system
	$(BIN)/python -m bench.peer
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.notifier --db sqlite
	$(BIN)/python -m bench.notifier --db postgresql
	$(BIN)/python -m bench.web
	$(BIN)/python -m bench.sla

# Where the ingest time goes: cProfile of `helpdesk ingest`'s pipeline (no pool) over 200 mails on SQLite.
bench-profile: install
	$(BIN)/python -m bench.profile_ingest $(BENCH_ARGS)

# Re-extract user-facing strings and merge them into the catalogs (then translate locale/es).
i18n: install
	$(BIN)/pybabel extract -F babel.cfg -o locale/messages.pot --no-location --omit-header .
	$(BIN)/pybabel update -i locale/messages.pot -d locale -N --ignore-obsolete -w 100

clean:
	rm -rf var .pytest_cache
