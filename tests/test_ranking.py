"""Ranking stage: run_fn on a real Transform output, its export, TFMA blessing.

Uses the session fixture `tiny_transformed` (planted data: every user rates
movies of a favourite genre 4-5 and the others 1-2).
"""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import path_utils
from tfx.utils import proto_utils

from common import features as F
from components import blessing_stage
from pipeline import ranking_eval
from trainer_modules import baselines
from trainer_modules import configs
from trainer_modules import ranking

# Small data (1.2k training ratings): small batches, a few epochs. With the
# time context (off by default), so the tests cover how serving fills it.
TEST_CONFIG = {"epochs": 10, "batch_size": 32, "learning_rate": 0.003,
               "seed": 1, "include_context": True}


def _model_artifact(uri: str):
  model = standard_artifacts.Model()
  model.uri = uri
  return model


def _serving_dir(model_uri: str) -> str:
  """Where the stock Evaluator/Pusher look for the model of this artifact."""
  model = _model_artifact(model_uri)
  return path_utils.serving_model_path(model.uri,
                                       path_utils.is_old_model_artifact(model))


def _fn_args(data, model_uri, run_dir, **kwargs):
  return tfx.components.FnArgs(
      train_files=[data["train_pattern"]], eval_files=[data["eval_pattern"]],
      transform_output=data["tft_dir"], serving_model_dir=_serving_dir(model_uri),
      model_run_dir=run_dir, train_steps=kwargs.pop("train_steps", None),
      eval_steps=None, custom_config=kwargs.pop("custom_config", TEST_CONFIG))


@pytest.fixture(scope="module")
def trained(tiny_transformed, tmp_path_factory):
  """run_fn trained on the planted data: the Model artifact's uri."""
  root = tmp_path_factory.mktemp("ranking")
  model_uri = str(root / "model")
  ranking.run_fn(_fn_args(tiny_transformed, model_uri, str(root / "model_run")))
  return {"model_uri": model_uri, "root": root}


@pytest.fixture(scope="module")
def bad_model(tiny_transformed, tmp_path_factory):
  """An untrained model whose every prediction is the lowest rating."""
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("bad_ranking")
  model_uri = str(root / "model")
  tft_output = tft.TFTransformOutput(tiny_transformed["tft_dir"])
  model = ranking.RankingModel(tft_output, TEST_CONFIG, global_mean=1.0)
  ranking.export(model, tft_output, _serving_dir(model_uri), 1.0, 5.0)
  return model_uri


_LOADED = {}


def _load(model_uri):
  if model_uri not in _LOADED:
    _LOADED[model_uri] = tf.saved_model.load(_serving_dir(model_uri))
  return _LOADED[model_uri]


def _serve(model_uri, rows):
  fn = _load(model_uri).signatures["serving_default"]
  examples = [F.to_tf_example(r).SerializeToString() for r in rows]
  return fn(examples=tf.constant(examples))["predictions"].numpy()


def _without_label(row):
  return {k: v for k, v in row.items() if k != F.USER_RATING}


def test_export_layout_and_signatures(trained):
  serving_dir = _serving_dir(trained["model_uri"])
  assert os.path.exists(os.path.join(serving_dir, "saved_model.pb"))
  # The Transform graph's vocabularies travel with the model.
  assets = os.listdir(os.path.join(serving_dir, "assets"))
  assert any(F.VOCAB_USER_ID in a for a in assets), assets
  loaded = _load(trained["model_uri"])
  serving = loaded.signatures["serving_default"]
  spec = serving.structured_input_signature[1]
  assert list(spec) == ["examples"] and spec["examples"].dtype == tf.string
  assert serving.structured_outputs["predictions"].dtype == tf.float32
  assert "transform_features" in loaded.signatures
  # TensorBoard logs.
  assert os.listdir(trained["root"] / "model_run")


def test_item_item_scores_are_eases_of_the_users_history(trained, tiny_transformed):
  """`item_item_scores`: the EASE weights fitted on the training histories,
  averaged over the user's history; they prefer the planted genre and are
  zero for a user without history."""
  fn = _load(trained["model_uri"]).signatures["serving_default"]
  assert fn.structured_outputs[ranking.ITEM_ITEM_KEY].dtype == tf.float32
  rows = [_without_label(r) for r in tiny_transformed["rows"]["eval"]]
  scores = fn(examples=tf.constant([F.to_tf_example(r).SerializeToString() for r in rows]))[
      ranking.ITEM_ITEM_KEY].numpy()
  assert scores.shape == (len(rows),) and np.all(np.isfinite(scores))
  planted = tiny_transformed["planted"]
  liked = np.array([planted["movie_genre"][int(r[F.MOVIE_ID]) - 1] ==
                    planted["user_genre"][int(r[F.USER_ID]) - 1] for r in rows])
  assert scores[liked].mean() > 3 * abs(scores[~liked].mean()), (
      scores[liked].mean(), scores[~liked].mean())
  cold = [{F.USER_ID: "no-such-user", F.MOVIE_ID: r[F.MOVIE_ID]} for r in rows[:5]]
  out = fn(examples=tf.constant([F.to_tf_example(r).SerializeToString() for r in cold]))
  assert np.all(out[ranking.ITEM_ITEM_KEY].numpy() == 0.0)


def test_fit_ease_builds_the_history_matrix_and_respects_the_cap():
  from scipy import sparse  # pylint: disable=g-import-not-at-top
  from trainer_modules import ease  # pylint: disable=g-import-not-at-top
  history = [np.array([0, 1]), np.array([1, 2]), np.array([0, 2, 3]), np.zeros([0], np.int64)]
  stats = {"num_movie_buckets": 4, "history": history}
  cfg = dict(ranking.DEFAULT_CONFIG, ease_lambda=1.0)
  x = sparse.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0]],
                                 np.float32))
  np.testing.assert_allclose(ranking._fit_ease(stats, cfg), ease.fit(x, lam=1.0), atol=1e-6)
  assert ranking._fit_ease(stats, dict(cfg, ease_max_movies=3)) is None
  assert ranking._fit_ease(stats, dict(cfg, ease_max_movies=0)) is None
  assert ranking._fit_ease(stats, dict(cfg, history=False)) is None


def test_serving_full_rows(trained, tiny_transformed):
  rows = [_without_label(r) for r in tiny_transformed["rows"]["eval"]]
  pred = _serve(trained["model_uri"], rows)
  assert pred.shape == (len(rows),) and pred.dtype == np.float32
  assert np.all(np.isfinite(pred))
  assert pred.min() >= 1.0 and pred.max() <= 5.0  # clipped to the training range


def test_serving_ids_only_and_unknown_ids(trained, tiny_transformed):
  row = tiny_transformed["rows"]["eval"][0]
  rows = [{F.USER_ID: row[F.USER_ID], F.MOVIE_ID: row[F.MOVIE_ID]},
          {F.USER_ID: "no-such-user", F.MOVIE_ID: row[F.MOVIE_ID]},
          {F.USER_ID: row[F.USER_ID], F.MOVIE_ID: "no-such-movie"},
          {F.USER_ID: "no-such-user", F.MOVIE_ID: "no-such-movie"}]
  pred = _serve(trained["model_uri"], rows)
  assert pred.shape == (4,) and np.all(np.isfinite(pred))
  out = _load(trained["model_uri"]).signatures["transform_features"](examples=tf.constant(
      [F.to_tf_example(r).SerializeToString() for r in rows]))
  assert out[F.T_USER_ID].shape == (4,)
  # An unknown user gets the OOV row, the last of the table.
  assert out[F.T_USER_ID].numpy()[1] == out[F.T_USER_ID].numpy().max()


def test_known_user_request_gets_the_training_features_and_time(
    trained, tiny_transformed):
  """No training/serving skew: a request with only the two ids scores like a
  full row with the user's training features and the time of the user's last
  training rating (not "now", which the Transform clips to the end of the
  training range); a request that gives a time keeps it."""
  train = tiny_transformed["rows"]["train"]
  user = train[0][F.USER_ID]
  mine = [r for r in train if r[F.USER_ID] == user]
  last = max(r[F.TIMESTAMP] for r in mine)
  first = min(r[F.TIMESTAMP] for r in train)
  full = {k: mine[0][k] for k in F.USER_FEATURES if k in mine[0]}
  movies = sorted({r[F.MOVIE_ID] for r in train})[:8]
  ids_only = _serve(trained["model_uri"], [
      {F.USER_ID: user, F.MOVIE_ID: m} for m in movies])
  as_trained = _serve(trained["model_uri"], [
      dict(full, **{F.MOVIE_ID: m, F.TIMESTAMP: last}) for m in movies])
  np.testing.assert_allclose(ids_only, as_trained, rtol=1e-5, atol=1e-5)
  at_start = _serve(trained["model_uri"], [
      {F.USER_ID: user, F.MOVIE_ID: m, F.TIMESTAMP: first} for m in movies])
  assert np.abs(at_start - ids_only).max() > 1e-4  # the given time is used


def test_quality_on_planted_data(trained, tiny_transformed):
  rows = tiny_transformed["rows"]["eval"]
  y = np.array([r[F.USER_RATING] for r in rows])
  pred = _serve(trained["model_uri"], [_without_label(r) for r in rows])
  train_mean = np.mean([r[F.USER_RATING] for r in tiny_transformed["rows"]["train"]])
  rmse = math.sqrt(np.mean((pred - y) ** 2))
  rmse_mean = math.sqrt(np.mean((train_mean - y) ** 2))
  assert rmse < 0.7 * rmse_mean, (rmse, rmse_mean)

  planted = tiny_transformed["planted"]
  liked = np.array([planted["movie_genre"][int(r[F.MOVIE_ID]) - 1] ==
                    planted["user_genre"][int(r[F.USER_ID]) - 1] for r in rows])
  assert liked.any() and (~liked).any()
  assert pred[liked].mean() > pred[~liked].mean() + 1.0, (
      pred[liked].mean(), pred[~liked].mean())


@pytest.mark.parametrize("negatives", ["auto", "in_batch"])
def test_implicit_feedback_trains_engagement_alone(tiny_transformed, monkeypatch,
                                                   tmp_path, negatives):
  """No rating label: the model trains the engagement task and exports only
  `scores`, which still order a user's liked movies first (with the whole
  movie table as negatives, and with the batch's movies)."""
  real = ranking.tft.TFTransformOutput

  class NoLabel(real):
    def transformed_feature_spec(self):
      spec = dict(super().transformed_feature_spec())
      spec.pop(F.T_LABEL)
      return spec

  monkeypatch.setattr(ranking.tft, "TFTransformOutput", NoLabel)
  model_uri = str(tmp_path / "m")
  ranking.run_fn(_fn_args(tiny_transformed, model_uri, str(tmp_path / "r"),
                          custom_config=dict(TEST_CONFIG,
                                             engagement_negatives=negatives)))
  fn = tf.saved_model.load(_serving_dir(model_uri)).signatures["serving_default"]
  assert set(fn.structured_outputs) == {ranking.SCORES_KEY, ranking.ITEM_ITEM_KEY}
  rows = [_without_label(r) for r in tiny_transformed["rows"]["eval"]]
  scores = fn(examples=tf.constant(
      [F.to_tf_example(r).SerializeToString() for r in rows]))[
          ranking.SCORES_KEY].numpy()
  planted = tiny_transformed["planted"]
  liked = np.array([planted["movie_genre"][int(r[F.MOVIE_ID]) - 1] ==
                    planted["user_genre"][int(r[F.USER_ID]) - 1] for r in rows])
  assert scores[liked].mean() > scores[~liked].mean(), (
      scores[liked].mean(), scores[~liked].mean())


def test_in_batch_engagement_loss_log_q_accidental_hits_and_oov():
  import types as pytypes
  q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]], np.float32)
  c = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [3.0, 3.0]], np.float32)
  movies = np.array([0, 1, 0, 3])  # rows 0 and 2: the same movie; 3 is OOV
  log_q = np.log(np.array([0.5, 0.3, 0.2, 0.1], np.float32))
  fake = pytypes.SimpleNamespace(
      _user_parts=lambda f, t: (tf.constant(q), None), _apply=ranking.RankingModel._apply,
      user_engagement=[], movie_engagement=[], movie_encoder=lambda f: tf.constant(c),
      _cfg={"temperature": 0.5}, _log_q=tf.constant(log_q),
      _oov={F.T_MOVIE_ID: 3})
  loss = ranking.RankingModel._in_batch_engagement_loss(
      fake, {F.T_MOVIE_ID: tf.constant(movies)}, True).numpy()
  logits = q @ c.T / 0.5 - log_q[movies][None, :]
  expected = []
  for i in range(3):  # row 3 (OOV) is skipped
    cols = [j for j in range(3) if j == i or movies[j] != movies[i]]  # no OOV column
    z = logits[i, cols]
    expected.append(np.log(np.exp(z).sum()) - logits[i, i])
  np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-5)


def test_engagement_negatives_by_catalogue_size():
  cfg = ranking.resolve_config({})
  assert ranking.engagement_full(cfg, cfg["engagement_full_max_movies"])
  assert not ranking.engagement_full(cfg, cfg["engagement_full_max_movies"] + 1)
  assert ranking.engagement_full(dict(cfg, engagement_negatives="full"), 10**6)
  assert not ranking.engagement_full(dict(cfg, engagement_negatives="in_batch"), 10)
  with pytest.raises(configs.ConfigError, match="engagement_negatives"):
    ranking.resolve_config({"engagement_negatives": "sampled"})


def test_config_validation():
  cfg = ranking.resolve_config({"epochs": 3})
  assert cfg["epochs"] == 3 and cfg == dict(ranking.DEFAULT_CONFIG, epochs=3)
  # Keys are flat: neither a nested "ranking" dict nor an unknown key passes.
  for bad in ({"ranking": {"epochs": 3}}, {"other": 1}):
    with pytest.raises(configs.ConfigError, match="unknown key"):
      ranking.resolve_config(bad)
  with pytest.raises(configs.ConfigError, match="architecture"):
    ranking.resolve_config({"architecture": "transformer"})


def test_run_fn_stops_on_a_bad_config_before_reading_data(tmp_path):
  """The config is checked first: nothing here exists to be read."""
  for bad, match in (({"embeding_dim": 8}, "did you mean embedding_dim"),
                     ({"epochs": -1}, "epochs should be greater than or equal to 0")):
    with pytest.raises(configs.ConfigError, match=match):
      ranking.run_fn(_fn_args({"train_pattern": "/nowhere/*", "eval_pattern": "/nowhere/*",
                               "tft_dir": str(tmp_path / "none")},
                              str(tmp_path / "model"), str(tmp_path / "run"),
                              custom_config=bad))


def test_dense_architecture_with_train_steps(tiny_transformed, tmp_path):
  """The tutorial's dense stack; a step budget instead of epochs."""
  cfg = dict(TEST_CONFIG, architecture="dense", layer_sizes=[64, 16], use_bias=False)
  model_uri = str(tmp_path / "model")
  ranking.run_fn(_fn_args(tiny_transformed, model_uri, str(tmp_path / "run"),
                          custom_config=cfg, train_steps=5))
  pred = _serve(model_uri, [_without_label(r) for r in tiny_transformed["rows"]["eval"][:7]])
  assert pred.shape == (7,) and np.all(np.isfinite(pred))


# ---------------------------------------------------------------------------
# TFMA through the stock TFX Evaluator and Pusher executors.
def _examples_artifact(tiny_transformed):
  examples = standard_artifacts.Examples()
  # .../raw/Split-eval/data.gz → the artifact uri is .../raw
  examples.uri = os.path.dirname(os.path.dirname(tiny_transformed["raw_eval_pattern"]))
  examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
  return examples


def _evaluate(tmp_path, tiny_transformed, model_uri, eval_config, baseline_uri=None):
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = str(tmp_path / "evaluation")
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / "blessing")
  os.makedirs(blessing.uri, exist_ok=True)
  model = _model_artifact(model_uri)
  model.id = 1
  input_dict = {"examples": [_examples_artifact(tiny_transformed)], "model": [model]}
  if baseline_uri:
    baseline = _model_artifact(baseline_uri)
    baseline.id = 2
    input_dict["baseline_model"] = [baseline]
  # The pipeline's RankingEvaluator: the stock executor plus a stage tag.
  blessing_stage.RankingEvaluatorExecutor().Do(
      input_dict, {"evaluation": [evaluation], "blessing": [blessing]},
      {"eval_config": proto_utils.proto_to_json(eval_config),
       "example_splits": json.dumps(["eval"])})
  return model, evaluation, blessing


def _push(tmp_path, model, blessing):
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / "pushed_model")
  destination = tmp_path / "serving"
  destination.mkdir()
  pusher_executor.Executor().Do(
      {"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
      {"push_destination": proto_utils.proto_to_json(pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(
              base_directory=str(destination))))})
  return pushed, destination


def _overall_rmse(evaluation):
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  # With no baseline the Evaluator drops the baseline spec; one model is unnamed.
  result = tfma.load_eval_result(evaluation.uri)
  for slice_key, metrics in result.slicing_metrics:
    if not slice_key:
      values = metrics[""][""]
      return values[ranking_eval.RMSE_METRIC]["doubleValue"], result
  raise AssertionError("no overall slice")


def test_eval_metrics_are_batched_keras_metrics_not_tfma_combiners():
  """TFMA resolves a class_name among its own metrics before `module`."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  from tensorflow_model_analysis.metrics import metric_specs  # pylint: disable=g-import-not-at-top
  config = ranking_eval.ranking_eval_config()
  [spec] = config.metrics_specs
  kinds = {m.class_name: metric_specs.metric_instance(m) for m in spec.metrics}
  for name in ("RootMeanSquaredError", "BatchedMeanAbsoluteError"):
    assert isinstance(kinds[name], tf_keras.metrics.Metric), name
  assert kinds["BatchedMeanAbsoluteError"].name == ranking_eval.MAE_METRIC


def test_evaluator_blesses_trained_model_and_pusher_pushes(
    trained, tiny_transformed, tmp_path):
  config = ranking_eval.ranking_eval_config(rmse_upper_bound=1.0)
  model, evaluation, blessing = _evaluate(tmp_path, tiny_transformed,
                                          trained["model_uri"], config)
  rmse, result = _overall_rmse(evaluation)
  assert rmse < 1.0
  [overall] = [m[""][""] for k, m in result.slicing_metrics if not k]
  assert 0 < overall[ranking_eval.MAE_METRIC]["doubleValue"] <= rmse  # tf_keras MAE
  # Sliced by every slice feature of the data.
  sliced = {k[0][0] for k, _ in result.slicing_metrics if k}
  assert sliced == set(ranking_eval.DEFAULT_SLICES), sliced
  assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
  assert blessing.get_int_custom_property("blessed") == 1
  # TFMA's blessing is the rating gate; TwoStageEvaluator makes the ranking one.
  assert (blessing.get_string_custom_property("blessing_stage")
          == blessing_stage.RANKING_RATING)

  pushed, destination = _push(tmp_path, model, blessing)
  assert pushed.get_int_custom_property("pushed") == 1
  versions = os.listdir(destination)
  assert len(versions) == 1 and versions[0].isdigit()
  assert os.path.exists(destination / versions[0] / "saved_model.pb")


def test_evaluator_rejects_worse_model_and_pusher_skips_it(
    trained, bad_model, tiny_transformed, tmp_path):
  """A bad retraining fails the absolute bound and the change vs the baseline."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  config = ranking_eval.ranking_eval_config(rmse_upper_bound=1.0,
                                            max_rmse_increase=0.01)
  model, evaluation, blessing = _evaluate(tmp_path, tiny_transformed, bad_model,
                                          config, baseline_uri=trained["model_uri"])
  assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
  assert blessing.get_int_custom_property("blessed") == 0
  validation = tfma.load_validation_result(evaluation.uri)
  assert not validation.validation_ok
  failed = [(f.metric_key.name, f.metric_key.is_diff)
            for per_slice in validation.metric_validations_per_slice
            if not per_slice.slice_key.single_slice_keys  # overall slice
            for f in per_slice.failures]
  assert (ranking_eval.RMSE_METRIC, False) in failed, failed  # absolute bound
  assert (ranking_eval.RMSE_METRIC, True) in failed, failed   # worse than baseline

  pushed, destination = _push(tmp_path, model, blessing)
  assert pushed.get_int_custom_property("pushed") == 0
  assert not os.listdir(destination)


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_dcn_structures_score_a_batch(tiny_transformed, structure):
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from trainer_modules import model_parts  # pylint: disable=g-import-not-at-top
  tft_output = tft.TFTransformOutput(tiny_transformed["tft_dir"])
  cfg = dict(TEST_CONFIG, architecture="dcn", dcn_structure=structure,
             num_cross_layers=2, cross_projection_dim=4, dropout=0.1)
  model = ranking.RankingModel(tft_output, cfg, global_mean=3.0)
  batch = next(iter(model_parts.make_dataset(
      [tiny_transformed["train_pattern"]], tft_output, 16, shuffle=False)))
  out = model(batch)
  assert out[ranking.OUTPUT_KEY].shape == (16,)
  assert out[ranking.SCORES_KEY].shape == (16,)
  loss = model.compute_loss(batch, training=True)
  assert np.isfinite(float(loss))


def test_rmse_gate_applies_to_the_overall_slice_only():
  """Small noisy slices (one occupation) must not veto a good model."""
  config = ranking_eval.ranking_eval_config(rmse_upper_bound=0.95)
  [rmse] = [m for spec in config.metrics_specs for m in spec.metrics
            if m.class_name == "RootMeanSquaredError"]
  assert not rmse.HasField("threshold")
  [per_slice] = rmse.per_slice_thresholds
  assert list(per_slice.slicing_specs) == [ranking_eval.tfma.SlicingSpec()]
  assert per_slice.threshold.value_threshold.upper_bound.value == 0.95
  assert len(config.slicing_specs) == 4  # overall + 3 slices still reported


def test_model_beats_both_rating_baselines_on_planted_data(trained, tiny_transformed):
  """The user+item bias the TwoStageEvaluator's blessing compares with
  (trainer_modules/baselines.py), on the same split: the model beats it."""
  train, rows = tiny_transformed["rows"]["train"], tiny_transformed["rows"]["eval"]
  ratings = np.array([r[F.USER_RATING] for r in rows])
  ids = lambda rs, key: np.array([r[key] for r in rs]).astype("S")
  b = baselines.rating_baselines(
      ids(train, F.USER_ID), ids(train, F.MOVIE_ID),
      np.array([r[F.USER_RATING] for r in train], np.float32),
      ids(rows, F.USER_ID), ids(rows, F.MOVIE_ID), ratings.astype(np.float32))
  mean = np.mean([r[F.USER_RATING] for r in train])
  assert b["global_mean"] == pytest.approx(
      math.sqrt(np.mean((ratings - mean) ** 2)), rel=1e-4)
  assert 0 < b["user_item_bias_train"] < b["global_mean"]  # biases fit training data
  assert not os.path.exists(trained["root"] / "model_run" / "baselines.json")
  pred = _serve(trained["model_uri"], [_without_label(r) for r in rows])
  model_rmse = math.sqrt(np.mean((pred - ratings) ** 2))
  # Planted user x genre interactions: the model beats both baselines.
  assert model_rmse < min(b["global_mean"], b["user_item_bias"]), (model_rmse, b)
