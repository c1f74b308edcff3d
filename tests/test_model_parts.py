"""Shared model parts: user histories, the user table and request defaults."""
import os

import numpy as np
import pytest
import tensorflow as tf

from common import features as F
from trainer_modules import model_parts


def test_user_histories_are_distinct_sorted_and_oov_is_empty():
  users = np.array([0, 1, 0, 0, 2, 2, 1])
  movies = np.array([5, 3, 1, 5, 7, 2, 3])
  hist = model_parts.user_histories(users, movies, num_users=3)
  assert [h.tolist() for h in hist] == [[1, 5], [3], []]  # row 2 is the OOV row


def test_user_history_mean_leaves_the_target_out():
  layer = model_parts.UserHistory([np.array([0, 1, 2]), np.array([], np.int64)],
                                  num_movies=4, dim=2)
  layer(tf.constant([0]))  # builds the table
  table = np.array([[1., 0.], [0., 1.], [2., 2.], [9., 9.]], np.float32)
  layer.embedding.embeddings.assign(table)
  np.testing.assert_allclose(layer(tf.constant([0, 1])).numpy(),
                             [[1., 1.], [0., 0.]])  # all three; empty → zeros
  # Training row (user 0, movie 2): the target is not its own history.
  np.testing.assert_allclose(
      layer(tf.constant([0]), target=tf.constant([2])).numpy(), [[0.5, 0.5]])


def test_history_mean_per_row_and_its_gradient_kind(monkeypatch):
  hist = [np.array([0, 1, 2]), np.array([1, 3]), np.array([], np.int64)]
  for sparse_from, kind in ((10, tf.Tensor), (4, tf.IndexedSlices)):
    monkeypatch.setattr(model_parts, "HISTORY_SPARSE_GRADIENT_ROWS", sparse_from)
    layer = model_parts.UserHistory(hist, num_movies=4, dim=1)
    layer(tf.constant([0]))
    layer.embedding.embeddings.assign([[1.], [2.], [4.], [8.]])
    with tf.GradientTape() as tape:
      # Rows: user 0 without its target 1, user 1 without 3, user 2 (empty).
      out = layer(tf.constant([0, 1, 2]), target=tf.constant([1, 3, 0]))
      loss = tf.reduce_sum(out)
    np.testing.assert_allclose(out.numpy()[:, 0], [2.5, 2., 0.])
    grad = tape.gradient(loss, layer.embedding.embeddings)
    assert isinstance(grad, kind)
    # d/d(row): 1/2 from user 0's two kept movies (0 and 2), 1 for user 1's 1.
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy()[:, 0],
                               [0.5, 1., 0.5, 0.])


def test_serving_pools_each_distinct_user_once_with_the_same_values():
  rng = np.random.default_rng(0)
  hist = [rng.choice(50, size=n, replace=False) for n in (3, 40, 0, 17)]
  layer = model_parts.UserHistory(hist, num_movies=50, dim=8)
  layer(tf.constant([0]))
  layer.embedding.embeddings.assign(rng.normal(size=(50, 8)).astype(np.float32))
  users = tf.constant([1, 1, 3, 0, 1, 2, 3, 9], tf.int64)  # 9: clipped to 3
  per_row = layer.pool(layer.histories(users)).numpy()
  np.testing.assert_array_equal(layer.pool_by_user(users).numpy(), per_row)
  np.testing.assert_array_equal(layer(users).numpy(), per_row)  # serving path
  np.testing.assert_array_equal(per_row[2], per_row[7])
  assert not per_row[5].any()  # an empty history pools to zeros


def test_history_dropout_drops_only_in_training():
  layer = model_parts.UserHistory([np.arange(200)], num_movies=200, dim=1,
                                  dropout=0.5)
  layer(tf.constant([0]))
  layer.embedding.embeddings.assign(np.arange(200, dtype=np.float32)[:, None])
  assert float(layer(tf.constant([0]))[0, 0]) == pytest.approx(99.5)
  tf.random.set_seed(3)
  trained = [float(layer(tf.constant([0]), training=True)[0, 0]) for _ in range(5)]
  assert len(set(trained)) > 1  # a different subset each step


def test_history_max_len_subsamples_only_long_histories_in_training():
  # User 0: 2,000 movies (capped to ~100 after dropout 0.5); user 1: 150
  # movies (150 × 0.5 = 75 ≤ 100: plain dropout).
  hist = [np.arange(2000), np.arange(150)]
  layer = model_parts.UserHistory(hist, num_movies=2000, dim=1, dropout=0.5,
                                  max_len=100)
  tf.random.set_seed(5)
  kept = [layer.masked(tf.constant([0, 1]), training=True).row_lengths().numpy()
          for _ in range(40)]
  long_mean, short_mean = np.mean(kept, axis=0)
  assert 85 < long_mean < 115   # about max_len, not 1,000
  assert 65 < short_mean < 85   # 75: the cap does not touch it
  # Serving pools the whole history.
  assert layer.masked(tf.constant([0, 1])).row_lengths().numpy().tolist() == [2000, 150]
  # No history reaches the cap: the layer is plain dropout.
  assert not model_parts.UserHistory(hist, 2000, 1, dropout=0.5, max_len=1000)._capped
  with pytest.raises(ValueError, match="max_len"):
    model_parts.UserHistory(hist, 2000, 1, max_len=0)


def test_long_histories_are_drawn_from_their_own_movies_without_the_target():
  """A capped row reads at most max_len / (1 - dropout) entries, all of them
  the user's own movies, never the row's target, and their mean estimates
  the whole history's mean (what serving pools)."""
  rng = np.random.default_rng(1)
  hist = [np.sort(rng.choice(5000, 3000, replace=False)), np.arange(10, 40)]
  layer = model_parts.UserHistory(hist, num_movies=5000, dim=1, dropout=0.2,
                                  max_len=80)  # cap = 100 entries
  layer(tf.constant([0]))
  layer.embedding.embeddings.assign(
      rng.normal(size=(5000, 1)).astype(np.float32))
  target = int(hist[0][7])
  tf.random.set_seed(11)
  means = []
  for _ in range(200):
    h = layer.masked(tf.constant([0, 1]), target=tf.constant([target, 12]),
                     training=True)
    long_row, short_row = h[0].numpy(), h[1].numpy()
    assert len(long_row) <= 100 and set(long_row) <= set(hist[0])
    assert target not in long_row
    assert set(short_row) <= set(hist[1]) - {12} and len(short_row) <= 29
    means.append(float(layer.pool(h)[0, 0]))
  table = layer.embedding.embeddings.numpy()[:, 0]
  full = table[hist[0][hist[0] != target]].mean()
  assert abs(np.mean(means) - full) < 0.02, (np.mean(means), full)
  assert np.std(means) > 0.01  # a different draw each step


def test_user_table_side_features_first_row_context_last_row():
  users = np.array([b"b", b"a", b"b", b"a"])
  values = {F.T_USER_GENDER: np.array([1, 0, 2, 2]),
            F.T_TIMESTAMP: np.array([0.5, -1.0, 0.2, 3.0], np.float32),
            F.T_TIMESTAMP_BUCKET: np.array([5, 0, 2, 9])}
  table = model_parts.user_table(users, values)
  assert table[F.USER_ID].tolist() == [b"a", b"b"]
  assert table[F.T_USER_GENDER].tolist() == [0, 1]        # first rows
  assert table[F.T_TIMESTAMP].tolist() == [3.0, 0.5]      # latest rows
  assert table[F.T_TIMESTAMP_BUCKET].tolist() == [9, 5]


def test_user_defaults_fill_only_left_out_features_of_known_users():
  defaults = model_parts.UserDefaults({
      F.USER_ID: np.array([b"u1"], object),
      F.T_USER_GENDER: np.array([0]), F.T_TIMESTAMP_BUCKET: np.array([7])})
  raw = {F.USER_ID: tf.constant([b"u1", b"u1", b"u2"]),
         F.USER_GENDER: tf.constant([-1, 1, -1], tf.int64),
         F.TIMESTAMP: tf.constant([-1, 100, -1], tf.int64)}
  transformed = {F.T_USER_GENDER: tf.constant([[2], [1], [2]], tf.int64),
                 F.T_TIMESTAMP_BUCKET: tf.constant([[19], [3], [19]], tf.int64)}
  out = defaults.fill(raw, transformed)
  assert out[F.T_USER_GENDER].numpy().ravel().tolist() == [0, 1, 2]
  assert out[F.T_TIMESTAMP_BUCKET].numpy().ravel().tolist() == [7, 3, 19]
  assert out[F.T_USER_GENDER].shape == (3, 1)


def test_item_item_scores_are_mean_weights_over_the_history():
  layer = model_parts.ItemItem(3)
  layer.w.assign([[0., 1., 2.], [3., 4., 5.], [6., 7., 8.]])
  hist = tf.ragged.constant([[0, 2], [], [1]], dtype=tf.int64)
  # Row 0: mean of rows 0 and 2; row 1 (no history): zeros; row 2: row 1.
  np.testing.assert_allclose(layer.all_scores(hist).numpy(),
                             [[3., 4., 5.], [0., 0., 0.], [3., 4., 5.]])
  np.testing.assert_allclose(
      layer.scores(hist, tf.constant([1, 0, 2])).numpy(), [4., 0., 5.])


def _graph_functions(path):
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  sm = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    sm.ParseFromString(f.read())
  return len(sm.meta_graphs[0].graph_def.library.function)


def test_save_signatures_serves_without_keras_call_traces(tmp_path):
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  module = tf.Module()
  module.model = keras.Sequential([
      keras.layers.Dense(4, kernel_initializer="ones"),
      keras.layers.Dense(1, kernel_initializer="ones")])
  module.model(tf.ones([1, 3]))
  module.serve = tf.function(lambda x: {"y": module.model(x)},
                             input_signature=[tf.TensorSpec([None, 3], tf.float32)])
  sig = {"serving_default": module.serve.get_concrete_function()}
  traced, lean = str(tmp_path / "traced"), str(tmp_path / "lean")
  tf.saved_model.save(module, traced, signatures=sig)
  model_parts.save_signatures(module, lean, sig)
  for path in (traced, lean):
    out = tf.saved_model.load(path).signatures["serving_default"](x=tf.ones([1, 3]))
    np.testing.assert_allclose(out["y"].numpy(), [[12.0]])
  # Keras's traces of each layer's call are only in the default save.
  assert _graph_functions(lean) < _graph_functions(traced)


def test_datasets_run_without_the_autotune_model():
  ds = model_parts.without_autotune_model(tf.data.Dataset.range(5).map(
      lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
  assert ds.options().autotune.enabled is False
  assert list(ds.as_numpy_iterator()) == [0, 2, 4, 6, 8]


class _Spec:
  """The part of a TFTransformOutput that make_dataset reads."""

  def transformed_feature_spec(self):
    return {"a": tf.io.FixedLenFeature([], tf.int64),
            "w": tf.io.VarLenFeature(tf.int64)}


def test_make_dataset_reads_every_record_batched_and_parsed(tmp_path):
  for shard, values in (("b", range(7, 10)), ("a", range(7))):  # name order
    with tf.io.TFRecordWriter(str(tmp_path / f"{shard}.gz"), "GZIP") as w:
      for v in values:
        w.write(tf.train.Example(features=tf.train.Features(feature={
            "a": tf.train.Feature(int64_list=tf.train.Int64List(value=[v])),
            "w": tf.train.Feature(int64_list=tf.train.Int64List(
                value=list(range(v % 3))))})).SerializeToString())
  pattern = [str(tmp_path / "*.gz")]
  batches = list(model_parts.make_dataset(pattern, _Spec(), 4, shuffle=False,
                                          num_epochs=1))
  assert [b["a"].numpy().tolist() for b in batches] == [
      [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # files in name order, last batch kept
  assert isinstance(batches[0]["w"], tf.SparseTensor)
  assert tf.sparse.to_dense(batches[0]["w"]).numpy().tolist() == [
      [0, 0], [0, 0], [0, 1], [0, 0]]
  shuffled = list(model_parts.make_dataset(pattern, _Spec(), 4, shuffle=True,
                                           num_epochs=1, seed=3))
  order = [v for b in shuffled for v in b["a"].numpy().tolist()]
  assert sorted(order) == list(range(10)) and order != list(range(10))
  endless = model_parts.make_dataset(pattern, _Spec(), 4, shuffle=True, seed=3,
                                     features=["a"])
  first = list(endless.take(6))
  assert all(b["a"].shape == (4,) for b in first)  # full batches only
  assert set(first[0]) == {"a"}
  assert endless.options().autotune.enabled is False
