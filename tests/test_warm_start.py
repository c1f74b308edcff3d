"""Warm start (trainer_modules/warm_start.py) on real trained models.

A ranking model is trained once on the session fixture `tiny_transformed`;
run_fn then starts from it (`fn_args.base_model`, as the pipeline's resolver
provides it) with 0 epochs, so the new model's weights are exactly what warm
start restored. A changed vocabulary is simulated on a copy of the base
model's warm-start state: some ids vanish from it and unknown ones appear,
as when the next Transform run sees other users and movies.
"""
import io
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from common import features as F
from trainer_modules import model_parts
from trainer_modules import ranking
from trainer_modules import retrieval
from trainer_modules import warm_start

BASE_CONFIG = {"epochs": 1, "batch_size": 64, "seed": 1}
# No training: the exported weights are the restored ones.
NO_TRAINING = {"epochs": 0, "batch_size": 64, "seed": 2}
MOVIE_ID_TABLE = "movie_encoder/_embeddings/movie_id_idx/embeddings"
MOVIE_BIAS = "movie_bias/embeddings"
MOVIE_HISTORY = "user_history/embedding/embeddings"  # rows indexed by movie too
USER_ID_TABLE = "user_encoder/_embeddings/user_id_idx/embeddings"


def _fn_args(data, root, base_model=None, custom_config=None):
  return tfx.components.FnArgs(
      train_files=[data["train_pattern"]], eval_files=[data["eval_pattern"]],
      transform_output=data["tft_dir"],
      serving_model_dir=os.path.join(root, "model", "Format-Serving"),
      model_run_dir=os.path.join(root, "model_run"), train_steps=None,
      eval_steps=None, base_model=base_model, custom_config=custom_config)


def _weights(serving_dir):
  path = os.path.join(warm_start.state_dir(serving_dir), warm_start.WEIGHTS_FILE)
  with np.load(path) as npz:
    return {k: npz[k] for k in npz.files}


def _report(root):
  with open(os.path.join(root, "model_run", warm_start.REPORT_FILE)) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def base(tiny_transformed, tmp_path_factory):
  """A trained ranking model: its serving dir, as fn_args.base_model gives it."""
  root = str(tmp_path_factory.mktemp("warm_base"))
  args = _fn_args(tiny_transformed, root, custom_config=BASE_CONFIG)
  ranking.run_fn(args)
  return args.serving_model_dir


def test_state_is_written_beside_not_inside_the_export(base, tiny_transformed):
  state = warm_start.state_dir(base)
  assert os.path.dirname(state) == os.path.dirname(base)
  assert "warm_start" not in os.listdir(base)  # the Pusher copies only `base`
  with open(os.path.join(state, warm_start.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  assert manifest["model"] == "ranking"
  assert manifest["weights"][MOVIE_BIAS]["feature"] == F.T_MOVIE_ID
  tft_output = tft.TFTransformOutput(tiny_transformed["tft_dir"])
  with open(tft_output.vocabulary_file_by_name(F.VOCAB_MOVIE_ID), "rb") as f:
    expected = f.read()
  with open(os.path.join(state, manifest["vocabularies"][F.T_MOVIE_ID]), "rb") as f:
    assert f.read() == expected


def test_identical_vocabularies_restore_every_weight(base, tiny_transformed,
                                                     tmp_path, caplog):
  caplog.set_level(logging.INFO)
  root = str(tmp_path)
  ranking.run_fn(_fn_args(tiny_transformed, root, base_model=base,
                          custom_config=NO_TRAINING))
  old, new = _weights(base), _weights(os.path.join(root, "model", "Format-Serving"))
  assert set(old) == set(new) and len(old) > 10
  for key in old:
    np.testing.assert_array_equal(new[key], old[key], err_msg=key)
  report = _report(root)
  assert report["status"] == "restored" and report["vocabularies_identical"]
  assert f"warm start from {base}: vocabularies identical, all weights restored" \
      in caplog.text


def _change_movie_vocabulary(base, target, dropped, ghosts):
  """A copy of `base` whose warm-start state lacks the first `dropped` movie ids
  and has `ghosts` movie ids unknown to the current vocabulary."""
  root = os.path.join(target, "base_copy")
  shutil.copytree(os.path.dirname(base), root)
  state = os.path.join(root, warm_start.STATE_DIR)
  vocab_path = os.path.join(state, warm_start.VOCAB_DIR, F.VOCAB_MOVIE_ID)
  with open(vocab_path, "rb") as f:
    tokens = f.read().split(b"\n")[:-1]
  kept = tokens[dropped:]
  with open(vocab_path, "wb") as f:
    f.write(b"".join(t + b"\n" for t in kept + [b"ghost-%d" % i for i in range(ghosts)]))
  weights = _weights(base)
  rng = np.random.default_rng(0)
  for key in (MOVIE_ID_TABLE, MOVIE_BIAS, MOVIE_HISTORY):
    table = weights[key]  # rows: vocabulary, then the OOV row
    ghost_rows = rng.normal(size=(ghosts, table.shape[1])).astype(table.dtype)
    weights[key] = np.concatenate(
        [table[dropped:len(tokens)], ghost_rows, table[len(tokens):]])
  buf = io.BytesIO()
  np.savez(buf, **weights)
  with open(os.path.join(state, warm_start.WEIGHTS_FILE), "wb") as f:
    f.write(buf.getvalue())
  return os.path.join(root, "Format-Serving"), len(tokens)


def test_changed_vocabulary_carries_shared_rows_by_token(base, tiny_transformed,
                                                         tmp_path, caplog):
  caplog.set_level(logging.INFO)
  dropped, ghosts = 4, 3
  changed_base, n_movies = _change_movie_vocabulary(base, str(tmp_path), dropped,
                                                    ghosts)
  root = str(tmp_path / "new")
  ranking.run_fn(_fn_args(tiny_transformed, root, base_model=changed_base,
                          custom_config=NO_TRAINING))
  old, new = _weights(base), _weights(os.path.join(root, "model", "Format-Serving"))
  for key in (MOVIE_ID_TABLE, MOVIE_BIAS, MOVIE_HISTORY):
    # Ids in both vocabularies keep their rows, found by token (they moved
    # by `dropped` rows in the base state); so does the OOV row.
    np.testing.assert_array_equal(new[key][dropped:], old[key][dropped:], err_msg=key)
  # Ids the base model never saw keep their fresh initialisation: random
  # embeddings, zero biases.
  assert not np.allclose(new[MOVIE_ID_TABLE][:dropped], old[MOVIE_ID_TABLE][:dropped])
  assert not new[MOVIE_BIAS][:dropped].any()
  # The unchanged user vocabulary and the dense layers are restored as they were.
  np.testing.assert_array_equal(new[USER_ID_TABLE], old[USER_ID_TABLE])
  np.testing.assert_array_equal(new["output_layer/kernel"], old["output_layer/kernel"])

  report = _report(root)
  assert report["status"] == "partial" and not report["vocabularies_identical"]
  assert report["features"][F.T_MOVIE_ID] == {
      "vocabulary_size": n_movies, "base_vocabulary_size": n_movies - dropped + ghosts,
      "carried_over": n_movies - dropped, "new": dropped, "dropped": ghosts}
  assert sorted(report["remapped"]) == [MOVIE_BIAS, MOVIE_ID_TABLE, MOVIE_HISTORY]
  assert not report["fresh"]
  assert (f"{F.T_MOVIE_ID}: {n_movies - dropped} of {n_movies} rows carried over, "
          f"{dropped} new") in caplog.text


# ---------------------------------------------------------------------------
# The glue alone (no training): when warm start does not happen.

@pytest.fixture(scope="module")
def tft_output(tiny_transformed):
  return tft.TFTransformOutput(tiny_transformed["tft_dir"])


@pytest.fixture(scope="module")
def one_batch(tiny_transformed, tft_output):
  return next(iter(model_parts.make_dataset(
      [tiny_transformed["train_pattern"]], tft_output, 2, shuffle=False,
      num_epochs=1)))


def _ranking_model(tft_output, batch):
  model = ranking.RankingModel(tft_output, NO_TRAINING)
  return model, lambda: model.build_on(batch)


def test_base_model_without_state_trains_from_scratch(base, tft_output, one_batch,
                                                      tmp_path, caplog):
  caplog.set_level(logging.INFO)
  old_style = tmp_path / "old_model"
  shutil.copytree(base, str(old_style / "Format-Serving"))  # no warm_start/ beside
  model, build = _ranking_model(tft_output, one_batch)
  fn_args = tfx.components.FnArgs(base_model=str(old_style / "Format-Serving"))
  report = warm_start.warm_start(fn_args, {}, model, build, tft_output,
                                 model.row_features(), "ranking")
  assert report["status"] == "no_state"
  assert "training from scratch" in caplog.text and "no warm-start state" in caplog.text
  fresh = warm_start.weight_paths(model)[MOVIE_ID_TABLE].numpy()
  assert not np.allclose(fresh, _weights(base)[MOVIE_ID_TABLE])

  # Unreadable state, or a base model of the other kind: the same.
  broken = tmp_path / "broken"
  shutil.copytree(os.path.dirname(base), str(broken))
  with open(broken / warm_start.STATE_DIR / warm_start.WEIGHTS_FILE, "wb") as f:
    f.write(b"not an npz")
  fn_args = tfx.components.FnArgs(base_model=str(broken / "Format-Serving"))
  report = warm_start.warm_start(fn_args, {}, model, build, tft_output,
                                 model.row_features(), "ranking")
  assert report["status"] == "no_state" and "unreadable" in report["message"]
  report = warm_start.warm_start(tfx.components.FnArgs(base_model=base), {}, model,
                                 build, tft_output, model.row_features(), "retrieval")
  assert report["status"] == "no_state" and "'ranking'" in report["message"]


def test_disabled_or_first_run_ignores_the_base_model(base, tft_output, one_batch):
  model, build = _ranking_model(tft_output, one_batch)
  for switch in (False, "false"):
    report = warm_start.warm_start(
        tfx.components.FnArgs(base_model=base), {"warm_start": switch}, model,
        build, tft_output, model.row_features(), "ranking")
    assert report["status"] == "disabled"
  report = warm_start.warm_start(tfx.components.FnArgs(base_model=None), {}, model,
                                 build, tft_output, model.row_features(), "ranking")
  assert report["status"] == "no_base_model"
  assert not model.built  # nothing to restore: variables are left to fit


def test_retrieval_weights_are_keyed_independently_of_layer_counters(
    tft_output, one_batch, tmp_path):
  """Two retrieval models in one process (Keras names them retrieval_model,
  retrieval_model_1): the second restores every weight of the first."""
  cfg = dict(retrieval.DEFAULT_CONFIG, embedding_dim=8, side_dim=4,
             query_layers=[16], candidate_layers=[16])
  first = retrieval.build_model(tft_output, cfg)
  first.build_on(one_batch)
  serving_dir = str(tmp_path / "model" / "Format-Serving")
  warm_start.save(serving_dir, first, tft_output, first.row_features(), "retrieval")
  second = retrieval.build_model(tft_output, cfg)
  second.build_on(one_batch)
  assert first.name != second.name
  report = warm_start.restore(serving_dir, second, tft_output,
                              second.row_features(), "retrieval")
  assert report["status"] == "restored", report["message"]
  a, b = warm_start.weight_paths(first), warm_start.weight_paths(second)
  assert set(a) == set(b) and len(a) == len(first.trainable_variables)
  for key in a:
    np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
  # A changed shape (wider embeddings) is reported and left fresh.
  wider = retrieval.build_model(tft_output, dict(cfg, embedding_dim=12))
  wider.build_on(one_batch)
  report = warm_start.restore(serving_dir, wider, tft_output, wider.row_features(),
                              "retrieval")
  assert report["status"] == "partial"
  assert any("user_id_idx" in p for p in report["fresh"])
  assert tf.reduce_all(tf.math.is_finite(wider.query_model(one_batch)))


def test_each_trainer_warm_starts_from_its_own_stage_resolver(tmp_path):
  """The resolver that gives the evaluator its baseline is the base_model."""
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from tests import synthetic_data  # pylint: disable=g-import-not-at-top
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  p = pipeline_lib.create_pipeline("t", str(tmp_path / "root"), data,
                                   str(tmp_path / "serving"))
  by_id = {c.id: c for c in p.components}
  for stage in ("Retrieval", "Ranking"):
    resolver = by_id[f"LatestBlessed{stage}Model"]
    trainer = by_id[f"{stage}Trainer"]
    assert trainer.inputs["base_model"] is resolver.outputs["model"]
    assert by_id[f"{stage}Evaluator"].inputs["baseline_model"] is resolver.outputs["model"]
    assert json.loads(trainer.exec_properties["custom_config"])["warm_start"] is True
