# AsymSeg: two commands do all the set-up on a fresh machine.
#   make test   bootstrap .venv and run the test suite
#   make demo   bootstrap .venv and run the demo on embedded phantom cases
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.asymseg-installed
DEMO_OUT ?= demo-output
# torch is pinned for development; users get whatever their platform (or Slicer's PyTorch extension) provides.
TORCH_DEV := torch==2.13.0

.PHONY: test demo venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_DEV)"
	$(PY) -m pip install --quiet -e ".[test,slicer,bench,yaml]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q --durations=25 Testing

demo: $(STAMP)
	$(PY) -m asymseg demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
