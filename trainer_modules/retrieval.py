"""TFX Trainer module: the two-tower TFRS retrieval model (stage one).

`run_fn(fn_args)` trains on Transform's output and exports ONE SavedModel
(trainer_modules/retrieval_export.py documents its signatures and the
serving tables written to `assets.extra/`).

Model
* query tower: model_parts.UserEncoder (user id + the user features the
  data has, optionally the timestamp context) → dense layers;
* candidate tower: model_parts.MovieEncoder (movie id + title words +
  genres) → dense layers, so a movie unseen in training still gets a
  meaningful vector from its title and genres;
* tfrs.tasks.Retrieval: in-batch softmax over the other movies of the batch,
  with optional log-Q sampling-bias correction (the probability of a movie
  being an in-batch negative is its training frequency), accidental-hit
  removal, temperature, L2-normalised embeddings (cosine scores).
* OOV rows are trained: a fraction of training user ids and movie ids is
  replaced by the OOV index (and user side features by "unknown"), so an
  unknown id or a request without features at serving gets a trained vector.

The catalogue (every movie, rated or not: raw tf.Examples with movie_id,
movie_title, movie_genres) reaches run_fn as an Examples artifact URI, in
`fn_args.catalogue_uri` (set by components.catalogue_trainer) or
`fn_args.custom_config["catalogue_uri"]`; its files are
`<uri>/Split-catalogue/*.gz`. The whole catalogue is embedded through the
exported candidate path (raw examples → Transform graph → tower) and indexed
with BruteForce.

custom_config keys (defaults in DEFAULT_CONFIG): embedding_dim, side_dim,
query_layers, candidate_layers, learning_rate, optimizer, epochs,
batch_size, temperature, l2, normalize, logq_correction,
remove_accidental_hits, oov_rate, feature_dropout, use_timestamp, seed,
top_k, shuffle_buffer, verbose (Keras fit verbosity), catalogue_uri,
warm_start (trainer_modules/warm_start.py: start from fn_args.base_model),
distribution_strategy (trainer_modules/strategy.py: auto | one_device |
mirrored | multi_worker_mirrored).
fn_args.train_steps, when set, overrides epochs (epochs × steps ≈ train_steps).
Defaults were chosen on real ml-100k (benchmarks/retrieval_quality.py,
3 seeds): hit@100 0.38 including / 0.56 excluding training-seen movies, vs
0.29 / 0.41 for most-popular.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, List, Mapping, Optional

import common  # noqa: F401  pylint: disable=unused-import
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft
import tf_keras as keras

from common import features as F
from trainer_modules import model_parts
from trainer_modules import retrieval_export
from trainer_modules import strategy as strategy_lib
from trainer_modules import warm_start
from transform import preprocessing

DEFAULT_CONFIG: Dict[str, Any] = {
    "embedding_dim": 64,        # id / bag embedding width in the encoders
    "side_dim": 16,             # width of side-feature embeddings
    "query_layers": [128, 64],  # dense layers after the encoder; last = output
    "candidate_layers": [128, 64],
    "learning_rate": 0.01,
    "optimizer": "adam",        # adam | adagrad | sgd
    "epochs": 5,                # more epochs overfit ml-100k (see benchmark)
    "batch_size": 2048,
    "temperature": 1.0,
    "l2": 0.0,                  # L2 on dense kernels
    "normalize": False,         # True: cosine scores (L2-normalised embeddings)
    # Sampling-bias (log-Q) correction by training movie frequency: without it
    # the in-batch softmax demotes popular movies (ml-100k hit@100 excl. seen
    # 0.31 without, 0.55 with).
    "logq_correction": True,
    "remove_accidental_hits": True,
    "oov_rate": 0.05,           # fraction of training ids sent to the OOV row
    "feature_dropout": 0.05,    # fraction of user side features set unknown
    "use_timestamp": False,     # timestamp context in the query tower
    "seed": 42,
    "top_k": 100,               # K of serving_default
    "shuffle_buffer": 200_000,
    "warm_start": True,         # start from the last blessed retrieval model
    "distribution_strategy": "auto",  # see trainer_modules/strategy.py
}
SAMPLING_PROB = "__sampling_probability"
# Transformed user side features that "unknown" replaces in feature dropout.
USER_SIDE = [F.T_USER_GENDER, F.T_USER_AGE_BUCKET, F.T_USER_AGE,
             F.T_USER_OCCUPATION, F.T_USER_ZIP_PREFIX]


def get_config(fn_args) -> Dict[str, Any]:
  """DEFAULT_CONFIG updated with fn_args.custom_config (unknown keys kept)."""
  cfg = dict(DEFAULT_CONFIG)
  cfg.update({k: v for k, v in (fn_args.custom_config or {}).items()
              if v is not None})
  return cfg


def catalogue_uri_of(fn_args) -> Optional[str]:
  uri = getattr(fn_args, "catalogue_uri", None)
  if not uri:
    uri = (fn_args.custom_config or {}).get("catalogue_uri")
  return uri


# ---------------------------------------------------------------------------
# Training data statistics (one pass over the transformed training examples).

def training_stats(files: List[str], tft_output: tft.TFTransformOutput) -> Dict[str, Any]:
  """Row count, movie frequencies, seen lists, popularity, user feature table."""
  names = set(model_parts.transformed_names(tft_output))
  side = [n for n in USER_SIDE if n in names]
  ds = model_parts.make_dataset(files, tft_output, batch_size=8192,
                                shuffle=False, num_epochs=1)
  users, movies, movie_idx = [], [], []
  side_values = {n: [] for n in side}
  for batch in ds:
    users.append(np.reshape(batch[F.T_RAW_USER_ID].numpy(), [-1]))
    movies.append(np.reshape(batch[F.T_RAW_MOVIE_ID].numpy(), [-1]))
    movie_idx.append(np.reshape(batch[F.T_MOVIE_ID].numpy(), [-1]))
    for n in side:
      side_values[n].append(np.reshape(batch[n].numpy(), [-1]))
  users = np.concatenate(users)
  movies = np.concatenate(movies)
  movie_idx = np.concatenate(movie_idx)
  side_values = {n: np.concatenate(v) for n, v in side_values.items()}

  n_movie_buckets = tft_output.num_buckets_for_transformed_feature(F.T_MOVIE_ID)
  movie_counts = np.bincount(movie_idx, minlength=n_movie_buckets).astype(np.float64)

  seen: Dict[bytes, set] = {}
  for u, m in zip(users, movies):
    seen.setdefault(u, set()).add(m)
  ids, counts = np.unique(movies, return_counts=True)
  order = np.lexsort((ids, -counts))  # count desc, then id

  # Per user: the transformed side features of the user's first row.
  uniq_users, first = np.unique(users, return_index=True)
  user_table = {F.USER_ID: uniq_users}
  for n in side:
    user_table[n] = side_values[n][first]
  return {"num_rows": int(len(users)), "movie_counts": movie_counts,
          "seen": seen, "popularity_ids": ids[order],
          "popularity_counts": counts[order], "user_table": user_table}


# ---------------------------------------------------------------------------
# Model.

def _tower(encoder: keras.layers.Layer, layers: List[int], l2: float,
           normalize: bool, name: str) -> keras.Model:
  reg = keras.regularizers.l2(l2) if l2 else None
  stack = [encoder]
  for i, units in enumerate(layers):
    last = i == len(layers) - 1
    stack.append(keras.layers.Dense(
        units, activation=None if last else "relu", kernel_regularizer=reg,
        name=f"{name}_dense_{i}"))
  if normalize:
    stack.append(keras.layers.Lambda(lambda x: tf.math.l2_normalize(x, axis=-1),
                                     name=f"{name}_l2_normalize"))
  return keras.Sequential(stack, name=name)


class RetrievalModel(tfrs.Model):
  """Query and candidate towers trained with an in-batch softmax."""

  def __init__(self, query_model: keras.Model, candidate_model: keras.Model,
               temperature: Optional[float], logq: bool, remove_hits: bool):
    super().__init__()
    self.query_model = query_model
    self.candidate_model = candidate_model
    self.logq = logq
    self.remove_hits = remove_hits
    # SUM here and the division by the batch size in compute_loss: Keras
    # refuses SUM_OVER_BATCH_SIZE outside compile() under a distribution
    # strategy; the result is the same batch mean.
    self.task = tfrs.tasks.Retrieval(
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.SUM),
        temperature=temperature or None,
        remove_accidental_hits=remove_hits)

  # The towers have plain Python control flow only: skipping their autograph
  # conversion saves most of the (CPU-bound) tracing time.
  @tf.autograph.experimental.do_not_convert
  def _embed(self, features):
    return self.query_model(features), self.candidate_model(features)

  def compute_loss(self, features, training=False):
    q, c = self._embed(features)
    loss = self.task(
        q, c,
        candidate_sampling_probability=(features[SAMPLING_PROB]
                                        if self.logq else None),
        candidate_ids=(tf.reshape(features[F.T_MOVIE_ID], [-1])
                       if self.remove_hits else None),
        compute_metrics=False, compute_batch_metrics=False)
    loss = loss / tf.cast(tf.maximum(tf.shape(q)[0], 1), loss.dtype)
    return strategy_lib.scale_loss(loss)

  def row_features(self):
    """Embedding tables indexed by a vocabulary (see warm_start.py)."""
    return model_parts.row_features(self.query_model.layers[0],
                                    self.candidate_model.layers[0])

  def build_on(self, features) -> None:
    """Creates the towers' variables from one batch (before fit); idempotent."""
    if not (self.query_model.built and self.candidate_model.built):
      self._embed(features)


def build_model(tft_output: tft.TFTransformOutput, cfg: Mapping[str, Any]) -> RetrievalModel:
  """The untrained two-tower model of config `cfg`."""
  q_layers = list(cfg["query_layers"])
  c_layers = list(cfg["candidate_layers"])
  if not q_layers or not c_layers or q_layers[-1] != c_layers[-1]:
    raise ValueError("query_layers and candidate_layers must end with the "
                     f"same output size: {q_layers} vs {c_layers}")
  user_encoder = model_parts.UserEncoder(
      tft_output, embedding_dim=cfg["embedding_dim"], side_dim=cfg["side_dim"],
      include_context=bool(cfg["use_timestamp"]), name="user_encoder")
  movie_encoder = model_parts.MovieEncoder(
      tft_output, embedding_dim=cfg["embedding_dim"], side_dim=cfg["side_dim"],
      name="movie_encoder")
  query = _tower(user_encoder, q_layers, cfg["l2"], cfg["normalize"], "query_tower")
  candidate = _tower(movie_encoder, c_layers, cfg["l2"], cfg["normalize"],
                     "candidate_tower")
  return RetrievalModel(query, candidate, cfg["temperature"],
                        bool(cfg["logq_correction"]),
                        bool(cfg["remove_accidental_hits"]))


def _optimizer(cfg: Mapping[str, Any]):
  name = str(cfg["optimizer"]).lower()
  lr = float(cfg["learning_rate"])
  if name == "adam":
    return keras.optimizers.Adam(lr)
  if name == "adagrad":
    return keras.optimizers.Adagrad(lr)
  if name == "sgd":
    return keras.optimizers.SGD(lr)
  raise ValueError(f"Unknown optimizer {cfg['optimizer']!r}")


# ---------------------------------------------------------------------------
# Input pipeline.

def _unknown_values(tft_output: tft.TFTransformOutput, names) -> Dict[str, Any]:
  """Transformed value of an "unknown" side feature (its OOV / default)."""
  out = {}
  for n in names:
    if n == F.T_USER_AGE:
      out[n] = 0.0  # unknown age sits at the mean
    elif n == F.T_USER_GENDER:
      out[n] = preprocessing.GENDER_UNKNOWN
    else:
      out[n] = tft_output.num_buckets_for_transformed_feature(n) - 1
  return out


def train_dataset(files: List[str], tft_output: tft.TFTransformOutput,
                  cfg: Mapping[str, Any], stats: Mapping[str, Any]) -> tf.data.Dataset:
  """Endless, reshuffled batches of equal size with OOV / dropout augmentation.

  Unlike model_parts.make_dataset (10k-record shuffle buffer) this caches
  the serialized records and shuffles over up to `shuffle_buffer` of them:
  in-batch negatives need batches that mix users and movies well even when
  the examples are stored grouped.
  """
  names = set(model_parts.transformed_names(tft_output))
  spec = tft_output.transformed_feature_spec()
  batch_size = int(cfg["batch_size"])
  seed = int(cfg["seed"])
  n_rows = stats["num_rows"]
  oov_user = tft_output.num_buckets_for_transformed_feature(F.T_USER_ID) - 1
  oov_movie = tft_output.num_buckets_for_transformed_feature(F.T_MOVIE_ID) - 1
  side = [n for n in USER_SIDE if n in names]
  unknown = _unknown_values(tft_output, side)
  probs = tf.constant(stats["movie_counts"] / max(1.0, stats["movie_counts"].sum()),
                      tf.float32)
  oov_rate = float(cfg["oov_rate"])
  dropout = float(cfg["feature_dropout"])

  def augment(batch):
    batch = dict(batch)
    movie = tf.reshape(batch[F.T_MOVIE_ID], [-1])
    batch[SAMPLING_PROB] = tf.gather(probs, movie)
    n = tf.shape(movie)[0]
    if oov_rate > 0:
      user = tf.reshape(batch[F.T_USER_ID], [-1])
      batch[F.T_USER_ID] = tf.where(tf.random.uniform([n]) < oov_rate,
                                    tf.constant(oov_user, user.dtype), user)
      batch[F.T_MOVIE_ID] = tf.where(tf.random.uniform([n]) < oov_rate,
                                     tf.constant(oov_movie, movie.dtype), movie)
    if dropout > 0:
      for name in side:
        v = tf.reshape(batch[name], [-1])
        batch[name] = tf.where(tf.random.uniform([n]) < dropout,
                               tf.constant(unknown[name], v.dtype), v)
    return batch

  ds = tf.data.TFRecordDataset(sorted(files), compression_type="GZIP").cache()
  ds = ds.shuffle(min(n_rows, int(cfg["shuffle_buffer"])), seed=seed,
                  reshuffle_each_iteration=True).repeat()
  ds = ds.batch(min(batch_size, n_rows), drop_remainder=True)
  ds = ds.map(lambda s: tf.io.parse_example(s, spec),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def _files(patterns: List[str]) -> List[str]:
  files = []
  for p in patterns:
    files.extend(tf.io.gfile.glob(p))
  if not files:
    raise FileNotFoundError(f"No examples match {patterns}")
  return sorted(files)


# ---------------------------------------------------------------------------
# TFX entry point.

def run_fn(fn_args) -> None:
  """Trains the retrieval model and exports it with its serving tables."""
  cfg = get_config(fn_args)
  catalogue_uri = catalogue_uri_of(fn_args)
  if not catalogue_uri:
    raise ValueError(
        "The retrieval trainer needs the movie catalogue: use "
        "components.catalogue_trainer.CatalogueTrainer(catalogue=...) or set "
        "custom_config['catalogue_uri'] to an Examples artifact URI with "
        "Split-catalogue/*.gz.")
  # First: MultiWorkerMirroredStrategy must be set up before other TF work.
  strategy = strategy_lib.create(cfg["distribution_strategy"])
  serving_dir, run_dir = strategy_lib.output_dirs(
      strategy, fn_args.serving_model_dir, fn_args.model_run_dir)
  seed = int(cfg["seed"])
  keras.utils.set_random_seed(seed)

  tft_output = tft.TFTransformOutput(fn_args.transform_output
                                     or fn_args.transform_graph_path)
  train_files = _files(fn_args.train_files)
  t0 = time.time()
  stats = training_stats(train_files, tft_output)
  logging.info("Retrieval: %d training rows, %d users", stats["num_rows"],
               len(stats["user_table"][F.USER_ID]))

  with strategy.scope():
    model = build_model(tft_output, cfg)
    build = lambda: model.build_on(_one_batch(train_files, tft_output))
    start = warm_start.warm_start(fn_args, cfg, model, build, tft_output,
                                  model.row_features(), "retrieval")
    if not strategy_lib.is_default(strategy):
      build()
    model.compile(optimizer=_optimizer(cfg))
  batch = min(int(cfg["batch_size"]), stats["num_rows"])
  steps_per_epoch = max(1, stats["num_rows"] // batch)
  epochs = int(cfg["epochs"])
  if fn_args.train_steps:
    epochs = max(1, math.ceil(fn_args.train_steps / steps_per_epoch))
    steps_per_epoch = max(1, math.ceil(fn_args.train_steps / epochs))
  callbacks = [model_parts.LogEpochs("retrieval")]
  if run_dir:
    callbacks.append(keras.callbacks.TensorBoard(
        log_dir=run_dir, update_freq="epoch", profile_batch=0))
  train_ds = strategy_lib.distribute_dataset(
      train_dataset(train_files, tft_output, cfg, stats))
  history = model.fit(train_ds,
                      epochs=epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, verbose=int(cfg.get("verbose", 0)))
  train_seconds = time.time() - t0

  export_model(serving_dir, tft_output, model, cfg, stats,
               catalogue_uri, extra_manifest={
                   "train_seconds": round(train_seconds, 1),
                   "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                   "final_loss": (float(history.history["loss"][-1])
                                  if history.history.get("loss") else None),
                   "warm_start": start["status"],
                   "replicas": strategy.num_replicas_in_sync})
  warm_start.save(serving_dir, model, tft_output, model.row_features(), "retrieval")
  warm_start.write_report(run_dir, start)


def _one_batch(files: List[str], tft_output: tft.TFTransformOutput):
  """A few transformed training examples (to create a model's variables)."""
  ds = model_parts.make_dataset(files, tft_output, batch_size=2, shuffle=False,
                                num_epochs=1)
  return next(iter(ds))


def export_model(serving_model_dir: str, tft_output: tft.TFTransformOutput,
                 model: RetrievalModel, cfg: Mapping[str, Any],
                 stats: Mapping[str, Any], catalogue_uri: str,
                 extra_manifest: Optional[Mapping[str, Any]] = None) -> None:
  """Saves the SavedModel (3 signatures) and writes assets.extra tables."""
  export = retrieval_export.RetrievalExport(
      tft_output, model.query_model, model.candidate_model,
      stats["user_table"], top_k=int(cfg["top_k"]))
  catalogue = retrieval_export.read_catalogue(catalogue_uri)
  embeddings = retrieval_export.embed_catalogue(export, catalogue["serialized"])
  export.build_index(catalogue["movie_ids"], catalogue["movie_titles"], embeddings)
  tf.saved_model.save(export, serving_model_dir, signatures=export.signatures())
  manifest = {"top_k": export.index._k,  # pylint: disable=protected-access
              "embedding_dim": int(embeddings.shape[1]),
              "config": {k: v for k, v in cfg.items()
                         if isinstance(v, (int, float, str, bool, list))}}
  manifest.update(extra_manifest or {})
  retrieval_export.write_assets(serving_model_dir, tft_output, catalogue,
                                embeddings, stats, manifest)
