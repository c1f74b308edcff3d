"""The ml-25m-format generator of the scale benchmark: shape, format, seed."""
import csv
import filecmp
import json
import os

import numpy as np
import pytest

from benchmarks import synthetic_ml25m as synth
from components.ingestion import sources

N = 30_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synth") / "a")
  # Small chunks: several chunks of users, as at 25M.
  summary = synth.generate(N, out, seed=3, chunk_ratings=4_000)
  r = np.loadtxt(os.path.join(out, "ratings.csv"), delimiter=",",
                 skiprows=1)
  return out, summary, r


def test_sizes_follow_movielens():
  assert synth.num_users(1_000_000) == 6_700
  assert 19_000 < synth.num_users(3_000_000) < 21_000
  assert 150_000 < synth.num_users(synth.ML25M["ratings"]) < 170_000
  assert 4_400 < synth.num_movies(1_000_000) < 4_600
  assert 9_000 < synth.num_movies(3_000_000) < 10_000
  assert 56_000 < synth.num_movies(synth.ML25M["ratings"]) < 62_000


def test_ratings_shape(generated):
  out, summary, r = generated
  users, movies, rating, ts = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
  assert len(r) == N == summary["ratings"]
  assert summary["users"] == synth.num_users(N)
  assert summary["movies"] == synth.num_movies(N)
  per_user = np.bincount(users.astype(int))[1:]
  assert len(per_user) == summary["users"] and per_user.min() >= 20
  assert per_user.max() > 4 * np.median(per_user)  # heavy-tailed activity
  pairs = users.astype(np.int64) * 10**7 + movies.astype(np.int64)
  assert len(np.unique(pairs)) == N  # one rating per (user, movie)
  assert np.all(np.diff(pairs) > 0)  # sorted by user, then movie
  assert set(np.unique(rating)) <= {x / 2 for x in range(1, 11)}
  assert 3.2 < rating.mean() < 3.8 and 0.8 < rating.std() < 1.3
  assert synth.T_START <= ts.min() and ts.max() <= synth.T_END
  per_movie = np.sort(np.bincount(movies.astype(int)))[::-1]
  top = per_movie[:max(1, summary["movies"] // 10)].sum()
  assert top > 0.4 * N  # Zipf-like: the top 10 % of movies hold most ratings


def test_movies_file_and_ids(generated):
  out, summary, r = generated
  with open(os.path.join(out, "movies.csv"), newline="",
            encoding="utf-8") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["movieId", "title", "genres"]
  ids = [int(x[0]) for x in rows[1:]]
  assert len(ids) == len(set(ids)) == summary["movies"]
  assert set(r[:, 1].astype(int)) <= set(ids)
  genres = set(synth.GENRES) | {synth.NO_GENRES}
  for _, title, g in rows[1:]:
    assert title[-6] == "(" and title[-1] == ")" and title[-5:-1].isdigit()
    assert set(g.split("|")) <= genres
  assert any("," in title for _, title, _ in rows[1:])  # quoted titles
  with open(os.path.join(out, "synthetic.json")) as f:
    assert json.load(f)["ratings"] == N


def test_ratings_carry_learnable_structure(generated):
  """User and movie biases explain held-out ratings better than the mean."""
  _, _, r = generated
  users, movies, rating = r[:, 0].astype(int), r[:, 1].astype(int), r[:, 2]
  test = np.random.default_rng(0).random(len(r)) < 0.2
  mu = rating[~test].mean()
  bu, bm = np.zeros(users.max() + 1), np.zeros(movies.max() + 1)
  for _ in range(5):  # alternating regularized least squares
    res = rating - mu - bu[users]
    bm = np.bincount(movies[~test], res[~test], len(bm)) / (
        np.bincount(movies[~test], minlength=len(bm)) + 5)
    res = rating - mu - bm[movies]
    bu = np.bincount(users[~test], res[~test], len(bu)) / (
        np.bincount(users[~test], minlength=len(bu)) + 5)
  rmse = lambda p: float(np.sqrt(np.mean((rating[test] - p) ** 2)))
  assert rmse(mu + bu[users[test]] + bm[movies[test]]) < 0.93 * rmse(mu)


def test_pipeline_reader_reads_it(generated):
  out, summary, _ = generated
  reader = sources.open_source(out)
  try:
    assert isinstance(reader, sources.MovieLensCurrent)
    rows = list(reader.ratings())
    catalogue = list(reader.catalogue())
  finally:
    reader.close()
  assert len(rows) == N and len(catalogue) == summary["movies"]
  assert reader.tracker.bad == 0
  assert all(0.5 <= row["user_rating"] <= 5.0 for row in rows)
  assert all(row["movie_genres"] for row in catalogue)


def test_deterministic_by_seed(generated, tmp_path):
  out, _, _ = generated
  same = str(tmp_path / "same")
  synth.generate(N, same, seed=3, chunk_ratings=4_000)
  for name in ("ratings.csv", "movies.csv"):
    assert filecmp.cmp(os.path.join(out, name), os.path.join(same, name),
                       shallow=False)
  other = str(tmp_path / "other")
  synth.main(["--ratings", "2000", "--out", other, "--seed", "4"])
  first = str(tmp_path / "first")
  synth.main(["--ratings", "2000", "--out", first, "--seed", "3"])
  assert not filecmp.cmp(os.path.join(other, "ratings.csv"),
                         os.path.join(first, "ratings.csv"), shallow=False)


def test_impossible_sizes_are_refused(tmp_path):
  with pytest.raises(ValueError, match="cannot be spread"):
    synth.generate(1_000, str(tmp_path), users=100)


def test_scale_benchmark_describes_a_data_folder(generated, tmp_path):
  """benchmarks/scale.py --data counts what the folder holds (csv and u.data)."""
  from benchmarks import scale  # pylint: disable=g-import-not-at-top
  out, summary, r = generated
  d = scale.describe_data(out)
  assert (d["ratings"], d["ratings_file"]) == (N, "ratings.csv")
  assert d["users"] == len(np.unique(r[:, 0])) and d["movies"] == len(np.unique(r[:, 1]))
  (tmp_path / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t3\t891717742\n"
                                   "1\t20\t4\t878887116\n")
  assert {k: scale.describe_data(str(tmp_path))[k] for k in ("ratings", "users", "movies")
          } == {"ratings": 3, "users": 2, "movies": 2}
  with pytest.raises(FileNotFoundError, match="no u.data"):
    scale.describe_data(str(tmp_path / "missing"))


def test_scale_benchmark_reads_quality_of_the_newest_evaluations(tmp_path):
  """benchmarks/scale.py records the evaluators' numbers of the run it timed."""
  from benchmarks import scale  # pylint: disable=g-import-not-at-top

  def write(component, run_id, payload):
    d = tmp_path / "tfx" / component / "evaluation" / str(run_id)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(payload))

  blessing = lambda model: {"metric": "hit@100_excl_seen", "model": model,
                            "popularity": 0.3, "blessed": True}
  write("RetrievalEvaluator", 9, {"blessing": blessing(0.41)})
  write("RetrievalEvaluator", 12, {"blessing": blessing(0.49)})  # newest
  rows = {"two_stage": {"ndcg@10": 0.43}, "retrieval_only": {"ndcg@10": 0.42},
          "most_popular": {"ndcg@10": 0.26}, "ease": {"ndcg@10": 0.41}}
  write("TwoStageEvaluator", 14, {
      "rows": rows, "rating": {"rmse": 0.78, "user_item_bias_rmse": 0.87},
      "blessing": {"blessed": False}})
  q = scale.quality(str(tmp_path))
  assert q["retrieval"]["model"] == 0.49
  assert q["two_stage"] == rows and q["ranking_blessed"] is False
  skipped = dict(q, two_stage=dict(rows, ease=None))  # EASE above MAX_ITEMS
  table = scale.quality_table([{"ratings": 1000, "quality": q},
                               {"ratings": 2000, "quality": {}},
                               {"ratings": 3000, "quality": skipped}])
  assert "0.4900" in table and "0.4300" in table and "0.8700" in table
  assert table.splitlines()[3].split()[5] == "-"  # the skipped EASE column
  assert scale.quality(str(tmp_path / "empty")) == {}
