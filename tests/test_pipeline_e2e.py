"""End-to-end runs of the local pipeline on generated data (slow)."""
import glob
import json
import os

import pytest

import local_runner
from tests import synthetic_data




def _summary_counts(out):
  counts = {}
  for line in out.splitlines():
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and parts[1].isdigit() and parts[0].strip() in (
        "train", "eval", "catalogue (movies)"):
      counts[parts[0].strip()] = int(parts[1])
  return counts


def _run(*args):
  return local_runner.main(list(args))


@pytest.mark.slow
def test_ingest_validate_transform_then_cache(tmp_path, restore_logging, capsys):
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  out = str(tmp_path / "out")
  assert _run("--data", data, "--output-dir", out,
              "--no-retrieval", "--no-ranking") == 0
  first = capsys.readouterr().out
  assert "▶ MovieLensExampleGen" in first and "✔ Transform done" in first
  assert os.path.exists(os.path.join(out, "metadata.db"))
  assert glob.glob(os.path.join(out, "logs", "run-*.log"))
  vocab = glob.glob(os.path.join(out, "tfx", "Transform", "transform_graph", "*",
                                 "transform_fn", "assets", "movie_id"))
  assert vocab, "Transform wrote no movie_id vocabulary"
  train = glob.glob(os.path.join(out, "tfx", "Transform", "transformed_examples",
                                 "*", "Split-train", "*"))
  assert train
  # Summary read back from MLMD: 60 users x 25 ratings, 123 movies.
  assert "Validation: passed" in first
  counts = _summary_counts(first)
  assert counts["train"] + counts["eval"] == 1500
  assert counts["catalogue (movies)"] == 123

  # An unchanged re-run is served from the cache.
  assert _run("--data", data, "--output-dir", out,
              "--no-retrieval", "--no-ranking") == 0
  second = capsys.readouterr().out
  transform_line = next(l for l in second.splitlines() if "✔ Transform" in l)
  assert transform_line.endswith("(cached)")
  assert _summary_counts(second) == counts  # the summary reads cached runs too


@pytest.mark.slow
def test_anomalous_data_stops_at_the_gate(tmp_path, restore_logging, capsys):
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  with open(os.path.join(data, "u.data"), "a") as f:
    f.write("1\t5\t7\t880000000\n")  # a rating of 7: parseable, but invalid
  out = str(tmp_path / "out")
  assert _run("--data", data, "--output-dir", out,
              "--no-retrieval", "--no-ranking") == 1
  captured = capsys.readouterr()
  assert "ValidationGate" in captured.err
  assert "user_rating" in captured.err
  assert "Full log:" in captured.err
  assert "▶ Transform" not in captured.out
  assert not glob.glob(os.path.join(out, "tfx", "Transform", "*"))


def _two_stage_metrics(out):
  """metrics.json of the newest TwoStageEvaluator run."""
  paths = glob.glob(os.path.join(out, "tfx", "TwoStageEvaluator", "evaluation", "*",
                                 "metrics.json"))
  assert paths, "TwoStageEvaluator wrote no metrics.json"
  with open(max(paths, key=os.path.getmtime)) as f:
    return json.load(f)


def _versions(path):
  return sorted(d for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


@pytest.mark.slow
def test_full_pipeline_trains_blesses_and_pushes_both_models(
    tmp_path, restore_logging, capsys):
  """Both branches on planted data; a worse retraining pushes nothing."""
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data, num_users=120, num_movies=360,
                              ratings_per_user=30)
  out = str(tmp_path / "out")
  # Small data: trainer settings of synthetic_data (defaults suit ml-100k).
  assert _run("--data", data, "--output-dir", out,
              "--ranking-config", json.dumps(synthetic_data.E2E_RANKING_CONFIG),
              "--retrieval-config",
              json.dumps(synthetic_data.E2E_RETRIEVAL_CONFIG)) == 0
  first = capsys.readouterr().out
  serving = os.path.join(out, "serving")
  retrieval_versions = _versions(os.path.join(serving, "retrieval"))
  ranking_versions = _versions(os.path.join(serving, "ranking"))
  assert len(retrieval_versions) == 1, first
  assert len(ranking_versions) == 1, first
  pushed = os.path.join(serving, "retrieval", retrieval_versions[0])
  assert os.path.exists(os.path.join(pushed, "saved_model.pb"))
  assert os.listdir(os.path.join(pushed, "assets.extra"))
  assert "Retrieval:" in first and "most-popular" in first
  assert "root_mean_squared_error" in first and "user+item bias" in first
  assert first.count("blessed: yes") == 2
  assert first.count("warm start: no base model") == 2  # nothing blessed before
  # The ranking model was blessed by the two-stage top-10 (what `recommend`
  # returns), and the RankingPusher followed that blessing.
  two_stage = _two_stage_metrics(out)
  assert set(two_stage["rows"]) == {"two_stage", "retrieval_only", "most_popular",
                                    "ease"}
  assert two_stage["blessing"]["blessed"] and two_stage["rating"] is not None
  assert "Two-stage top-10 (what recommend returns" in first
  assert "TFMA RMSE thresholds passed: yes" in first
  # BatchRecommender: top 50 of every (known) user with the pushed models.
  assert "Batch recommendations: 120 users, top 50 (6000 rows" in first, first
  [batch] = glob.glob(os.path.join(out, "tfx", "BatchRecommender", "recommendations",
                                   "*", "Split-recommendations", "*.parquet"))
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  table = pq.read_table(batch)
  assert table.num_rows == 6000
  assert len(set(table.column("user_id").to_pylist())) == 120

  # Retrain a much worse model (untrained, warm start off: it would restore
  # the blessed weights): not blessed against the last blessed model,
  # nothing pushed, the served versions stay.
  assert _run("--data", data, "--output-dir", out, "--force",
              "--retrieval-epochs", "0", "--ranking-epochs", "0",
              "--retrieval-config", json.dumps(dict(
                  synthetic_data.E2E_RETRIEVAL_CONFIG, epochs=0, warm_start=False)),
              "--ranking-config", json.dumps(
                  dict(synthetic_data.E2E_RANKING_CONFIG, warm_start=False))) == 0
  second = capsys.readouterr().out
  assert "blessed: no" in second
  assert "Batch recommendations: none (no model was pushed in this run" in second
  assert second.count("warm start disabled") == 2
  assert _versions(os.path.join(serving, "retrieval")) == retrieval_versions
  assert _versions(os.path.join(serving, "ranking")) == ranking_versions
  assert not _two_stage_metrics(out)["blessing"]["blessed"]  # so nothing pushed
