# The two commands of the README. Both create/update .venv first.
#   make run                 # local pipeline on MovieLens 100K (TFDS, needs internet)
#   make run DATA=../shared/datasets/ml-100k   # offline, from a GroupLens folder
#   make test                # the test suite (what CI runs)
DATA ?= tfds:movielens/100k-ratings
SPLIT ?= random
OUTPUT_DIR ?= tfx_output
ARGS ?=
PY := .venv/bin/python
# pytest-xdist workers for `make test` (0: one process). Files are the unit of
# distribution (--dist loadfile), so module-scoped fixtures are built once.
TEST_WORKERS ?= 2

.PHONY: venv run test test-fast clean

venv:
	@bash scripts/ensure_venv.sh

run: venv
	$(PY) local_runner.py --data "$(DATA)" --split "$(SPLIT)" --output-dir "$(OUTPUT_DIR)" $(ARGS)

test: venv
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 $(ARGS)

# Unit tests only (skips the slow end-to-end pipeline runs).
test-fast: venv
	$(PY) -m pytest -q -m "not slow" $(ARGS)

clean:
	rm -rf tfx_output .pytest_cache
