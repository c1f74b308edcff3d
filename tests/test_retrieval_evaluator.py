"""RetrievalEvaluator: metric math, executor end to end, stock Pusher on its blessing."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from common import features as F
from components.retrieval_evaluator import RetrievalEvaluator
from components.retrieval_evaluator import executor as ex
from components.retrieval_evaluator import metrics as M

# ---------------------------------------------------------------------------
# Metric math on a hand-made case.
#
# Catalogue m0..m4; eval users u0, u1 (warm) and u2 (cold); a non-eval user u9
# only contributes training ratings. Scores are given directly (Q = scores,
# C = identity), so every ranking is known:
#   u0: m0 > m1 > m2 > m3 > m4   train {m0, m1}  eval {m2, m3}
#   u1: m4 > m3 > m2 > m1 > m0   train {m4}      eval {m3, m0}
#   u2: m1 > m3 > m0 > m4 > m2   (cold)          eval {m1, m2}
# Training counts: m0 2, m1 2, m3 1, m4 1, m2 0 (m2 is a cold item), so the
# popularity order is m0, m1, m3, m4, m2 (ties: lower catalogue index first).
CATALOGUE = ["m0", "m1", "m2", "m3", "m4"]
TRAIN = [("u0", "m0"), ("u0", "m1"), ("u1", "m4"),
         ("u9", "m0"), ("u9", "m1"), ("u9", "m3")]
EVAL = [("u0", "m2"), ("u0", "m3"), ("u1", "m3"), ("u1", "m0"),
        ("u2", "m1"), ("u2", "m2")]
SCORES = np.array([[5, 4, 3, 2, 1], [1, 2, 3, 4, 5], [3, 5, 1, 4, 2]], np.float32)


@pytest.fixture(name="hand")
def _hand():
  data, users = M.build_eval_data(EVAL, TRAIN, CATALOGUE)
  assert users == ["u0", "u1", "u2"]
  return data


def test_eval_data_index_form(hand):
  assert hand.user_is_cold.tolist() == [False, False, True]
  assert hand.item_is_cold.tolist() == [False, False, True, False, False]
  assert hand.item_train_count.tolist() == [2, 2, 0, 1, 1]
  # Only the eval users' training pairs are kept for masking.
  assert sorted(zip(hand.seen_user.tolist(), hand.seen_item.tolist())) == [
      (0, 0), (0, 1), (1, 4)]
  assert M.counts(hand)["cold_item_pairs"] == 2


@pytest.mark.parametrize("batch_size", [1, 2, 512])
def test_model_metrics_known_exactly(hand, batch_size):
  res = M.evaluate(M.embedding_scorer(SCORES, np.eye(5)), hand, [1, 2], batch_size)
  a = res["all"]
  assert (a["num_pairs"], a["num_users"]) == (6, 3)
  assert a["hit@1"] == pytest.approx(1 / 6)
  assert a["hit@2"] == pytest.approx(2 / 6)
  assert a["hit@1_excl_seen"] == pytest.approx(3 / 6)
  assert a["hit@2_excl_seen"] == pytest.approx(4 / 6)
  assert a["recall@2"] == pytest.approx((0 + 0.5 + 0.5) / 3)
  assert a["recall@1_excl_seen"] == pytest.approx(0.5)
  assert a["recall@2_excl_seen"] == pytest.approx((1 + 0.5 + 0.5) / 3)
  w, c, ci = res["warm_users"], res["cold_users"], res["cold_items"]
  assert (w["num_pairs"], w["num_users"]) == (4, 2)
  assert w["hit@2_excl_seen"] == pytest.approx(3 / 4)
  assert w["hit@2"] == pytest.approx(1 / 4)
  assert (c["num_pairs"], c["num_users"]) == (2, 1)
  assert c["hit@1"] == c["hit@1_excl_seen"] == pytest.approx(0.5)
  assert c["recall@2_excl_seen"] == pytest.approx(0.5)
  # Cold items: (u0, m2) is 3rd incl. seen, 1st excl. seen; (u2, m2) is last.
  assert (ci["num_pairs"], ci["num_users"]) == (2, 2)
  assert ci["hit@2"] == 0.0
  assert ci["hit@1_excl_seen"] == pytest.approx(0.5)
  assert ci["recall@2_excl_seen"] == pytest.approx(0.5)


def test_popularity_metrics_known_exactly(hand):
  res = M.evaluate(M.popularity_scorer(hand), hand, [1, 2])
  a = res["all"]
  # incl: only (u1, m0) at 1st, (u2, m1) at 2nd.
  assert a["hit@1"] == pytest.approx(1 / 6)
  assert a["hit@2"] == pytest.approx(2 / 6)
  # excl: u0 -> m3, m4, m2 (m3 1st); u1 -> m0, m1, m3, m2 (m0 1st); u2 as incl.
  assert a["hit@1_excl_seen"] == pytest.approx(2 / 6)
  assert a["hit@2_excl_seen"] == pytest.approx(3 / 6)
  assert res["cold_items"]["hit@2_excl_seen"] == 0.0  # m2 is never popular


def test_missing_and_seen_eval_movies_are_misses():
  # u0's eval movie m1 was also rated in training; m7 is not in the catalogue.
  data, _ = M.build_eval_data([("u0", "m1"), ("u0", "m7"), ("u0", "m2")],
                              [("u0", "m1")], CATALOGUE)
  assert M.counts(data)["eval_pairs_not_in_catalogue"] == 1
  scores = np.array([[0, 9, 8, 0, 0]], np.float32)
  res = M.evaluate(M.embedding_scorer(scores, np.eye(5)), data, [1, 5])
  assert res["all"]["hit@1"] == pytest.approx(1 / 3)         # m1
  assert res["all"]["hit@5"] == pytest.approx(2 / 3)         # m1, m2; never m7
  assert res["all"]["hit@1_excl_seen"] == pytest.approx(1 / 3)  # m2 now 1st
  assert res["all"]["hit@5_excl_seen"] == pytest.approx(1 / 3)  # m1 is a miss


def test_blessing_rule():
  def m(v):
    return {"all": {"hit@100_excl_seen": v}}
  assert ex.decide_blessing(m(0.50), m(0.47), None, 100, 0.02, 0.01)["blessed"]
  assert not ex.decide_blessing(m(0.48), m(0.47), None, 100, 0.02, 0.01)["blessed"]
  assert ex.decide_blessing(m(0.50), m(0.40), m(0.505), 100, 0.02, 0.01)["blessed"]
  d = ex.decide_blessing(m(0.50), m(0.40), m(0.52), 100, 0.02, 0.01)
  assert not d["blessed"] and d["passed_popularity"] and not d["passed_baseline"]


# ---------------------------------------------------------------------------
# Real SavedModels with the exported interface, on the tiny fixture.
GENRE_NAME = {1: "Action", 2: "Adventure", 3: "Animation", 4: "Children",
              5: "Comedy", 6: "Crime"}
NUM_GENRES = len(F.GENRE_NAMES)


class _GenreModel(tf.Module):
  """Query: one-hot of the user's genre (from a table); candidate: movie genres."""

  def __init__(self, user_genre: dict):
    super().__init__()
    keys = tf.constant(list(user_genre), dtype=tf.string)
    vals = tf.constant(list(user_genre.values()), dtype=tf.int64)
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, vals), default_value=-1)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def query(self, examples):
    parsed = tf.io.parse_example(examples, F.serving_parse_spec(
        [F.USER_ID, F.TIMESTAMP, F.USER_GENDER]))
    genre = self.table.lookup(parsed[F.USER_ID])
    return {"embedding": tf.one_hot(genre, NUM_GENRES, dtype=tf.float32)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def candidate(self, examples):
    parsed = tf.io.parse_example(examples, F.serving_parse_spec(
        [F.MOVIE_ID, F.MOVIE_GENRES]))
    genres = tf.sparse.to_dense(parsed[F.MOVIE_GENRES], default_value=-1)
    return {"embedding": tf.reduce_sum(tf.one_hot(genres, NUM_GENRES), axis=1)}


class _RandomModel(tf.Module):
  """Hashed ids into fixed random embeddings: an untrained model."""

  def __init__(self, seed: int = 0, dim: int = 8):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.users = tf.Variable(rng.normal(size=(997, dim)).astype(np.float32))
    self.movies = tf.Variable(rng.normal(size=(997, dim)).astype(np.float32))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def query(self, examples):
    ids = tf.io.parse_example(examples, F.serving_parse_spec([F.USER_ID]))[F.USER_ID]
    return {"embedding": tf.gather(self.users, tf.strings.to_hash_bucket_fast(ids, 997))}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def candidate(self, examples):
    ids = tf.io.parse_example(examples, F.serving_parse_spec([F.MOVIE_ID]))[F.MOVIE_ID]
    return {"embedding": tf.gather(self.movies, tf.strings.to_hash_bucket_fast(ids, 997))}


def _model_artifact(root: str, name: str, module: tf.Module, artifact_id: int):
  model = standard_artifacts.Model()
  model.uri = os.path.join(root, name)
  model.id = artifact_id
  tf.saved_model.save(module, os.path.join(model.uri, "Format-Serving"), signatures={
      ex.QUERY_SIGNATURE: module.query.get_concrete_function(),
      ex.CANDIDATE_SIGNATURE: module.candidate.get_concrete_function()})
  return model


def _planted_user_genre(planted, good_fraction: float = 1.0) -> dict:
  """user_id -> TFDS genre id; users beyond good_fraction get a wrong genre."""
  out = {}
  n = planted["num_users"]
  for u in range(n):
    g = int(planted["user_genre"][u])
    if u >= int(round(n * good_fraction)):
      g = g % 6 + 1  # the next planted genre: wrong on purpose
    out[str(u + 1)] = F.GENRE_ID[GENRE_NAME[g]]
  return out


@pytest.fixture(scope="module", name="env")
def _env(tiny_transformed, tmp_path_factory):
  root = str(tmp_path_factory.mktemp("retrieval_eval"))
  fx = tiny_transformed
  examples = standard_artifacts.Examples()
  examples.uri = os.path.dirname(os.path.dirname(fx["raw_train_pattern"]))
  examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
  catalogue = standard_artifacts.Examples()
  catalogue.uri = os.path.dirname(os.path.dirname(fx["catalogue_pattern"]))
  catalogue.split_names = artifact_utils.encode_split_names(["catalogue"])
  planted = fx["planted"]
  models = {
      "good": _model_artifact(root, "good", _GenreModel(_planted_user_genre(planted)), 11),
      "half": _model_artifact(root, "half", _GenreModel(
          _planted_user_genre(planted, 0.5)), 12),
      "random": _model_artifact(root, "random", _RandomModel(), 13),
  }
  return {"root": root, "examples": examples, "catalogue": catalogue,
          "models": models, "fx": fx}


# The tiny catalogue has 120 movies, so K = 100 would cover nearly all of it.
PROPS = {ex.KS_KEY: json.dumps([5, 10, 20]), ex.BLESSING_K_KEY: 10,
         ex.MARGIN_KEY: 0.02, ex.TOLERANCE_KEY: 0.01, ex.BATCH_SIZE_KEY: 16}


def _run(env, name, model, baseline=None, props=None, examples=None):
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = os.path.join(env["root"], name, "evaluation")
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = os.path.join(env["root"], name, "blessing")
  inputs = {ex.MODEL_KEY: [model], ex.EXAMPLES_KEY: [examples or env["examples"]],
            ex.CATALOGUE_KEY: [env["catalogue"]]}
  if baseline is not None:
    inputs[ex.BASELINE_MODEL_KEY] = [baseline]
  ex.Executor().Do(inputs, {ex.EVALUATION_KEY: [evaluation],
                            ex.BLESSING_KEY: [blessing]}, dict(PROPS, **(props or {})))
  with open(os.path.join(evaluation.uri, ex.METRICS_FILE_NAME)) as f:
    metrics = json.load(f)
  return metrics, blessing


def test_query_examples_are_earliest_eval_rows_without_movie(env):
  files = sorted(tf.io.gfile.glob(env["fx"]["raw_eval_pattern"]))
  users, movies, first = ex.read_ids(files, batch_size=7, keep_first=True)
  rows = env["fx"]["rows"]["eval"]
  assert len(users) == len(movies) == len(rows)
  queries = ex.query_examples_of(first)
  assert len(queries) == len({r[F.USER_ID] for r in rows})
  for uid in (b"1", b"17", b"60"):
    q = tf.train.Example.FromString(queries[uid]).features.feature
    mine = [r for r in rows if r[F.USER_ID] == uid.decode()]
    assert q[F.TIMESTAMP].int64_list.value[0] == min(r[F.TIMESTAMP] for r in mine)
    assert q[F.USER_ID].bytes_list.value[0] == uid
    assert F.USER_ZIP_CODE in q and F.USER_GENDER in q
    assert not {F.MOVIE_ID, F.MOVIE_TITLE, F.MOVIE_GENRES, F.USER_RATING} & set(q)


def test_good_model_blessed(env):
  model = env["models"]["good"]
  metrics, blessing = _run(env, "good_run", model)
  assert blessing.get_int_custom_property("blessed") == 1
  assert blessing.get_int_custom_property("current_model_id") == 11
  assert blessing.get_string_custom_property("current_model") == model.uri
  assert blessing.get_string_custom_property("blessing_stage") == "retrieval"
  assert not blessing.has_custom_property("baseline_model_id")
  assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
  assert not os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
  rows = env["fx"]["rows"]
  eval_users = {r[F.USER_ID] for r in rows["eval"]}
  train_users = {r[F.USER_ID] for r in rows["train"]}
  counts = metrics["counts"]
  assert counts["eval_users"] == len(eval_users)
  assert counts["cold_users"] == len(eval_users - train_users)
  assert counts["eval_pairs"] == len({(r[F.USER_ID], r[F.MOVIE_ID]) for r in rows["eval"]})
  assert counts["catalogue_items"] == len(env["fx"]["catalogue_rows"])
  train_movies = {r[F.MOVIE_ID] for r in rows["train"]}
  assert counts["cold_item_pairs"] == sum(
      r[F.MOVIE_ID] not in train_movies for r in rows["eval"])
  good, pop = metrics["model"]["all"], metrics["popularity"]["all"]
  # A user rates every movie of the favourite genre, so once training movies
  # are masked the rest of that genre is exactly the eval set (plus the
  # few off-genre eval ratings, which a genre model cannot find).
  assert good["hit@20_excl_seen"] >= 0.75
  assert good["hit@10_excl_seen"] > pop["hit@10_excl_seen"] + 0.3
  assert good["hit@10_excl_seen"] >= good["hit@10"]
  assert metrics["baseline_model"] is None
  assert metrics["blessing"]["blessed"] is True
  assert set(metrics["model"]) == set(M.GROUPS)
  assert os.path.exists(os.path.join(os.path.dirname(blessing.uri), "evaluation",
                                     ex.SUMMARY_FILE_NAME))


def test_random_model_not_blessed(env):
  # On the planted data popularity is weak (every genre has its own fans), so
  # it sits below chance here (~10/100 at K=10 once ~20 seen movies are
  # masked); a margin of 0.1 over it is what "better than popularity" means
  # on this catalogue. On MovieLens popularity is far above chance.
  metrics, blessing = _run(env, "random_run", env["models"]["random"],
                           props={ex.MARGIN_KEY: 0.1})
  assert blessing.get_int_custom_property("blessed") == 0
  assert blessing.get_int_custom_property("current_model_id") == 13
  assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
  assert not os.path.exists(os.path.join(blessing.uri, "BLESSED"))
  assert metrics["blessing"]["passed_popularity"] is False
  rnd = metrics["model"]["all"]["hit@10_excl_seen"]
  assert 0.02 < rnd < 0.25  # about chance
  assert rnd < metrics["popularity"]["all"]["hit@10_excl_seen"] + 0.1
  # And the good model passes the same bar.
  _, blessing = _run(env, "good_margin_run", env["models"]["good"],
                     props={ex.MARGIN_KEY: 0.1})
  assert blessing.get_int_custom_property("blessed") == 1


def test_cold_users_and_items_on_real_artifacts(env, tmp_path):
  """Drops users 1-2 and movie 7 from training: they become cold."""
  rows = env["fx"]["rows"]
  cold_users, cold_movie = {"1", "2"}, "7"
  train = [r for r in rows["train"]
           if r[F.USER_ID] not in cold_users and r[F.MOVIE_ID] != cold_movie]
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / "raw_cold")
  examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
  for split, part in (("train", train), ("eval", rows["eval"])):
    os.makedirs(os.path.join(examples.uri, f"Split-{split}"))
    with tf.io.TFRecordWriter(os.path.join(examples.uri, f"Split-{split}", "d.gz"),
                              options="GZIP") as w:
      for r in part:
        w.write(F.to_tf_example(r).SerializeToString())
  metrics, _ = _run(env, "cold_run", env["models"]["good"], examples=examples)
  c = metrics["counts"]
  eval_users = {r[F.USER_ID] for r in rows["eval"]}
  assert c["cold_users"] == len(eval_users & cold_users) > 0
  assert c["warm_users"] == len(eval_users - cold_users)
  assert c["cold_catalogue_items"] == 1
  n_cold_item = sum(r[F.MOVIE_ID] == cold_movie for r in rows["eval"])
  assert c["cold_item_pairs"] == n_cold_item
  m = metrics["model"]
  assert m["cold_users"]["num_pairs"] == sum(
      r[F.USER_ID] in cold_users for r in rows["eval"])
  assert m["cold_users"]["num_pairs"] + m["warm_users"]["num_pairs"] == c["eval_pairs"]
  # The genre model needs no history: cold users get their genre anyway, and
  # with nothing to mask their incl/excl numbers agree.
  assert m["cold_users"]["hit@20"] == m["cold_users"]["hit@20_excl_seen"]
  assert m["cold_users"]["hit@20"] > metrics["popularity"]["cold_users"]["hit@20"]
  if n_cold_item:
    # Never-rated movies are last for popularity.
    assert metrics["popularity"]["cold_items"]["hit@20_excl_seen"] == 0.0


def test_better_baseline_blocks_worse_candidate(env):
  half, good = env["models"]["half"], env["models"]["good"]
  alone, blessing = _run(env, "half_alone", half)
  assert blessing.get_int_custom_property("blessed") == 1  # beats popularity
  metrics, blessing = _run(env, "half_vs_good", half, baseline=good)
  assert blessing.get_int_custom_property("blessed") == 0
  assert blessing.get_int_custom_property("baseline_model_id") == 11
  assert blessing.get_string_custom_property("baseline_model") == good.uri
  assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
  d = metrics["blessing"]
  assert d["passed_popularity"] and not d["passed_baseline"]
  assert d["baseline_model"] > d["model"] + 0.2
  # Same data, same run: the model's numbers do not depend on the baseline.
  assert metrics["model"] == alone["model"]
  assert metrics["popularity"] == alone["popularity"]
  # A candidate as good as the baseline is blessed.
  _, blessing = _run(env, "good_vs_good", good, baseline=good)
  assert blessing.get_int_custom_property("blessed") == 1


def _push(env, name, model, blessing, push_dir):
  pushed = standard_artifacts.PushedModel()
  pushed.uri = os.path.join(env["root"], name, "pushed_model")
  dest = pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
      base_directory=push_dir))
  pusher_executor.Executor().Do(
      {"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
      {"push_destination": proto_utils.proto_to_json(dest)})
  return pushed


def _saved_model_bytes(path):
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    return f.read()


def test_stock_pusher_follows_blessing(env, tmp_path, monkeypatch):
  push_dir = str(tmp_path / "serving")
  good, rnd, half = (env["models"][k] for k in ("good", "random", "half"))
  _, not_blessed = _run(env, "push_random", rnd, props={ex.MARGIN_KEY: 0.1})
  assert not_blessed.get_int_custom_property("blessed") == 0
  pushed = _push(env, "push_random", rnd, not_blessed, push_dir)
  assert pushed.get_int_custom_property("pushed") == 0
  assert not os.path.exists(push_dir) or not os.listdir(push_dir)

  _, blessed = _run(env, "push_good", good)
  monkeypatch.setattr(pusher_executor.time, "time", lambda: 1_700_000_000.0)
  pushed = _push(env, "push_good", good, blessed, push_dir)
  assert pushed.get_int_custom_property("pushed") == 1
  assert os.listdir(push_dir) == ["1700000000"]
  version_dir = os.path.join(push_dir, "1700000000")
  assert _saved_model_bytes(version_dir) == _saved_model_bytes(
      os.path.join(good.uri, "Format-Serving"))
  loaded = tf.saved_model.load(version_dir)
  assert {ex.QUERY_SIGNATURE, ex.CANDIDATE_SIGNATURE} <= set(loaded.signatures)

  # A second blessed model pushed in the same second: the stock Pusher keeps
  # the existing version directory (no overwrite) and skips the copy, yet
  # still marks the PushedModel as pushed to that directory.
  _, half_blessed = _run(env, "push_half", half)
  assert half_blessed.get_int_custom_property("blessed") == 1
  pushed = _push(env, "push_half_same_second", half, half_blessed, push_dir)
  assert os.listdir(push_dir) == ["1700000000"]
  assert _saved_model_bytes(version_dir) == _saved_model_bytes(
      os.path.join(good.uri, "Format-Serving"))
  assert pushed.get_int_custom_property("pushed") == 1
  assert pushed.get_string_custom_property("pushed_destination") == version_dir

  # A later push gets a new integer version beside the old one.
  monkeypatch.setattr(pusher_executor.time, "time", lambda: 1_700_000_100.0)
  _push(env, "push_half_later", half, half_blessed, push_dir)
  assert sorted(os.listdir(push_dir)) == ["1700000000", "1700000100"]
  assert all(v.isdigit() for v in os.listdir(push_dir))
  assert _saved_model_bytes(os.path.join(push_dir, "1700000100")) == _saved_model_bytes(
      os.path.join(half.uri, "Format-Serving"))
  assert _saved_model_bytes(version_dir) == _saved_model_bytes(
      os.path.join(good.uri, "Format-Serving"))


def test_component_spec_and_channels():
  from tfx import types  # pylint: disable=g-import-not-at-top
  comp = RetrievalEvaluator(
      model=types.Channel(type=standard_artifacts.Model),
      examples=types.Channel(type=standard_artifacts.Examples),
      catalogue=types.Channel(type=standard_artifacts.Examples),
      ks=[100, 10, 50])
  assert json.loads(comp.exec_properties[ex.KS_KEY]) == [10, 50, 100]
  assert comp.exec_properties[ex.MARGIN_KEY] == 0.02
  assert comp.exec_properties[ex.TOLERANCE_KEY] == 0.01
  assert comp.outputs["evaluation"].type is standard_artifacts.ModelEvaluation
  assert comp.outputs["blessing"].type is standard_artifacts.ModelBlessing
  assert ex.BASELINE_MODEL_KEY not in comp.inputs


def test_pipeline_two_runs_with_resolver_and_pusher(env, tmp_path):
  """LocalDagRunner: importers -> RetrievalEvaluator -> stock Pusher, twice.

  Run 1 has no blessed model yet (no baseline); run 2's resolver hands the
  model blessed in run 1 to the evaluator as its baseline.
  """
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local import local_dag_runner  # pylint: disable=g-import-not-at-top
  from components.resolvers import latest_blessed_model_resolver  # pylint: disable=g-import-not-at-top

  mlmd_path = str(tmp_path / "mlmd.sqlite")
  push_dir = str(tmp_path / "serving")

  def build():
    model = tfx.dsl.Importer(source_uri=env["models"]["good"].uri,
                             artifact_type=standard_artifacts.Model).with_id("trainer")
    examples = tfx.dsl.Importer(
        source_uri=env["examples"].uri, artifact_type=standard_artifacts.Examples,
        properties={"split_names": '["train","eval"]'}).with_id("examples")
    catalogue = tfx.dsl.Importer(
        source_uri=env["catalogue"].uri, artifact_type=standard_artifacts.Examples,
        properties={"split_names": '["catalogue"]'}).with_id("catalogue")
    baseline = latest_blessed_model_resolver(
        "latest_blessed_retrieval_model", "trainer", "retrieval_evaluator",
        model_key="result")
    evaluator = RetrievalEvaluator(
        model=model.outputs["result"], examples=examples.outputs["result"],
        catalogue=catalogue.outputs["result"], baseline_model=baseline.outputs["model"],
        ks=[5, 10, 20], blessing_k=10).with_id("retrieval_evaluator")
    pusher = tfx.components.Pusher(
        model=model.outputs["result"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=push_dir)))
    return tfx.dsl.Pipeline(
        pipeline_name="retrieval-eval-test", pipeline_root=str(tmp_path / "root"),
        metadata_connection_config=metadata.sqlite_metadata_connection_config(mlmd_path),
        components=[model, examples, catalogue, baseline, evaluator, pusher])

  local_dag_runner.LocalDagRunner().run(build())
  time.sleep(1.1)  # the Pusher's version is the UNIX second
  local_dag_runner.LocalDagRunner().run(build())

  with metadata.Metadata(metadata.sqlite_metadata_connection_config(mlmd_path)) as m:
    store = m.store
    blessings = sorted(store.get_artifacts_by_type("ModelBlessing"), key=lambda a: a.id)
    models = store.get_artifacts_by_type("Model")
    evaluations = store.get_artifacts_by_type("ModelEvaluation")
  assert len(models) == 1 and len(blessings) == 2 and len(evaluations) == 2
  model_id = models[0].id
  first, second = (b.custom_properties for b in blessings)
  assert first["blessed"].int_value == second["blessed"].int_value == 1
  assert first["current_model_id"].int_value == model_id
  assert "baseline_model_id" not in first
  assert second["baseline_model_id"].int_value == model_id
  with open(os.path.join(sorted(e.uri for e in evaluations)[-1], ex.METRICS_FILE_NAME)) as f:
    metrics = json.load(f)
  assert {"model", "popularity", "baseline_model", "counts", "blessing"} <= set(metrics)
  versions = sorted(os.listdir(push_dir))
  assert len(versions) == 2 and all(v.isdigit() for v in versions)
