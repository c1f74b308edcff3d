"""Cost of one training step against the embedding-table size, per optimizer.

  .venv/bin/python benchmarks/optimizer_step.py [--steps 50] [--batch 4096]
      [--out benchmarks/results/optimizer_step.json]

Why (issue 11): Keras' Adam updates every row of an embedding table on each
step, so the step cost grows with the number of users and movies although
the batch does not. trainer_modules/optimizers.py routes the tables to a
sparse Adagrad instead. This measures both on a ranking-shaped Keras model
(user, movie and title-word tables → concatenation → dense layers → one
output, MSE) at the table sizes of 1M / 10M / 25M / 100M-rating MovieLens-
like data, with the same batch: a constant cost per step is what keeps the
training cost linear in the data.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401  pylint: disable=unused-import,g-import-not-at-top
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from trainer_modules import optimizers  # noqa: E402

# (users, movies, title words) of MovieLens-like data with that many ratings
# (ml-1m ≈ 6k users / 4k movies; ml-25m 162k / 62k; 100M extrapolated).
SIZES = {"1M": (6_700, 4_500, 5_000), "10M": (70_000, 30_000, 20_000),
         "25M": (162_000, 62_000, 35_000), "100M": (650_000, 120_000, 60_000)}
CONFIGS = {"adam": {"optimizer": "adam", "embedding_optimizer": "same"},
           "adam+sparse_adagrad": {"optimizer": "adam", "embedding_optimizer": "adagrad",
                                   "embedding_learning_rate": 0.1}}
DIM = 32


class Model(keras.Model):
  def __init__(self, users: int, movies: int, words: int):
    super().__init__()
    self.user = keras.layers.Embedding(users, DIM)
    self.movie = keras.layers.Embedding(movies, DIM)
    self.words = keras.layers.Embedding(words, DIM)
    self.dense = [keras.layers.Dense(256, activation="relu"),
                  keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)]

  def call(self, x):
    h = tf.concat([self.user(x["u"]), self.movie(x["m"]),
                   tf.reduce_mean(self.words(x["w"]), axis=1)], axis=1)
    for layer in self.dense:
      h = layer(h)
    return h


def step_ms(size, cfg, steps: int, batch: int, seed: int = 0) -> float:
  users, movies, words = size
  rng = np.random.default_rng(seed)
  x = {"u": rng.integers(0, users, batch), "m": rng.integers(0, movies, batch),
       "w": rng.integers(0, words, (batch, 4))}
  y = rng.normal(size=(batch, 1)).astype(np.float32)
  model = Model(users, movies, words)
  model(x)
  opt = optimizers.create(dict(cfg, learning_rate=1e-3), model)
  loss_fn = keras.losses.MeanSquaredError()

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  for _ in range(3):  # trace and warm up
    train_step()
  t0 = time.perf_counter()
  for _ in range(steps):
    train_step()
  return (time.perf_counter() - t0) / steps * 1000


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--batch", type=int, default=4096)
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                               "optimizer_step.json"))
  args = p.parse_args(argv)
  rows = {}
  for name, size in SIZES.items():
    rows[name] = {c: round(step_ms(size, cfg, args.steps, args.batch), 2)
                  for c, cfg in CONFIGS.items()}
    print(f"{name:>5} ratings ({size[0]:,} users, {size[1]:,} movies, {size[2]:,} words): "
          + ", ".join(f"{c} {ms:.1f} ms/step" for c, ms in rows[name].items()), flush=True)
  result = {"batch": args.batch, "steps": args.steps, "embedding_dim": DIM,
            "sizes": {k: dict(zip(("users", "movies", "words"), v)) for k, v in SIZES.items()},
            "ms_per_step": rows, "host": {"cpus": os.cpu_count()}}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {args.out}")
  return result


if __name__ == "__main__":
  main()
