"""Retrieval trainer (trainer_modules/retrieval.py) and CatalogueTrainer.

One training run, through CatalogueTrainer's executor Do() with real
artifacts on the tiny Transform fixture (users who like one genre), and
run_fn given as 'trainer_modules.retrieval.run_fn'; every export test uses
that model.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx import types
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts
from tfx.utils import json_utils
from tfx.utils import proto_utils

from common import assets
from common import catalogue as catalogue_lib
from common import features as F
from components import catalogue_trainer
from trainer_modules import configs
from trainer_modules import retrieval_export

RUN_FN = "trainer_modules.retrieval.run_fn"
TRAIN_STEPS = 80  # overrides the config's epochs
TEST_CONFIG = {"epochs": 2, "batch_size": 256, "verbose": 0, "seed": 1}


def _artifact(cls, uri, splits=None):
  a = cls()
  a.uri = uri
  if splits is not None:
    a.split_names = json.dumps(splits)
  return a


def _io(tiny, out_dir):
  transformed_uri = os.path.dirname(os.path.dirname(tiny["train_pattern"]))
  catalogue_uri = os.path.dirname(os.path.dirname(tiny["catalogue_pattern"]))
  inputs = {
      "examples": [_artifact(standard_artifacts.Examples, transformed_uri,
                             ["train", "eval"])],
      "transform_graph": [_artifact(standard_artifacts.TransformGraph,
                                    tiny["tft_dir"])],
      "catalogue": [_artifact(standard_artifacts.Examples, catalogue_uri,
                              ["catalogue"])],
  }
  outputs = {
      "model": [_artifact(standard_artifacts.Model, os.path.join(out_dir, "model"))],
      "model_run": [_artifact(standard_artifacts.ModelRun,
                              os.path.join(out_dir, "model_run"))],
  }
  props = {
      "train_args": proto_utils.proto_to_json(
          trainer_pb2.TrainArgs(num_steps=TRAIN_STEPS)),
      "eval_args": proto_utils.proto_to_json(trainer_pb2.EvalArgs()),
      "run_fn": RUN_FN,
      "custom_config": json_utils.dumps(TEST_CONFIG),
  }
  return inputs, outputs, props, catalogue_uri


@pytest.fixture(scope="module")
def trained(tiny_transformed, tmp_path_factory):
  out_dir = str(tmp_path_factory.mktemp("retrieval"))
  inputs, outputs, props, catalogue_uri = _io(tiny_transformed, out_dir)
  catalogue_trainer.CatalogueExecutor().Do(inputs, outputs, props)
  serving = os.path.join(outputs["model"][0].uri, "Format-Serving")
  model = tf.saved_model.load(serving)
  return {"dir": serving, "model": model, "catalogue_uri": catalogue_uri,
          "run_dir": outputs["model_run"][0].uri, "tiny": tiny_transformed}


def _requests(rows):
  return tf.constant([F.to_tf_example(r).SerializeToString() for r in rows])


def _catalogue_ids(tiny):
  return {r[F.MOVIE_ID] for r in tiny["catalogue_rows"]}


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


# --------------------------------------------------------------------------
# Component.

def test_catalogue_trainer_constructs_with_catalogue():
  examples = types.Channel(type=standard_artifacts.Examples)
  catalogue = types.Channel(type=standard_artifacts.Examples)
  graph = types.Channel(type=standard_artifacts.TransformGraph)
  trainer = catalogue_trainer.CatalogueTrainer(
      examples=examples, transform_graph=graph, catalogue=catalogue,
      run_fn=RUN_FN, custom_config={"epochs": 3})
  assert isinstance(trainer, catalogue_trainer.Trainer)
  assert trainer.inputs["catalogue"] is catalogue
  assert set(trainer.outputs) == {"model", "model_run"}
  assert trainer.exec_properties["run_fn"] == RUN_FN
  with pytest.raises(ValueError):
    catalogue_trainer.CatalogueTrainer(examples=examples, catalogue=catalogue)


def test_executor_puts_catalogue_uri_into_fn_args(tiny_transformed, tmp_path):
  inputs, outputs, props, catalogue_uri = _io(tiny_transformed, str(tmp_path))
  fn_args = catalogue_trainer.CatalogueExecutor()._GetFnArgs(  # pylint: disable=protected-access
      inputs, outputs, props)
  assert fn_args.catalogue_uri == catalogue_uri
  assert fn_args.custom_config["catalogue_uri"] == catalogue_uri
  assert fn_args.custom_config["epochs"] == TEST_CONFIG["epochs"]
  assert catalogue_lib.catalogue_files(catalogue_uri)


def test_do_trains_and_exports(trained):
  manifest = json.load(open(os.path.join(
      trained["dir"], "assets.extra", retrieval_export.MANIFEST_FILE)))
  # run_fn got the catalogue from the executor (not from the test's config).
  assert manifest["config"]["catalogue_uri"] == trained["catalogue_uri"]
  # fn_args.train_steps (TrainArgs.num_steps) is respected.
  steps = manifest["epochs"] * manifest["steps_per_epoch"]
  assert TRAIN_STEPS <= steps < TRAIN_STEPS + manifest["epochs"]
  assert set(trained["model"].signatures) == {
      "serving_default", "query_embedding", "candidate_embedding"}
  assert tf.io.gfile.glob(os.path.join(trained["run_dir"], "**", "*tfevents*")) or \
      tf.io.gfile.glob(os.path.join(trained["run_dir"], "*", "*tfevents*"))


def test_a_bad_config_stops_the_component_with_a_config_error(tiny_transformed,
                                                             tmp_path):
  inputs, outputs, props, _ = _io(tiny_transformed, str(tmp_path))
  for bad, match in (({"embeding_dim": 8}, "embeding_dim: unknown key; did you "
                      "mean embedding_dim\\? allowed: .*batch_size"),
                     ({"normalize": "yes"}, "normalize should be a valid boolean"),
                     ({"epochs": -1}, "epochs should be greater than or equal to 0")):
    props["custom_config"] = json_utils.dumps(dict(TEST_CONFIG, **bad))
    with pytest.raises(configs.ConfigError, match=f"^retrieval config: {match}"):
      catalogue_trainer.CatalogueExecutor().Do(inputs, outputs, props)
  assert not tf.io.gfile.exists(os.path.join(outputs["model"][0].uri, "Format-Serving"))


def test_in_batch_negatives_train_and_export(tiny_transformed, tmp_path):
  # The path of catalogues above full_softmax_max_movies (10M-rating data):
  # tfrs.tasks.Retrieval inside the Keras train step (it needs AutoGraph).
  inputs, outputs, props, _ = _io(tiny_transformed, str(tmp_path))
  props["custom_config"] = json_utils.dumps(dict(TEST_CONFIG, negatives="in_batch"))
  props["train_args"] = proto_utils.proto_to_json(trainer_pb2.TrainArgs(num_steps=10))
  catalogue_trainer.CatalogueExecutor().Do(inputs, outputs, props)
  serving = os.path.join(outputs["model"][0].uri, "Format-Serving")
  manifest = json.load(open(os.path.join(
      serving, "assets.extra", retrieval_export.MANIFEST_FILE)))
  assert manifest["negatives"] == "in_batch"
  assert np.isfinite(manifest["final_loss"]) and manifest["final_loss"] > 0
  out = tf.saved_model.load(serving).signatures["serving_default"](
      examples=_requests([{F.USER_ID: "1"}]))
  assert np.all(np.isfinite(out["scores"].numpy()))


# --------------------------------------------------------------------------
# Signatures.

def test_serving_default_user_id_only(trained):
  tiny = trained["tiny"]
  users = sorted({r[F.USER_ID] for r in tiny["rows"]["train"]}, key=int)
  out = trained["model"].signatures["serving_default"](
      examples=_requests([{F.USER_ID: u} for u in users]))
  k = min(100, len(tiny["catalogue_rows"]))
  assert out["movie_ids"].shape == (len(users), k)
  assert out["movie_titles"].shape == (len(users), k)
  assert out["scores"].shape == (len(users), k)
  assert out["scores"].dtype == tf.float32
  scores = out["scores"].numpy()
  assert np.all(np.isfinite(scores))
  assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
  catalogue = {r[F.MOVIE_ID]: r[F.MOVIE_TITLE] for r in tiny["catalogue_rows"]}
  ids = out["movie_ids"].numpy()
  titles = out["movie_titles"].numpy()
  for row_ids, row_titles in zip(ids, titles):
    assert len(set(row_ids)) == k
    for m, t in zip(row_ids, row_titles):
      assert catalogue[m.decode()] == t.decode()


def test_top_k_searches_whole_catalogue(trained):
  """serving_default = exact top-K of query · candidate over all movies."""
  tiny = trained["tiny"]
  model = trained["model"]
  catalogue = _read_jsonl(os.path.join(trained["dir"], "assets.extra",
                                       retrieval_export.CATALOGUE_FILE))
  emb = np.array([c["embedding"] for c in catalogue], np.float32)
  ids = np.array([c["movie_id"] for c in catalogue])
  req = _requests([{F.USER_ID: "1"}, {F.USER_ID: "2"}])
  q = model.signatures["query_embedding"](examples=req)["embedding"].numpy()
  out = model.signatures["serving_default"](examples=req)
  k = out["movie_ids"].shape[1]
  for i in range(2):
    expected = ids[np.argsort(-(emb @ q[i]), kind="stable")[:k]]
    got = [m.decode() for m in out["movie_ids"].numpy()[i]]
    assert len(set(got[:20]) & set(expected[:20])) >= 18
    np.testing.assert_allclose(np.sort(emb @ q[i])[::-1][:k],
                               out["scores"].numpy()[i], atol=1e-4)
  # Movies that nobody rated in training are candidates too.
  trained_movies = {r[F.MOVIE_ID] for r in tiny["rows"]["train"]}
  assert set(ids) == _catalogue_ids(tiny)
  assert len(ids) == len(tiny["catalogue_rows"])
  unrated = _catalogue_ids(tiny) - trained_movies
  if unrated:
    assert unrated <= set(ids)


def test_planted_genre_dominates_top_10(trained):
  tiny = trained["tiny"]
  planted = tiny["planted"]
  users = list(range(1, planted["num_users"] + 1))
  out = trained["model"].signatures["serving_default"](
      examples=_requests([{F.USER_ID: str(u)} for u in users]))
  ids = out["movie_ids"].numpy()[:, :10]
  fractions = [np.mean([planted["movie_genre"][int(m) - 1] == planted["user_genre"][u - 1]
                        for m in row]) for u, row in zip(users, ids)]
  assert np.mean(fractions) >= 0.7, np.mean(fractions)  # random: ~1/6


def test_unknown_user_gets_finite_scores(trained):
  model = trained["model"]
  req = _requests([
      {F.USER_ID: "no-such-user"},
      {F.USER_ID: "another-stranger", F.USER_GENDER: 1, F.RAW_USER_AGE: 30.0,
       F.BUCKETIZED_USER_AGE: 25.0, F.USER_OCCUPATION_TEXT: "student",
       F.USER_ZIP_CODE: "10037", F.TIMESTAMP: 874724710},
  ])
  out = model.signatures["serving_default"](examples=req)
  assert np.all(np.isfinite(out["scores"].numpy()))
  assert out["movie_ids"].shape[0] == 2
  emb = model.signatures["query_embedding"](examples=req)["embedding"].numpy()
  assert np.all(np.isfinite(emb))
  assert not np.allclose(emb[0], emb[1])  # the given features are used


def test_known_user_features_are_looked_up(trained):
  """A request with only user_id = the same request with the stored features."""
  model = trained["model"]
  row = next(r for r in trained["tiny"]["rows"]["train"] if r[F.USER_ID] == "7")
  full = {k: row[k] for k in F.USER_FEATURES if k in row}
  other = dict(full, **{F.USER_GENDER: 1 - row[F.USER_GENDER],
                        F.USER_OCCUPATION_TEXT: "retired",
                        F.RAW_USER_AGE: 80.0, F.BUCKETIZED_USER_AGE: 56.0,
                        F.USER_ZIP_CODE: "99999"})
  emb = model.signatures["query_embedding"](
      examples=_requests([{F.USER_ID: "7"}, full, other]))["embedding"].numpy()
  assert emb.shape[0] == 3
  np.testing.assert_allclose(emb[0], emb[1], atol=1e-5)
  assert not np.allclose(emb[0], emb[2], atol=1e-4)


def test_candidate_embedding_for_unknown_movie(trained):
  tiny = trained["tiny"]
  planted = tiny["planted"]
  model = trained["model"]
  genre = F.GENRE_ID["Comedy"]
  new_movie = {F.MOVIE_ID: "new-movie", F.MOVIE_TITLE: "Comedy star 1000 (1995)",
               F.MOVIE_GENRES: [genre]}
  emb = model.signatures["candidate_embedding"](
      examples=_requests([new_movie, {F.MOVIE_ID: "new-movie"}]))["embedding"].numpy()
  d = model.signatures["query_embedding"](
      examples=_requests([{F.USER_ID: "1"}]))["embedding"].shape[1]
  assert emb.shape == (2, d)
  assert np.all(np.isfinite(emb))
  assert not np.allclose(emb[0], emb[1])  # title and genres matter
  users = list(range(1, planted["num_users"] + 1))
  q = model.signatures["query_embedding"](
      examples=_requests([{F.USER_ID: str(u)} for u in users]))["embedding"].numpy()
  scores = q @ emb[0]
  comedy_col = 5  # u.item column of Comedy (tests/synthetic_data)
  likes = np.array([planted["user_genre"][u - 1] == comedy_col for u in users])
  assert scores[likes].mean() > scores[~likes].mean()


# --------------------------------------------------------------------------
# assets.extra tables.

def test_assets_extra_tables(trained):
  tiny = trained["tiny"]
  extra = os.path.join(trained["dir"], "assets.extra")
  catalogue = _read_jsonl(os.path.join(extra, retrieval_export.CATALOGUE_FILE))
  assert len(catalogue) == len(tiny["catalogue_rows"])
  assert {c["movie_id"] for c in catalogue} == _catalogue_ids(tiny)
  by_id = {r[F.MOVIE_ID]: r for r in tiny["catalogue_rows"]}
  for c in catalogue[:5]:
    assert c["movie_title"] == by_id[c["movie_id"]][F.MOVIE_TITLE]
    assert c["movie_genres"] == list(by_id[c["movie_id"]][F.MOVIE_GENRES])
  # Stored embeddings are what the candidate_embedding signature computes.
  sample = catalogue[:8]
  emb = trained["model"].signatures["candidate_embedding"](
      examples=_requests([by_id[c["movie_id"]] for c in sample]))["embedding"]
  np.testing.assert_allclose(emb.numpy(), [c["embedding"] for c in sample], atol=1e-4)

  train = tiny["rows"]["train"]
  popularity = json.load(open(os.path.join(extra, retrieval_export.POPULARITY_FILE)))
  counts = popularity["counts"]
  assert counts == sorted(counts, reverse=True)
  assert sum(counts) == len(train)
  true_counts = {}
  for r in train:
    true_counts[r[F.MOVIE_ID]] = true_counts.get(r[F.MOVIE_ID], 0) + 1
  assert dict(zip(popularity["movie_ids"], counts)) == true_counts

  table = assets.SeenTable.load(extra)
  assert isinstance(table.movies, np.memmap)  # served memory-mapped
  ids = [c["movie_id"] for c in catalogue]
  seen = {u: {ids[i] for i in table.get(u)} for u in table.user_ids()}
  true_seen = {}
  for r in train:
    true_seen.setdefault(r[F.USER_ID], set()).add(r[F.MOVIE_ID])
  assert seen == true_seen

  users = _read_jsonl(os.path.join(extra, retrieval_export.USER_FEATURES_FILE))
  assert {u["user_id"] for u in users} == set(true_seen)
  row7 = next(r for r in train if r[F.USER_ID] == "7")
  u7 = next(u for u in users if u["user_id"] == "7")
  assert u7["raw"][F.USER_GENDER] == row7[F.USER_GENDER]
  assert u7["raw"][F.USER_OCCUPATION_TEXT] == row7[F.USER_OCCUPATION_TEXT]
  assert F.T_USER_AGE in u7["transformed"]

  manifest = json.load(open(os.path.join(extra, retrieval_export.MANIFEST_FILE)))
  assert manifest["catalogue_size"] == len(catalogue)
  assert manifest["top_k"] == min(100, len(catalogue))


# --------------------------------------------------------------------------
# Training statistics and the full softmax's seen mask (no training).

def test_seen_pairs_are_distinct_and_grouped_by_user():
  from trainer_modules import retrieval
  users = np.array([b"2", b"10", b"2", b"2", b"10"], "S")
  movies = np.array([b"b", b"a", b"a", b"b", b"c"], "S")
  seen = retrieval.SeenPairs.from_rows(users, movies)
  assert len(seen) == 4  # ("2", "b") twice
  # Serving table: catalogue positions ("c" is not in the catalogue).
  table = seen.to_table(["b", "x", "a"])
  assert list(table.user_ids()) == ["10", "2"]  # bytes order
  assert table.get("10").tolist() == [2]
  assert table.get("2").tolist() == [0, 2]
  assert table.get("3") is None
  empty = retrieval.SeenPairs.from_rows(users[:0], movies[:0]).to_table(["a"])
  assert len(empty) == 0 and empty.get("2") is None


def test_catalogue_positions_skip_the_oov_row():
  from trainer_modules import retrieval
  # Catalogue of 4 movies: vocabulary indices 2, 0, 4 (= OOV of 5), 1.
  pos = retrieval._catalogue_positions([2, 0, 4, 1], num_movies=5).numpy()
  assert pos.tolist() == [1, 3, 0, -1, -1]


def test_mask_seen_hides_other_history_movies_but_not_the_target():
  import types as pytypes
  from trainer_modules import retrieval
  history = pytypes.SimpleNamespace(histories=lambda u: tf.ragged.constant(
      [[0, 1, 3], [], [2]], dtype=tf.int64))
  fake = pytypes.SimpleNamespace(
      query_model=pytypes.SimpleNamespace(user_history=history),
      _seen_positions=tf.constant([0, 1, -1, 2], tf.int64))  # vocab 2 not in catalogue
  logits = tf.zeros([3, 3])
  labels = tf.constant([1, 0, 2], tf.int64)  # row 0's own movie: position 1
  out = retrieval.RetrievalModel._mask_seen(
      fake, {F.T_USER_ID: tf.constant([0, 1, 2])}, logits, labels).numpy()
  low = out < -1e8
  assert low.tolist() == [[True, False, True], [False, False, False],
                          [False, False, False]]


def test_movie_bias_tower_dimensions_make_the_dot_cosine_over_t_plus_bias():
  import tf_keras as keras
  from trainer_modules import retrieval
  enc = keras.layers.Lambda(lambda f: tf.cast(f["x"], tf.float32))
  bias = keras.layers.Embedding(3, 1, embeddings_initializer="ones")
  query = retrieval.Tower(enc, [4], 0.0, True, scale=5.0, unit=True)
  cand = retrieval.Tower(enc, [4], 0.0, True, bias=bias)
  feats = {"x": tf.constant([[1.0, 2.0]]), F.T_MOVIE_ID: tf.constant([2])}
  q, c = query(feats).numpy(), cand(feats).numpy()
  assert q.shape == c.shape == (1, 5)
  assert q[0, -1] == 1.0 and c[0, -1] == 1.0  # the constant and the bias
  np.testing.assert_allclose(np.linalg.norm(q[0, :4]), 5.0, rtol=1e-5)
