# Two commands for a fresh clone: `make demo` (train + evaluate on the embedded MovieLens-100K) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.qrec-installed

.PHONY: demo test results install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	# MovieLens-100K ships inside the recbole wheel; installed without its dependencies, as a data package only.
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps recbole==1.2.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/qrec demo

test: $(STAMP)
	QREC_DATA_DIR=$${QREC_DATA_DIR:-$(abspath ../shared/data)} $(BIN)/python -m pytest -q -p no:cacheprovider

results: $(STAMP)
	$(BIN)/qrec report

clean:
	rm -rf $(VENV) build src/*.egg-info
