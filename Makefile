# The course: `make course` (build everything, run every notebook), `make lab` (JupyterLab); `make test` checks it.
# The environment is locked: requirements.lock (made by `make lock`) pins every package with its hashes,
# and `make install` makes .venv exactly that (uv pip sync), then adds this library (editable).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
LOCK   := requirements.lock
STAMP  := $(VENV)/.uclser-installed
# what course/test/lab/bench need first: the synced .venv (in an environment of your own, e.g. conda's:
# `make test PY=python ENV_READY=`)
ENV_READY ?= $(STAMP)
# a package's version in the lock: $(call locked,NAME); the uv that installs is the one the lock pins
locked = $(shell sed -n 's/^$(1)==\([^ ]*\).*/\1/p' $(LOCK))
UV_VERSION := $(call locked,uv)
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
export MPLBACKEND := Agg
# ...but a notebook's kernel draws its figures inline: under Agg the executed copies would hold no figure
INLINE := MPLBACKEND=module://matplotlib_inline.backend_inline
# the browser tests (tests/test_browser.py) run where Debian's Chromium and its driver are installed
# (`.ci/run` installs them); elsewhere they are skipped, and `make test` builds no site for them
export UCLSER_CHROMIUM ?= $(firstword $(wildcard /usr/bin/chromium /usr/bin/chromium-browser))
export UCLSER_CHROMEDRIVER ?= $(firstword $(wildcard /usr/bin/chromedriver))
BROWSER_SITE := $(if $(and $(UCLSER_CHROMIUM),$(UCLSER_CHROMEDRIVER)),site-smoke)
LIBRARY := $(wildcard uclser_lib/*.py uclser_lib/*/*.py)
SMOKE_RUNS := $(patsubst notebooks/%,build/smoke/%,$(NOTEBOOKS))

.PHONY: install install-cpu lock course time-course test test-fast lint format lab bench clean site site-smoke site-vendor screenshots

$(UV):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q "uv==$(UV_VERSION)"

# .venv == the lock (packages not in it are removed), then uclser_lib itself, editable, without dependencies;
# `make install` always re-syncs (a second or two when nothing changed); test/course do when the lock changes
define SYNC
	$(UV) pip sync --python $(PY) --require-hashes $(LOCK)
	$(UV) pip install --python $(PY) --no-deps --no-build-isolation -e .
	touch $(STAMP)
endef

$(STAMP): $(LOCK) pyproject.toml | $(UV)
	$(SYNC)

install: | $(UV)
	$(SYNC)

# Linux laptops without an NVIDIA GPU: the same lock, but torch/torchaudio as PyTorch's CPU builds (about 1 GB
# instead of 5) from PyTorch's own index, and no CUDA libraries. Untested here: that index is not reachable
# from the machines this course is developed on.
install-cpu: | $(UV)
	awk '/^[^ ]/ {skip = ($$0 ~ /^(torch|torchaudio|triton|nvidia-[^ =]*|cuda-[^ =]*)==/)} !skip' $(LOCK) > $(VENV)/requirements-cpu.lock
	$(UV) pip sync --python $(PY) --require-hashes $(VENV)/requirements-cpu.lock
	$(UV) pip install --python $(PY) --no-deps --torch-backend cpu "torch==$(call locked,torch)" "torchaudio==$(call locked,torchaudio)"
	$(UV) pip install --python $(PY) --no-deps --no-build-isolation -e .
	touch $(STAMP)

# re-resolve pyproject.toml's dependencies (all platforms, Python >= 3.11, one version per package) into the lock
lock: | $(UV)
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 --fork-strategy fewest \
	  --generate-hashes --custom-compile-command "make lock" -o $(LOCK)

# the embedded course dataset and its features, then every notebook executed headless (copies in build/)
course: $(ENV_READY)
	$(PY) -m uclser_lib extract
	mkdir -p build
	for nb in $(NOTEBOOKS); do \
	  $(INLINE) $(PY) -m jupyter nbconvert --to notebook --execute "$$nb" --output-dir build \
	    --ExecutePreprocessor.timeout=-1 || exit 1; \
	done

# `make course` timed: extract, then every notebook in full mode, each step's wall and CPU seconds, with an empty
# embedding cache as in a fresh clone; prints the table and writes it into bench/RESULTS.md (its timing section)
time-course: $(ENV_READY)
	$(PY) bench/time_notebooks.py --extract

# ruff: lint (pyflakes, pycodestyle, import order, bugbear) and formatting, of .py files and notebooks
lint: $(ENV_READY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(ENV_READY)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# the lint, the unit tests (with the browser tests: JupyterLab and the smoke-mode site in Chromium), then every
# notebook, all in smoke mode (tiny dataset, short runs). Where the smoke-mode site is built, its runs of the
# notebooks (nbconvert, which stops at any cell's error) are their test, and test_browser.py checks each run
# (one pytest item per notebook); elsewhere, or with `make test NBVAL=1`, nbval runs every notebook.
NBVAL_NOTEBOOKS = $(if $(filter 1,$(NBVAL)),$(NOTEBOOKS),$(if $(BROWSER_SITE),,$(NOTEBOOKS)))
test: lint $(BROWSER_SITE)
	UCLSER_SMOKE=1 UCLSER_SITE_DIR=build/site-smoke/html $(if $(BROWSER_SITE),UCLSER_SMOKE_RUNS=build/smoke) \
	  $(PY) -m pytest tests $(NBVAL_NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider

# the fast lane while changing a module: the tests not marked slow (no lint, no notebook runs, no end-to-end
# command line, subprocesses, browser or install), in smoke mode; `make test` stays the full suite
test-fast: $(ENV_READY)
	UCLSER_SMOKE=1 UCLSER_SITE_DIR=build/site-smoke/html $(PY) -m pytest tests -m "not slow" -p no:cacheprovider

# the course's website (Sphinx + MyST-NB, offline), from the executed notebooks of `make course` -> build/site/html
site: $(ENV_READY)
	$(PY) site/build.py

# the same site from smoke-mode executions (build/smoke/*.ipynb, remade when a notebook or the library changes),
# for the browser tests -> build/site-smoke/html
build/smoke/%.ipynb: notebooks/%.ipynb $(LIBRARY) | $(ENV_READY)
	mkdir -p build/smoke
	UCLSER_SMOKE=1 $(INLINE) $(PY) -m jupyter nbconvert --to notebook --execute $< --output-dir build/smoke \
	  --ExecutePreprocessor.timeout=600

site-smoke: $(SMOKE_RUNS)
	$(PY) site/build.py --executed build/smoke --site build/site-smoke

# the site's JavaScript (widgets' HTML manager, MathJax) from npm into site/_static/vendor (committed); needs npm
site-vendor: $(ENV_READY)
	$(PY) site/vendor.py

# screenshots of JupyterLab running notebook 02 and of the site's pages, into figures/ (browser-*.png)
screenshots: $(ENV_READY)
	UCLSER_SMOKE=1 UCLSER_SCREENSHOTS=figures UCLSER_SITE_DIR=$(or $(SITE_DIR),build/site/html) \
	  $(PY) -m pytest tests/test_browser.py -p no:cacheprovider

lab: $(ENV_READY)
	$(PY) -m jupyter lab notebooks

bench: $(ENV_READY)
	$(PY) -m bench

clean:
	rm -rf build
