# Every target creates .venv if it is missing and installs the project into it.
# torch is pinned to the CPU build these machines carry (a bare `torch` pulls CUDA).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.farmer-installed
TORCH  := torch==2.13.0
PYTEST_ARGS ?=
LAB_ARGS ?=

.PHONY: install test test-fast app lab notebooks clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# The whole suite: unit tests, notebooks (nbmake) when there are any, browser tests.
test: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		$(BIN)/python -m pytest --nbmake --nbmake-timeout=600 notebooks; fi

# Unit tests without the slow ones.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

app: $(STAMP)
	@if [ -f app/__main__.py ]; then $(BIN)/python -m app; else \
		echo "The Gradio app is not built yet (see the open issue 'The Gradio app'); the library, CLI and tests are ready: make test"; exit 1; fi

# --allow-root only where it is needed (containers often run as root; Jupyter refuses otherwise)
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Re-run every teaching notebook top to bottom in a fresh kernel and save its outputs in place
# (do this after the shipped checkpoint changes, then commit the notebooks).
notebooks: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=600 --ExecutePreprocessor.store_widget_state=True \
		--ExecutePreprocessor.record_timing=False \
		notebooks/0*.ipynb
	@ls -l notebooks/0*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache
