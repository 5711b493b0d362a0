# jiayuan — `make demo` runs the service with the simulated community, `make test` checks it.
# Both install what they need: Debian's mosquitto (and victoria-metrics for the sink tests) and
# a virtual environment with the package and its tools.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := mosquitto mosquitto-clients victoria-metrics chromium fonts-wqy-microhei postgresql gcc python3-dev faketime

.PHONY: demo test bench lint deps venv clean

demo: deps venv
	$(PY) -m devtools.demo $(if $(COMMUNITIES),--communities $(COMMUNITIES)) $(if $(INSTANCES),--instances $(INSTANCES))

# The tests mostly wait (a child service starting, a broker, PostgreSQL, a condition polled):
# pytest-xdist runs them in TEST_WORKERS processes, each with its own ports, temporary
# directories and throwaway PostgreSQL (README.md, Tests). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4

test: deps venv lint
	$(PY) -m pytest -q -p no:cacheprovider $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: deps venv
	$(PY) -m bench

deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The ingest path's own per-message code compiled with mypyc (devtools/compile.py: again
# whenever its source is newer; pure Python where it is not compiled).
venv: $(VENV)/.installed
	$(PY) -m devtools.compile

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

clean:
	-test -x $(PY) && $(PY) -m devtools.compile --clean
	rm -rf $(VENV) data artifacts build *.egg-info .mypy_cache .ruff_cache .import_linter_cache
