# The two commands of the README: `make demo` and `make test`. Both create the
# virtual environment, install the project and its system packages when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: demo test venv system-deps data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

system-deps:
	@bash scripts/system-deps.sh

data: venv system-deps
	$(VENV)/bin/edgeqd data fetch >/dev/null

demo: data
	$(PY) -m edgeqd.demo

test: data
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf demo_out build *.egg-info .pytest_cache
