# Every target creates .venv if it is missing and installs the project into it.
# torch is pinned to the CPU build these machines carry (a bare `torch` pulls CUDA).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.farmer-installed
TORCH  := torch==2.13.0
PYTEST_ARGS ?=
LAB_ARGS ?=

.PHONY: install test test-fast app docs lab notebooks clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	@touch $(STAMP)

install: $(STAMP)

# The whole suite: the documentation site built strictly (tests/test_docs.py opens it in chromium),
# unit tests, browser tests, then the notebooks (nbmake) when there are any.
test: $(STAMP) docs
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		$(BIN)/python -m pytest --nbmake --nbmake-timeout=600 notebooks; fi

# Unit tests without the slow ones.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

# The Gradio app on the shipped models: http://127.0.0.1:7860 (APP_ARGS="--checkpoint DIR --port N")
APP_ARGS ?=
app: $(STAMP)
	$(BIN)/python -m app $(APP_ARGS)

# The documentation site, strictly (a broken link, a missing page or an unresolved reference fails it):
# build/site/index.html. The notebooks are rendered with their stored outputs, not executed.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --quiet
	@echo "documentation site: build/site/index.html"

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
	rm -rf $(VENV) .pytest_cache build/site
