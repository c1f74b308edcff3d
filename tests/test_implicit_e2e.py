"""Implicit feedback end to end: a data config with `implicit: true` (no rating
column) trains, evaluates and pushes BOTH stages; the ranking model is blessed
by the two-stage top-k alone (no TFMA evaluator, no rating check)."""
import glob
import json
import os

import pytest

import local_runner
from tests import synthetic_data


def _versions(path):
  return sorted(d for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _write_implicit(root):
  """The planted ratings as a views log (user, item, ts): no rating column."""
  data = synthetic_data.make_ratings(num_users=120, num_movies=360,
                                     ratings_per_user=30)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "views.csv"), "w") as f:
    f.write("user,item,ts\n")
    for u, m, _, t in data["ratings"]:
      f.write(f"u{u},m{m},{t}\n")
  config = os.path.join(root, "views.yaml")
  with open(config, "w") as f:
    f.write("implicit: true\ninteractions:\n  path: views.csv\n  columns:\n"
            "    user: user\n    item: item\n    timestamp: ts\n")
  return config


@pytest.mark.slow
def test_implicit_data_trains_evaluates_and_pushes_both_stages(
    tmp_path, restore_logging, capsys):
  config = _write_implicit(str(tmp_path / "data"))
  out = str(tmp_path / "out")
  assert local_runner.main([
      "--data-config", config, "--output-dir", out, "--no-batch-recommendations",
      "--ranking-config", json.dumps(synthetic_data.E2E_RANKING_CONFIG),
      "--retrieval-config", json.dumps(synthetic_data.E2E_RETRIEVAL_CONFIG),
  ]) == 0
  printed = capsys.readouterr().out
  root = os.path.join(out, "tfx")
  assert glob.glob(os.path.join(root, "RankingTrainer", "model", "*"))
  assert not os.path.exists(os.path.join(root, "RankingEvaluator"))  # no TFMA
  [metrics] = glob.glob(os.path.join(root, "TwoStageEvaluator", "evaluation", "*",
                                     "metrics.json"))
  with open(metrics) as f:
    m = json.load(f)
  assert m["rating"] is None and m["num_users"] > 100
  assert m["rows"]["two_stage"]["ndcg@10"] is not None
  assert "Two-stage top-10" in printed
  assert m["blessing"]["blessed"], m["blessing"]["message"]
  serving = os.path.join(out, "serving")
  assert len(_versions(os.path.join(serving, "retrieval"))) == 1, printed
  assert len(_versions(os.path.join(serving, "ranking"))) == 1, printed
