"""Pytest set-up: every test goes through `common` (TF_USE_LEGACY_KERAS=1)."""
import contextlib
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import

import pytest  # noqa: E402  pylint: disable=g-import-not-at-top

from tests import synthetic_data  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.fixture
def ml100k_dir(tmp_path):
  """A small GroupLens-format ml-100k folder with planted structure."""
  path = tmp_path / "ml-100k"
  synthetic_data.write_ml100k(str(path))
  return str(path)


@pytest.fixture(scope="session")
def tiny_transformed(tmp_path_factory):
  """A real Transform output on planted data (see tests/tft_fixture.py)."""
  from tests import tft_fixture  # pylint: disable=g-import-not-at-top
  return tft_fixture.build(str(tmp_path_factory.mktemp("tft")))


def _fn_args(tiny, serving_dir, cfg, steps=None):
  from tfx.components.trainer.fn_args_utils import FnArgs  # pylint: disable=g-import-not-at-top
  return FnArgs(
      train_files=[tiny["train_pattern"]], eval_files=[tiny["eval_pattern"]],
      transform_output=tiny["tft_dir"], serving_model_dir=serving_dir,
      model_run_dir=None, train_steps=steps, eval_steps=None, custom_config=cfg)


@pytest.fixture(scope="session")
def models(tiny_transformed, tmp_path_factory):
  """Trained retrieval and ranking SavedModels (not yet in a serving layout).

  Session-wide: the serving, CLI, version and batch tests only copy them.
  """
  from trainer_modules import ranking  # pylint: disable=g-import-not-at-top
  from trainer_modules import retrieval  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp("serving_models"))
  catalogue_uri = os.path.dirname(os.path.dirname(tiny_transformed["catalogue_pattern"]))
  retrieval.run_fn(_fn_args(
      tiny_transformed, os.path.join(root, "retrieval"),
      {"epochs": 2, "batch_size": 256, "verbose": 0, "seed": 1,
       "catalogue_uri": catalogue_uri}, steps=80))
  ranking.run_fn(_fn_args(
      tiny_transformed, os.path.join(root, "ranking"),
      {"epochs": 10, "batch_size": 32, "learning_rate": 0.003, "seed": 1}))
  return {"retrieval": os.path.join(root, "retrieval"),
          "ranking": os.path.join(root, "ranking")}


@contextlib.contextmanager
def logging_restored():
  """Puts back the handlers and levels a pipeline run changes.

  local_runner sends TF/Beam/absl logs to a file per run and tensorboard
  lowers absl's level mid-run; later tests must not inherit either.
  """
  names = ("", "absl", "tensorflow", "apache_beam")
  saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
               logging.getLogger(n).propagate) for n in names}
  try:
    yield
  finally:
    for name, (handlers, level, propagate) in saved.items():
      lg = logging.getLogger(name)
      lg.handlers[:] = handlers
      lg.setLevel(level)
      lg.propagate = propagate


@pytest.fixture
def restore_logging():
  with logging_restored():
    yield


# The longest files first (seconds on 2 cores, measured with --durations),
# so that the two pytest-xdist workers of `make test` finish together: with
# --dist loadfile --no-loadscope-reorder (Makefile) a worker takes the next
# file in collection order when it runs dry, and xdist's default order
# (most tests first) left the longest end-to-end files for last and one
# worker idle for the final minute. Files not listed keep their order.
LONGEST_FILES_FIRST = (
    "test_kubeflow_local_run.py",  # 260 s: two runs of the compiled spec
    "test_pipeline_spans_e2e.py",  # 140 s
    "test_pipeline_e2e.py",        # 125 s
    "test_report.py",              # 120 s
    "test_serving_versions.py",    # 80 s
    "test_serving_cli.py",         # 80 s
    "test_portable_runner.py",     # 70 s
    "test_local_runner_cli.py",    # 55 s
    "test_distribution_strategy.py",
    "test_push_recovery_e2e.py",
    "test_ranking.py",
    "test_validation_gate.py",
    "test_implicit_e2e.py",
    "test_serving.py",
    "test_tuning.py",
)


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable
