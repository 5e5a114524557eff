# Every target creates .venv if it is missing and installs the project into it.
# torch is pinned to the CPU build these machines carry (a bare `torch` pulls CUDA).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.farmer-installed
TORCH  := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test test-fast app lab clean

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

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) .pytest_cache
