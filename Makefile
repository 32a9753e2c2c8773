# airflow_cloud_paas: everything installs from this repository's own files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
# Extras the test suite needs; `make install EXTRAS=all` for every cloud and service.
EXTRAS ?= test,spark,postgres,aws,docker,kubernetes,openstack,gcp,azure,condor,xcache

.PHONY: install test lint run bench clean lock

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

$(VENV)/.installed-$(EXTRAS): $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

lint: install
	$(BIN)/ruff check airflow_cloud_paas hooks operators sensors dags tests bench

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

run: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m airflow_cloud_paas.standalone

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Regenerate the lock (every extra resolved together) after changing dependencies.
lock: $(BIN)/activate
	$(BIN)/python .ci/lock.py

clean:
	rm -rf $(VENV) .airflow build *.egg-info
