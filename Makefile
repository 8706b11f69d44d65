# tokdiag: `make report` runs the notebook suite into reports/; `make test` runs the tests.
# Both create .venv and install everything on a fresh machine (Python 3.11+ needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tokdiag-installed
JOBS   ?= 2

.PHONY: setup report test bench browser clean

$(STAMP): pyproject.toml tokdiag/_speedups.c tokdiag/_heapwalk.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[aworld,dev,service,cluster,native,lab]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tokdiag)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

# Headless Chromium for the HTML-report browser test (Debian package; needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

report: setup
	$(BIN)/tokdiag batch plans/default.yaml --jobs $(JOBS) -o reports
	@echo "open reports/index.html"

# Lint and type-check first: a finding fails the target before any test runs.
test: setup browser
	$(BIN)/ruff check tokdiag tokdiag_workloads tests bench
	$(BIN)/mypy tokdiag
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf reports test-artifacts .pytest_cache
