"""TwoStageEvaluator's executor on planted data with real (tiny) SavedModels.

The models are small tf.Modules exported with the signatures serving loads
(retrieval: `query_embedding` + assets.extra tables; ranking:
`serving_default` examples → predictions), so every score is planted:

* user u's retrieval score of movie m is S[u, m] (one-hot user embedding,
  candidate embedding = S's column): the user's eval movies (0.5-1.0) are
  mixed with unseen movies of their taste group (0.3-0.9), then "rare"
  movies (0.2-0.5, each rated 5 once in training), then the rest (< 0.1);
* a ranking model predicts from a (user, movie) table and a movie table.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from common import assets
from common import features as F
from trainer_modules import ease
from components.two_stage_evaluator import executor as ex
from components.two_stage_evaluator import topk
from serving.recommender import Recommender

K, N_CANDIDATES = 10, 30
NUM_USERS, GROUPS, GROUP_SIZE, POPULAR, RARE = 40, 4, 20, 40, 30
KEYS = {f"{m}@{K}" for m in ("precision", "recall", "ndcg", "map")}
EXTRA = {f"hit@{N_CANDIDATES}_excl_seen", f"recall@{N_CANDIDATES}_excl_seen"}


def _planted(seed=0):
  rng = np.random.default_rng(seed)
  liked0 = POPULAR + 1  # movies 1..40 popular, 41..120 four taste groups, 121.. rare
  rare = list(range(POPULAR + GROUPS * GROUP_SIZE + 1,
                    POPULAR + GROUPS * GROUP_SIZE + RARE + 1))
  movies = [str(m) for m in range(1, rare[-1] + 1)]
  train, evals, scores = [], {}, {}
  for u in range(1, NUM_USERS + 1):
    g = u % GROUPS
    liked = list(range(liked0 + g * GROUP_SIZE, liked0 + (g + 1) * GROUP_SIZE))
    picked = rng.permutation(liked)
    ev, tr_liked = picked[:4], picked[4:8]
    for m in rng.choice(POPULAR, 8, replace=False) + 1:
      train.append((str(u), str(m), float(rng.integers(1, 6))))
    for m in tr_liked:
      train.append((str(u), str(m), float(rng.integers(4, 6))))
    evals[str(u)] = {str(m): float(rng.integers(4, 6)) for m in ev}
    s = rng.random(len(movies)) * 0.1
    for m in picked[8:]:
      s[m - 1] = 0.3 + 0.6 * rng.random()
    for m in ev:
      s[m - 1] = 0.5 + 0.5 * rng.random()
    for m in rare:
      s[m - 1] = 0.2 + 0.3 * rng.random()
    scores[str(u)] = s
  for j, m in enumerate(rare):  # each rare movie: one 5-star training rating
    train.append((str(j % NUM_USERS + 1), str(m), 5.0))
  return {"movies": movies, "train": train, "evals": evals, "scores": scores,
          "rare": {str(m) for m in rare}}


# --------------------------------------------------------------------------
# Tiny exported models.

_PARSE = {F.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
          F.MOVIE_ID: tf.io.FixedLenFeature([], tf.string, default_value="")}


def _table(keys, values, default):
  return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
      tf.constant(keys, tf.string), tf.constant(values, tf.float32)), default)


class _Query(tf.Module):

  def __init__(self, users):
    super().__init__()
    self.rows = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(users), tf.range(len(users), dtype=tf.int64)), len(users))
    self.emb = tf.Variable(np.vstack([np.eye(len(users)), np.zeros([1, len(users)])]
                                     ).astype(np.float32), trainable=False)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def query(self, examples):
    user = tf.io.parse_example(examples, {F.USER_ID: _PARSE[F.USER_ID]})[F.USER_ID]
    return {F.EMBEDDING_OUTPUT: tf.gather(self.emb, self.rows.lookup(user))}


def write_retrieval(path, planted):
  users = sorted(planted["scores"])
  module = _Query(users)
  tf.saved_model.save(module, path,
                      signatures={F.RETRIEVAL_QUERY_SIGNATURE: module.query})
  extra = os.path.join(path, "assets.extra")
  os.makedirs(extra)
  cand = np.stack([planted["scores"][u] for u in users])  # [U, N]
  with open(os.path.join(extra, "catalogue.jsonl"), "w") as f:
    for j, m in enumerate(planted["movies"]):
      f.write(json.dumps({"movie_id": m, "movie_title": f"Movie {m}",
                          "movie_genres": [1], "embedding": cand[:, j].tolist()}) + "\n")
  position = {m: j for j, m in enumerate(planted["movies"])}
  seen = {}
  for u, m, _ in planted["train"]:
    seen.setdefault(u, set()).add(position[m])
  assets.SeenTable.from_lists(seen).write(extra)
  with open(os.path.join(extra, "manifest.json"), "w") as f:
    json.dump({"catalogue_size": len(planted["movies"])}, f)


class _Ranker(tf.Module):
  """predictions = pair[user|movie] (default `rest`) + movie[movie] (default 0)."""

  def __init__(self, pair, movie, rest):
    super().__init__()
    self.pair = _table(list(pair) or ["-"], list(pair.values()) or [0.0], rest)
    self.movie = _table(list(movie) or ["-"], list(movie.values()) or [0.0], 0.0)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def serve(self, examples):
    p = tf.io.parse_example(examples, _PARSE)
    key = tf.strings.join([p[F.USER_ID], p[F.MOVIE_ID]], separator="|")
    return {"predictions": self.pair.lookup(key) + self.movie.lookup(p[F.MOVIE_ID])}


def write_ranking(path, pair=None, movie=None, rest=2.5):
  module = _Ranker(pair or {}, movie or {}, rest)
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def knows_preferences(planted, offset=0.0):
  """Predicts each eval rating exactly (+ offset); everything else 2.5 + offset."""
  return {"pair": {f"{u}|{m}": r + offset for u, ms in planted["evals"].items()
                   for m, r in ms.items()}, "rest": 2.5 + offset}


# --------------------------------------------------------------------------
# Artifacts.

def _write_split(uri, split, rows):
  d = os.path.join(uri, f"Split-{split}")
  os.makedirs(d, exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(d, "data.tfrecord.gz"), "GZIP") as w:
    for row in rows:
      w.write(F.to_tf_example(row).SerializeToString())


def _examples(uri, splits):
  art = standard_artifacts.Examples()
  art.uri = uri
  art.split_names = artifact_utils.encode_split_names(list(splits))
  for split, rows in splits.items():
    _write_split(uri, split, rows)
  return art


def _model(uri, i):
  art = standard_artifacts.Model()
  art.uri = uri
  art.id = i
  return art


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("two_stage")
  planted = _planted()
  t = 880000000
  rating_row = lambda u, m, r: {F.USER_ID: u, F.MOVIE_ID: m, F.USER_RATING: r,
                                F.TIMESTAMP: t}
  examples = _examples(str(root / "examples"), {
      "train": [rating_row(*x) for x in planted["train"]],
      "eval": [rating_row(u, m, r) for u, ms in planted["evals"].items()
               for m, r in ms.items()]})
  catalogue = _examples(str(root / "catalogue"), {"catalogue": [
      {F.MOVIE_ID: m, F.MOVIE_TITLE: f"Movie {m}", F.MOVIE_GENRES: [1]}
      for m in planted["movies"]]})
  retrieval = _model(str(root / "retrieval"), 1)
  write_retrieval(os.path.join(retrieval.uri, "Format-Serving"), planted)
  return {"root": root, "planted": planted, "examples": examples,
          "catalogue": catalogue, "retrieval": retrieval, "n": 0}


def _ranking(world, **kwargs):
  world["n"] += 1
  art = _model(str(world["root"] / f"ranking{world['n']}"), 100 + world["n"])
  write_ranking(os.path.join(art.uri, "Format-Serving"), **kwargs)
  return art


def _run(world, ranking, rating_blessing=None, **props):
  world["n"] += 1
  out = world["root"] / f"out{world['n']}"
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = str(out / "evaluation")
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(out / "blessing")
  os.makedirs(blessing.uri)
  inputs = {"model": [world["retrieval"]], "ranking_model": [ranking],
            "examples": [world["examples"]], "catalogue": [world["catalogue"]]}
  if rating_blessing is not None:
    inputs["rating_blessing"] = [rating_blessing]
  ex.Executor().Do(inputs, {"evaluation": [evaluation], "blessing": [blessing]},
                   dict({"k": K, "n_candidates": N_CANDIDATES}, **props))
  with open(os.path.join(evaluation.uri, "metrics.json")) as f:
    metrics = json.load(f)
  return metrics, blessing


def _blessed(blessing):
  files = set(os.listdir(blessing.uri))
  blessed = blessing.get_int_custom_property("blessed") == 1
  assert files == ({"BLESSED"} if blessed else {"NOT_BLESSED"})
  assert blessing.get_string_custom_property("blessing_stage") == "ranking"
  return blessed


def test_a_ranker_that_knows_the_planted_preferences_is_blessed(world):
  ranking = _ranking(world, **knows_preferences(world["planted"]))
  m, blessing = _run(world, ranking)
  rows = m["rows"]
  assert rows["two_stage"][f"ndcg@{K}"] > 0.99  # every eval movie is a candidate
  assert rows["two_stage"][f"ndcg@{K}"] > rows["retrieval_only"][f"ndcg@{K}"] + 0.2
  assert m["rating"]["rmse"] < 1e-6 < m["rating"]["user_item_bias_rmse"]
  assert _blessed(blessing), m["blessing"]["message"]
  assert blessing.get_int_custom_property("current_model_id") == ranking.id
  assert blessing.get_string_custom_property("current_model") == ranking.uri
  assert m["blessing"]["message"].startswith("BLESSED")

  # The same model with a failed TFMA rating blessing is refused.
  tfma = standard_artifacts.ModelBlessing()
  tfma.uri = str(world["root"] / "tfma_blessing")
  tfma.set_int_custom_property("blessed", 0)
  m, blessing = _run(world, ranking, rating_blessing=tfma)
  assert not _blessed(blessing)
  assert m["blessing"]["passed_ndcg"] and m["blessing"]["passed_rmse"]
  assert "TFMA RMSE thresholds failed" in m["blessing"]["message"]


def test_a_ranker_promoting_rare_highly_rated_movies_is_not_blessed(world):
  planted = world["planted"]
  ranking = _ranking(world, movie={m: 2.5 for m in planted["rare"]}, rest=2.5)
  m, blessing = _run(world, ranking)
  rows = m["rows"]
  assert rows["two_stage"][f"ndcg@{K}"] < 0.05  # top-10 = rare movies
  assert rows["retrieval_only"][f"ndcg@{K}"] > 0.3
  assert not _blessed(blessing)
  assert not m["blessing"]["passed_ndcg"]
  assert "two-stage ndcg@10" in m["blessing"]["message"]
  assert "retrieval-only" in m["blessing"]["message"]


def test_a_ranker_worse_than_the_bias_baseline_is_refused_despite_its_ndcg(world):
  ranking = _ranking(world, **knows_preferences(world["planted"], offset=3.0))
  m, blessing = _run(world, ranking)
  assert m["blessing"]["passed_ndcg"]
  assert m["rows"]["two_stage"][f"ndcg@{K}"] > 0.99
  assert m["rating"]["rmse"] == pytest.approx(3.0, abs=1e-4)
  assert m["rating"]["rmse"] > m["rating"]["user_item_bias_rmse"]
  assert not m["blessing"]["passed_rmse"]
  assert not _blessed(blessing)
  assert "user+item bias" in m["blessing"]["message"]


def test_metrics_json_shape_and_two_stage_equals_recommend(world, monkeypatch):
  planted = world["planted"]
  ranking = _ranking(world, **knows_preferences(world["planted"]))
  # Noise so that the two-stage list is not trivially perfect.
  ranking_noisy = _ranking(world, pair={
      f"{u}|{m}": (5.0 if i % 2 else 1.0) for u, ms in planted["evals"].items()
      for i, m in enumerate(ms)}, rest=3.0)
  del ranking
  m, _ = _run(world, ranking_noisy)
  assert set(m) >= {"k", "n_candidates", "num_users", "rows", "ease_skipped",
                    "rating", "blessing"}
  assert (m["k"], m["n_candidates"], m["num_users"]) == (K, N_CANDIDATES, NUM_USERS)
  assert set(m["rows"]) == {"two_stage", "retrieval_only", "most_popular", "ease"}
  assert set(m["rows"]["two_stage"]) == KEYS
  for row in ("retrieval_only", "most_popular", "ease"):
    assert set(m["rows"][row]) == KEYS | EXTRA, row
  assert m["ease_skipped"] is None
  assert set(m["rating"]) >= {"rmse", "user_item_bias_rmse", "global_mean_rmse"}
  assert isinstance(m["blessing"]["blessed"], bool)
  assert isinstance(m["blessing"]["message"], str)
  # Retrieval finds every eval movie among the candidates (planted).
  assert m["rows"]["retrieval_only"][f"hit@{N_CANDIDATES}_excl_seen"] == 1.0
  # Popularity recommends popular (seen-heavy) movies: far below retrieval.
  assert m["rows"]["most_popular"][f"ndcg@{K}"] < m["rows"]["retrieval_only"][f"ndcg@{K}"]

  # Recomputed from what `recommend` returns.
  rec = Recommender.from_model_dirs(
      os.path.join(world["retrieval"].uri, "Format-Serving"),
      os.path.join(ranking_noisy.uri, "Format-Serving"))
  index = {mid: i for i, mid in enumerate(planted["movies"])}
  users = sorted(planted["evals"])
  ranked = [[index[it["movie_id"]] for it in rec.recommend(u, k=K, n_candidates=N_CANDIDATES)["items"]]
            for u in users]
  relevant = [{index[x] for x in planted["evals"][u]} for u in users]
  expected = topk.metrics_at_k(ranked, relevant, K)
  for key in KEYS:
    assert m["rows"]["two_stage"][key] == pytest.approx(expected[key], abs=1e-9), key
  assert 0.2 < expected[f"ndcg@{K}"] < 0.99

  # Capped users and a catalogue too large for EASE.
  monkeypatch.setattr(ease, "MAX_ITEMS", 100)
  m, _ = _run(world, ranking_noisy, max_users=5)
  assert m["num_users"] == 5 and m["rows"]["ease"] is None
  assert "EASE skipped" in m["ease_skipped"]


def test_no_rating_without_predictions_output(world):
  """A ranking model without `predictions` (or data without ratings): rating null."""
  art = _model(str(world["root"] / "scores_only"), 7)

  class Scores(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, examples):
      return {"scores": tf.zeros(tf.shape(examples), tf.float32)}

  module = Scores()
  tf.saved_model.save(module, os.path.join(art.uri, "Format-Serving"),
                      signatures={"serving_default": module.serve})
  assert ex.predict_ratings(os.path.join(art.uri, "Format-Serving"), [b""], 8) is None


def test_problem_indexes_rows_without_per_row_python_objects():
  """Relevance, training matrix and rows from id arrays (bytes or str)."""
  p = ex._Problem(
      [b"m1", b"m22", b"m3"],
      np.array([b"u1", b"u1", b"u22", b"u3"], "S"),
      np.array([b"m1", b"m9", b"m3", b"m22"], "S"),  # m9: not in the catalogue
      np.array(["u22", "u1", "u22", "u5"], object),  # str ids match bytes ones
      np.array(["m22", "m3", "mX", "m1"], object), max_users=None)
  assert p.users == [b"u1", b"u22", b"u5"] and p.num_eval_users == 3
  # mX is outside the catalogue: an index ≥ 3 that no list can hit.
  assert p.relevant == [{2}, {1, 3}, {0}] and p.missing_movies == 1
  # Rows: every training user and each eval user (u5 has no training row).
  np.testing.assert_array_equal(
      p.train.toarray(), [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(p.user_rows, [0, 1, 3])
  assert p.index_of[b"m22"] == 1
  capped = ex._Problem([b"m1"], np.array([b"u1"]), np.array([b"m1"]),
                       np.array([b"u2", b"u1"]), np.array([b"m1", b"m1"]), max_users=1)
  assert capped.users == [b"u1"] and capped.num_eval_users == 2
  with pytest.raises(ValueError, match="distinct"):
    ex._Problem([b"m1", b"m1"], np.array([b"u1"]), np.array([b"m1"]),
                np.array([b"u1"]), np.array([b"m1"]), None)
