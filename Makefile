# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.genvs-installed
DEMO_DIR ?= outputs/demo
# 0.27-0.41 s a step on 2 cores with AVX512/AMX (bf16): 8-12 minutes in all; 0.48-0.53 s on a 2.1 GHz 2-core AMX Xeon
# (2026-12-06; the code of 2026-12-05 alike): about 15 minutes; 1.27 s on an AVX2-only CPU (fp32): 35 minutes.
# The silhouette rays (genvs-tiny's default since 2026-12-07) add about 10% a step: 14.6 minutes in all (0.45-0.54 s a
# step) on a 2-core AMD EPYC with AVX-512 and no AMX. At 1600 steps the samples beat a copy of the input on the cars
# (LPIPS 0.205 against 0.209); DEMO_STEPS=3200 (before the silhouette rays: 14.6 minutes on the fastest machine, about
# 27 on the slower) widened that to 0.193 on every one of three training seeds (docs/experiments.md).
DEMO_STEPS ?= 1600

.PHONY: demo test lint venv clean-demo docs-animation

venv: $(STAMP)

# torch comes first, pinned to the CPU-usable wheels on local disk; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]' -c constraints.txt
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/genvs-toy-data $(DEMO_DIR)/data --num-objects 200 --num-views 24 --resolution 64 --seed 0
	$(BIN)/ns-train genvs-tiny --data $(DEMO_DIR)/data --output-dir $(DEMO_DIR)/runs --experiment-name demo \
		--timestamp run --max-num-iterations $(DEMO_STEPS) --vis tensorboard
	$(BIN)/genvs-contact-sheet --load-config $(DEMO_DIR)/runs/demo/genvs-tiny/run/config.yml \
		--output $(DEMO_DIR)/contact_sheet.png
	@echo "demo: contact sheet (input | ground truth | NeRF RGB | diffusion sample) at $(DEMO_DIR)/contact_sheet.png"

# The README's header animation, from the demo checkpoint (run `make demo` first): a held-out car's input view, its
# autoregressive samples and the NeRF RGB along a spiral, as genvs-sample writes them (turntable.gif).
docs-animation: $(STAMP)
	$(BIN)/genvs-sample --load-config $(DEMO_DIR)/runs/demo/genvs-tiny/run/config.yml --output-dir $(DEMO_DIR)/turntable \
		--object 2 --num-frames 24 --formats gif --video-scale 3 --fps 8
	cp $(DEMO_DIR)/turntable/turntable.gif docs/images/turntable.gif

test: $(STAMP)
	@$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check genvs_ns tests scripts
	$(BIN)/ruff format --check genvs_ns tests scripts

clean-demo:
	rm -rf $(DEMO_DIR)
