# seg_node: every target brings up .venv itself (PyPI wheels only, no apt ROS needed).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ISOLATED := scripts/isolated.sh

.PHONY: setup setup-train test test-matrix lint demo bench clean

# Node + tests (ROS 2 wheels, ONNX Runtime, OpenCV, rosbags).
setup: $(VENV)/.node-installed
$(VENV)/.node-installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[pypi,test,foxglove]'
	touch $@

# Adds torch/torchvision (installed from the local wheel cache on this machine kind).
setup-train: $(VENV)/.train-installed
$(VENV)/.train-installed: $(VENV)/.node-installed
	$(PIP) install -q --disable-pip-version-check -e '.[pypi,test,train]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check seg_node test launch bench demo

# DDS tests run in a private network namespace when we are root (see scripts/isolated.sh).
# The fleet extra (Ray) is for the fleet tests: make test installs it, make demo does not need it.
test: $(VENV)/.fleet-installed $(VENV)/.reference-installed lint
	$(ISOLATED) $(PY) -m pytest -q test

# The distro rows of test/matrix/ (Humble-, Jazzy-, Kilted-like Pythons, numpy, OpenCV, ROS wheels),
# each in its own venv under .matrix/: ROWS="jazzy humble" picks rows.
test-matrix:
	scripts/test_matrix.sh $(ROWS)

# Two cameras at 30 Hz through the node for 30 minutes (a 1-minute run is part of make test).
.PHONY: soak
soak: setup
	$(ISOLATED) $(PY) -m pytest -q test -m soak --soak-minutes 30

# The model is built outside the DDS sandbox: its only network use is fetching ImageNet weights.
# The clock starts before the install: a first make demo trains as many epochs as let the whole
# of it, install included, end within 15 minutes (seg_node.training.demo_model --budget-minutes).
# The check for a built model imports no torch (that alone takes 3-9 s).
DEMO_MODEL_MISSING := $(PY) -c 'import sys; from seg_node.model.file import DEMO_MODEL, models_dir; \
	sys.exit((models_dir() / DEMO_MODEL).is_file())'
demo:
	@started=$$(date +%s) && $(MAKE) --no-print-directory setup-train && \
	  if $(DEMO_MODEL_MISSING); then $(PY) -m seg_node.training.demo_model --started-at $$started; fi
	$(ISOLATED) $(PY) -m demo.run

# DDS benchmarks against the baseline node plus engine micro-benchmarks: out/bench/, BENCHMARKS.md.
bench: setup-train
	$(ISOLATED) $(PY) -m bench.run

# Issue #16's one GPU run (bench/gpu.sh): its own venv and installs, the gpu tests, CPU vs CUDA vs
# TensorRT engine times, the TensorRT cache, fp16 agreement, the node over DDS -> out/gpu/ (or $$OUT).
# GPU_BENCH_DRY_RUN=1 checks the whole script on this CPU-only machine with .venv at toy sizes.
.PHONY: bench-gpu
bench-gpu:
	bash bench/gpu.sh

# Fleet labelling on a local Ray cluster (bench/fleet.py): seg_bag label bag after bag vs 1 and 2
# Ray workers, tiny model and ResNet50 -> out/bench/fleet.json; figures go into BENCHMARKS.md by hand.
.PHONY: bench-fleet
bench-fleet: $(VENV)/.fleet-installed
	$(PY) -m bench.fleet
$(VENV)/.fleet-installed: $(VENV)/.train-installed
	$(PIP) install -q --disable-pip-version-check -e '.[pypi,test,train,fleet]'
	touch $@

# CPU time per frame of each seg_export --pretrained model at its input size (random weights):
# out/bench/pretrained_models.json; the figures go into README "Models" by hand.
.PHONY: bench-pretrained
bench-pretrained: setup-train
	$(PY) -m bench.pretrained_models

# mmsegmentation, the reference of the converted Cityscapes models (test/test_pretrained.py). Without
# their dependencies: mmengine and mmcv-lite require opencv-python, a second cv2 beside
# opencv-python-headless; the reference extra lists what they really import.
$(VENV)/.reference-installed: $(VENV)/.train-installed
	$(PIP) install -q --disable-pip-version-check --no-deps mmsegmentation==1.2.2 mmengine==0.10.7 mmcv-lite==2.1.0
	$(PIP) install -q --disable-pip-version-check -e '.[pypi,test,train,reference]'
	touch $@

clean:
	rm -rf out build install log .pytest_cache
