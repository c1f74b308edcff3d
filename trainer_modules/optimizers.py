"""The trainers' optimizers: one for the dense layers, one for embedding tables.

Why two: Keras' Adam (new and legacy) updates every row of a variable on each
step even when its gradient is sparse (tf.IndexedSlices from an embedding
lookup): the moment decay `m -= m * (1 - beta_1)` is a dense operation. The
tables grow with the data (users, movies, title words), so with Adam the
cost of a step grows with the data size, not the batch (issue 11 measured
5.6 / 26 / 71 / 222 ms per step on ranking-sized tables of 1M / 10M / 25M /
100M-rating data). Adagrad's sparse update only touches the looked-up rows.

`embedding_optimizer: "adagrad"` hands every keras.layers.Embedding table
to an Adagrad with its own learning rate (`embedding_learning_rate`) and the
remaining variables (dense layers) to the `optimizer` setting, through
TFRS's CompositeOptimizer (legacy Keras optimizers, as that class requires).
`"same"` trains everything with `optimizer` (new Keras optimizers). `"auto"`
(the trainers' default) picks "adagrad" when the tables hold at least
SPARSE_MIN_ROWS rows in all, "same" below.

Why the switch and not Adagrad everywhere: on ml-100k (~4k table rows) Adam
is better and its dense update costs nothing (retrieval hit@100 excl. seen
0.604 with Adam; 0.553 / 0.558 / 0.569 with Adagrad at embedding learning
rates 0.05 / 0.2 / 0.5, seed 0). benchmarks/optimizer_step.py (batch 4096,
results/optimizer_step.json, idle 2-core machine) shows where the step cost
diverges: 9.6 vs 9.0 ms at 1M-rating table sizes (~16k rows), Adam 2x
slower at 10M (~120k rows; 19.7 vs 9.7 ms), 3.8x at 25M, 10x at 100M
(107 vs 10.6 ms), while the sparse step stays flat.
"""
from __future__ import annotations

from typing import Any, List, Mapping

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

OPTIMIZERS = ("adam", "adagrad", "sgd")
EMBEDDING_OPTIMIZERS = ("auto", "adagrad", "same")
# "auto": the sparse optimizer from this many embedding-table rows in all.
SPARSE_MIN_ROWS = 50_000
# Adagrad's step sizes shrink as squared gradients accumulate: it needs a
# larger learning rate than Adam (ml-100k retrieval: 0.5 beat 0.05 and 0.2).
DEFAULT_EMBEDDING_LEARNING_RATE = 0.5


def embedding_variables(model: keras.Model) -> List[tf.Variable]:
  """Trainable tables of every keras.layers.Embedding inside `model`."""
  seen, out = set(), []
  for layer in model.submodules:
    if isinstance(layer, keras.layers.Embedding):
      for v in layer.trainable_weights:
        if v.ref() not in seen:
          seen.add(v.ref())
          out.append(v)
  return out


def table_rows(tables) -> int:
  return int(sum(v.shape[0] for v in tables))


def _single(name: str, lr: float, sgd_momentum: float, legacy: bool):
  opts = keras.optimizers.legacy if legacy else keras.optimizers
  if name == "adam":
    return opts.Adam(learning_rate=lr)
  if name == "adagrad":
    return opts.Adagrad(learning_rate=lr)
  if name == "sgd":
    return opts.SGD(learning_rate=lr, momentum=sgd_momentum)
  raise ValueError(f"Unknown optimizer {name!r} (one of {', '.join(OPTIMIZERS)})")


def create(cfg: Mapping[str, Any], model: keras.Model, sgd_momentum: float = 0.0):
  """The optimizer of a trainer config (optimizer, learning_rate,
  embedding_optimizer, embedding_learning_rate) for `model`, whose
  variables must exist (built) unless embedding_optimizer is "same"."""
  name = str(cfg["optimizer"]).lower()
  lr = float(cfg["learning_rate"])
  emb = str(cfg.get("embedding_optimizer", "same")).lower()
  if emb not in EMBEDDING_OPTIMIZERS:
    raise ValueError(f"Unknown embedding_optimizer {emb!r} "
                     f"(one of {', '.join(EMBEDDING_OPTIMIZERS)})")
  if emb == "same":
    return _single(name, lr, sgd_momentum, legacy=False)
  if not model.trainable_variables:
    raise ValueError("optimizers.create: build the model before creating a "
                     "composite optimizer (its variables are split by kind)")
  tables = embedding_variables(model)
  if emb == "auto" and table_rows(tables) < SPARSE_MIN_ROWS:
    return _single(name, lr, sgd_momentum, legacy=False)
  refs = {v.ref() for v in tables}
  dense = [v for v in model.trainable_variables if v.ref() not in refs]
  emb_lr = float(cfg.get("embedding_learning_rate")
                 or DEFAULT_EMBEDDING_LEARNING_RATE)
  parts = [(_single("adagrad", emb_lr, 0.0, legacy=True), lambda: tables)]
  if dense:
    parts.append((_single(name, lr, sgd_momentum, legacy=True), lambda: dense))
  return tfrs.experimental.optimizers.CompositeOptimizer(parts)
