# The course in two commands: `make course` (build everything, run every notebook) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.uclser-installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
export MPLBACKEND := Agg

.PHONY: install course test lab bench clean

# create .venv if missing and install the library with its dev extra (re-run when pyproject.toml changes)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the embedded course dataset and its features, then every notebook executed headless (copies in build/)
course: $(STAMP)
	$(PY) -m uclser_lib extract
	mkdir -p build
	for nb in $(NOTEBOOKS); do \
	  $(PY) -m jupyter nbconvert --to notebook --execute "$$nb" --output-dir build \
	    --ExecutePreprocessor.timeout=-1 || exit 1; \
	done

# unit tests, then every notebook under nbval, all in smoke mode (tiny dataset, short runs)
test: $(STAMP)
	UCLSER_SMOKE=1 $(PY) -m pytest tests $(NOTEBOOKS) --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf build
