# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast install bench clean lint docs

$(BIN)/floodway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/floodway

install: $(BIN)/floodway

demo: install
	$(BIN)/floodway demo

test: install lint
	bash scripts/install-chromium.sh
	FLOODWAY_TEST_PYTHON=$(BIN)/python bash scripts/start-postgres.sh -- bash scripts/run-tests.sh $(PYTEST_ARGS)

# the inner loop: the unit tier only (no database, no processes; seconds)
test-fast: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

# the linter (ruff: errors, warnings, sorted imports), the formatter's check (ruff format) and
# the type checker (mypy over src/), run before the tests
lint: install
	$(BIN)/ruff check src tests benchmarks chaos
	$(BIN)/ruff format --check src tests benchmarks chaos
	$(BIN)/mypy

# the documentation site (mkdocs.yml, docs/) into site/; make test builds it too (tests/process/test_docs.py)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

bench: install
	$(BIN)/python benchmarks/throughput.py

# The chaos drain (RELIABILITY.md): SQLite (2 workers), then PostgreSQL (4 workers, 100,000
# jobs) on a cluster of its own, since the drain restarts it. Non-zero on any violation.
# CHAOS_BACKENDS="postgres" runs one; CHAOS_ARGS="--jobs 20000 --seed 7" is passed to each run.
.PHONY: chaos
CHAOS_BACKENDS ?= sqlite postgres
CHAOS_PG_PORT ?= 54339

chaos: install
	@status=0; for backend in $(CHAOS_BACKENDS); do \
		if [ "$$backend" = postgres ]; then \
			FLOODWAY_PG_PORT=$(CHAOS_PG_PORT) bash scripts/start-postgres.sh -- \
				$(BIN)/python chaos/run.py --backend postgres $(CHAOS_ARGS) || status=1; \
		else \
			$(BIN)/python chaos/run.py --backend $$backend $(CHAOS_ARGS) || status=1; \
		fi; \
	done; exit $$status

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info
