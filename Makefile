# Set-up and test targets. Use inside a virtual environment (python3 -m venv .venv && . .venv/bin/activate).
PYTHON ?= python
SHARED_DATA := $(abspath ../shared/data)
# Tests fetch real Omniglot through the harness's mirror path when ../shared/data exists.
export HARNESS_DATA_MIRROR ?= $(if $(wildcard $(SHARED_DATA)/omniglot),$(SHARED_DATA),)

.PHONY: install test perf

install:  ## the harness, its dependencies, and learn2learn 0.2.0 built from source for Python 3.11
	$(PYTHON) -m pip install -e '.[test]'
	$(PYTHON) -m pip install 'cython>=3' 'setuptools>=77'
	$(PYTHON) -c "import learn2learn" 2>/dev/null || \
	  $(PYTHON) -m pip install --no-deps --no-build-isolation -C--global-option=build_ext learn2learn==0.2.0

test:  ## lint and format check; committed tables and site regenerate unchanged from committed evidence; the test suite (Omniglot tests use $$HARNESS_DATA_MIRROR; SLURM tests need a running cluster)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m harness.cli table results/tables/*.yaml
	$(PYTHON) -m harness.cli site
	@git status --porcelain -- results/ | { ! grep . ; } || { echo "harness table changed results/ (above): commit the regenerated files or fix the change"; exit 1; }
	$(PYTHON) -m pytest -q -ra --durations=25
