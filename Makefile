# broker — make serve (run it), make test (run the suite). Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test test-fast test-fault lint bench bench-quick bench-history bench-peers soak clean browsers

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/broker serve

# Headless Chromium for the portal's browser tests: Debian's package, driven by Playwright's
# Python API (no `playwright install`). Needs root the first time (or `sudo make browsers`).
browsers:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: $(STAMP) browsers
	$(BIN)/python -m pytest -n 2 -m "not fault" -q
	# exit code 5 = no fault tests collected (e.g. filtered out): not a failure
	$(BIN)/python -m pytest -m fault -q || test $$? -eq 5

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not fault and not browser" -q

test-fault: $(STAMP)
	$(BIN)/python -m pytest -m fault -q || test $$? -eq 5

lint: $(STAMP)
	$(BIN)/ruff check broker tests bench
	$(BIN)/ruff format --check broker tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

# History at scale (bench/README.md): a large events table, a hot partner's window backlog,
# /metrics over a big queue. Not in CI. Sizes: --set history_events=10000000 etc.
bench-history: $(STAMP)
	$(BIN)/python -m bench.run --only history_filters,history_retention,window_drain,metrics_scrape $(BENCH_ARGS)

# Not in CI: broker beside a pgqueuer job queue with an aiohttp worker, the same signed POSTs to
# the same receiver, alternating rounds (bench/peers/, bench/README.md). Installs the `peers`
# extra (pgqueuer) into .venv first. PEERS_ARGS="--rounds 2 --deliveries 6400" for a shorter run.
bench-peers: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,dev,peers]'
	$(BIN)/python -m bench.peers $(PEERS_ARGS)

# Not in CI: 10 minutes of mixed load with a worker SIGKILLed every minute (bench/soak.py).
# SOAK_ARGS="--minutes 2" for a shorter run.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest-pg .pytest_cache .mypy_cache .ruff_cache *.egg-info
