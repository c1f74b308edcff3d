"""trainer_modules/optimizers.py: embedding tables get a sparse optimizer."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer_modules import optimizers


class _Model(keras.Model):
  def __init__(self):
    super().__init__()
    self.table = keras.layers.Embedding(10, 4)
    self.out = keras.layers.Dense(1)

  def call(self, ids):
    return self.out(self.table(ids))


def _built():
  model = _Model()
  model(tf.constant([0]))
  return model


def _step(model, opt, ids):
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(tf.constant(ids)))
  grads = tape.gradient(loss, model.trainable_variables)
  assert isinstance(grads[0], tf.IndexedSlices)  # the lookup's sparse gradient
  opt.apply_gradients(zip(grads, model.trainable_variables))


def _rows_changed_by_second_step(cfg):
  """Rows of the table that move when step 2 only looks up row 2 after
  step 1 looked up row 1."""
  model = _built()
  opt = optimizers.create(dict(cfg, learning_rate=0.1), model)
  _step(model, opt, [1])
  before = model.table.embeddings.numpy().copy()
  _step(model, opt, [2])
  after = model.table.embeddings.numpy()
  return set(np.flatnonzero(np.any(before != after, axis=1)).tolist())


def test_embedding_variables_are_the_tables_only():
  model = _built()
  tables = optimizers.embedding_variables(model)
  assert [v.ref() for v in tables] == [model.table.embeddings.ref()]


def test_adam_moves_rows_the_step_did_not_touch():
  # Why the sparse optimizer exists: Adam's momentum moves row 1 again.
  assert _rows_changed_by_second_step(
      {"optimizer": "adam", "embedding_optimizer": "same"}) == {1, 2}


def test_sparse_embedding_optimizer_moves_only_looked_up_rows():
  model_cfg = {"optimizer": "adam", "embedding_optimizer": "adagrad",
               "embedding_learning_rate": 0.5}
  assert _rows_changed_by_second_step(model_cfg) == {2}


def test_dense_layers_still_train_with_the_main_optimizer():
  model = _built()
  opt = optimizers.create({"optimizer": "adam", "learning_rate": 0.1,
                           "embedding_optimizer": "adagrad"}, model)
  kernel = model.out.kernel.numpy().copy()
  _step(model, opt, [1])
  assert not np.allclose(kernel, model.out.kernel.numpy())
  names = [type(o).__name__ for o in opt.optimizers]
  assert names == ["Adagrad", "Adam"]


def test_bad_names_are_refused():
  model = _built()
  with pytest.raises(ValueError, match="embedding_optimizer 'lazy'"):
    optimizers.create({"optimizer": "adam", "learning_rate": 0.1,
                       "embedding_optimizer": "lazy"}, model)
  with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
    optimizers.create({"optimizer": "rmsprop", "learning_rate": 0.1,
                       "embedding_optimizer": "same"}, model)


def test_auto_is_sparse_only_for_large_tables():
  small = _built()
  cfg = {"optimizer": "adam", "learning_rate": 0.1, "embedding_optimizer": "auto"}
  assert isinstance(optimizers.create(cfg, small), keras.optimizers.Adam)

  class Large(keras.Model):
    def __init__(self):
      super().__init__()
      self.users = keras.layers.Embedding(optimizers.SPARSE_MIN_ROWS - 10, 2)
      self.movies = keras.layers.Embedding(10, 2)  # together: the threshold
      self.out = keras.layers.Dense(1)

    def call(self, ids):
      return self.out(self.users(ids) + self.movies(ids))

  large = Large()
  large(tf.constant([0]))
  opt = optimizers.create(cfg, large)
  assert [type(o).__name__ for o in opt.optimizers] == ["Adagrad", "Adam"]
  assert opt.optimizers[0].learning_rate == optimizers.DEFAULT_EMBEDDING_LEARNING_RATE
