# The two commands a newcomer needs: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install tools demo test bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools' editable build is chatty on stderr: keep its output in a log, shown only on failure
	$(BIN)/python -m pip install --quiet -e '.[test]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	touch $@

install: $(BIN)/.installed

# promtool checks the Prometheus rules and config in the tests: Debian's prometheus package has it
# (installed without starting any service). Needs root on Debian; elsewhere, install promtool yourself.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing promtool (Debian package prometheus)"; \
			(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || \
			 (apt-get update -qq >/dev/null 2>&1 && \
			  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1)) || \
			echo "could not install promtool: the Prometheus tests will fail"; \
		else echo "promtool missing: install Debian's prometheus package (the Prometheus tests need it)"; fi; }
	@# the views' web page is tested in Debian's chromium (driven by Playwright; never `playwright install`)
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium (Debian package) for the web page test"; \
			(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
			 (apt-get update -qq >/dev/null 2>&1 && \
			  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1)) || \
			echo "could not install chromium: the web page test will fail"; \
		else echo "chromium missing: install Debian's chromium package (the web page test needs it)"; fi; }

demo: install  ## the whole feed on the embedded broker, views live in the terminal
	$(BIN)/scolaflux demo $(DEMO_ARGS)

test: install tools  ## the test suite (starts its own broker)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	touch $@

# PostgreSQL for the views figure: BENCH_POSTGRES=URL (empty: that figure is left out). More: BENCH_ARGS.
BENCH_POSTGRES ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
bench: $(BIN)/.bench-installed  ## the figures of README "Benchmark", printed and written to var/bench.json
	$(BIN)/scolaflux bench $(if $(BENCH_POSTGRES),--postgres $(BENCH_POSTGRES)) $(BENCH_ARGS)

.PHONY: fuzz
FUZZ_SECONDS ?= 60
fuzz: install  ## coverage-guided fuzzing (atheris) of the codec and identifier rules, FUZZ_SECONDS per target
	$(BIN)/python -m pip install --quiet -e '.[fuzz]'
	mkdir -p var/fuzz
	for target in event delivery identifiers; do \
		$(BIN)/python -m tests.fuzz.fuzz_inputs $$target -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-artifact_prefix=var/fuzz/$$target- var/fuzz/corpus/$$target || exit 1; \
	done

.PHONY: chaos
CHAOS_ARGS ?=
chaos: install  ## kill -9, broker pause, duplicates, takeover on 200,000 events; every view compared (README "Faults")
	$(BIN)/scolaflux chaos $(CHAOS_ARGS)

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
