"""Scheduled retraining on spans, end to end through the local pipeline (slow).

One pipeline output directory lives through the module: span 1 is trained,
blessed and pushed once (the fixture); then each test drops a span 2 of its
own beside it and runs the pipeline on the ``span-{SPAN}`` pattern (the
newest span by default):

* a drifted span 2 (ratings turned upside down: valid values, so only the
  drift check can tell) stops at the DriftGate;
* a corrupt span 2 (a rating of 7) stops at the ValidationGate;
* a good span 2 (new ratings of the same planted tastes) runs through; a new
  version is pushed exactly when the run blessed the model.

Failing runs leave the served versions alone. Data and epochs are small so
a full run takes ~2-3 minutes.
"""
import os
import shutil

import pytest

import local_runner
from pipeline import configs
from pipeline import ranking_branch
from pipeline import retrieval_branch
from runners import run_report
from tests import synthetic_data
from tests.conftest import logging_restored

DATA = dict(num_users=120, num_movies=360, ratings_per_user=30)
# Small data: small ranking batches, more epochs (as test_pipeline_e2e).
RANKING_CONFIG = '{"batch_size": 32, "learning_rate": 0.003, "epochs": 10}'
STAGES = ("retrieval", "ranking")


def _versions(path):
  return (sorted(d for d in os.listdir(path) if d.isdigit())
          if os.path.isdir(path) else [])


def _served(out):
  return {s: _versions(os.path.join(out, "serving", s)) for s in STAGES}


def _run(pattern, out):
  return local_runner.main(["--data", pattern, "--output-dir", out,
                            "--ranking-config", RANKING_CONFIG])


# The evaluator whose blessing each stage's Pusher follows: for ranking that
# is the TwoStageEvaluator (TFMA's RankingEvaluator blessing is only one of
# its inputs), so a TFMA blessing alone does not mean a push.
PUSH_BLESSINGS = {"retrieval": retrieval_branch.EVALUATOR_ID,
                  "ranking": ranking_branch.TWO_STAGE_EVALUATOR_ID}


def _blessed(out):
  """{stage: blessed (bool)} of the newest run, read from MLMD."""
  outputs = run_report.latest_run_outputs(
      os.path.join(out, "metadata.db"), configs.PIPELINE_NAME)
  blessed = {}
  for stage in STAGES:
    node = outputs.get(PUSH_BLESSINGS[stage], {})
    [blessing] = node["blessing"]
    blessed[stage] = blessing.custom_properties["blessed"].int_value == 1
  return blessed


@pytest.fixture(scope="module")
def span1(tmp_path_factory):
  """Span 1 trained, blessed and pushed; returns (pattern, out, served)."""
  root = tmp_path_factory.mktemp("spans")
  pattern = synthetic_data.write_spans(str(root / "data"), (1,), **DATA)
  out = str(root / "out")
  with logging_restored():
    assert _run(pattern, out) == 0
  served = _served(out)
  assert all(len(v) == 1 for v in served.values()), served
  return pattern, out, served


@pytest.fixture
def span2(span1):
  """A fresh span-2 folder (the test fills it), removed afterwards."""
  pattern, _, _ = span1
  path = pattern.replace("{SPAN}", "2")
  shutil.rmtree(path, ignore_errors=True)
  yield path
  shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_drifted_span_stops_at_the_drift_gate(span1, span2, restore_logging,
                                              capsys):
  pattern, out, served = span1
  synthetic_data.write_ml100k(span2, seed=2, **DATA)
  synthetic_data.invert_ratings(span2)
  assert _run(pattern, out) == 1
  captured = capsys.readouterr()
  assert "FAILED in component DriftGate" in captured.err, captured.err
  assert "feature 'user_rating': Jensen-Shannon distance" in captured.err
  assert "span 2 vs span 1" in captured.err
  assert "✔ ValidationGate" in captured.out  # the data itself was valid
  assert "▶ Transform" not in captured.out
  assert _served(out) == served


@pytest.mark.slow
def test_corrupt_span_stops_at_the_validation_gate(span1, span2,
                                                   restore_logging,
                                                   capsys):
  pattern, out, served = span1
  synthetic_data.write_ml100k(span2, seed=2, **DATA)
  with open(os.path.join(span2, "u.data"), "a") as f:
    f.write("1\t5\t7\t880000000\n")  # a rating of 7: parseable, but invalid
  assert _run(pattern, out) == 1
  captured = capsys.readouterr()
  assert "FAILED in component ValidationGate" in captured.err, captured.err
  assert "user_rating" in captured.err
  assert "▶ DriftGate" not in captured.out
  assert "▶ Transform" not in captured.out
  assert _served(out) == served


@pytest.mark.slow
def test_good_span_retrains_and_pushes_only_if_blessed(span1, span2,
                                                       restore_logging,
                                                       capsys):
  pattern, out, served = span1
  synthetic_data.write_ml100k(span2, seed=2, **DATA)
  assert _run(pattern, out) == 0
  output = capsys.readouterr().out
  assert "✔ DriftGate" in output and "✔ Transform" in output
  assert "(span 2)" in output  # the summary's data line: the span read
  assert "spans read: 2" in output  # the default window: the newest span
  assert "Drift: span 2 vs span 1: passed (" in output
  # Both trainers start from span 1's blessed models.
  assert output.count("warm start from the latest blessed model: ") == 2, output
  blessed = _blessed(out)
  after = _served(out)
  for stage in STAGES:
    expected = len(served[stage]) + (1 if blessed[stage] else 0)
    assert len(after[stage]) == expected, (stage, blessed, after, output)
    assert after[stage][:len(served[stage])] == served[stage]
