"""TFX Trainer module: the two-tower TFRS retrieval model (stage one).

`run_fn(fn_args)` trains on Transform's output and exports ONE SavedModel
(trainer_modules/retrieval_export.py documents its signatures and the
serving tables written to `assets.extra/`).

Model
* query tower: model_parts.UserEncoder (user id + the user features the
  data has, optionally the timestamp context) and the user's training
  history (mean embedding of the movies the user rated, model_parts.
  UserHistory, with the row's own movie left out in training) → dense layers;
* candidate tower: model_parts.MovieEncoder (movie id + title words +
  genres) → dense layers, so a movie unseen in training still gets a
  meaningful vector from its title and genres;
* negatives: a catalogue of up to `full_softmax_max_movies` movies is scored
  whole at every step (a true softmax over the catalogue: 1,682 movies cost
  little); larger catalogues use tfrs.tasks.Retrieval's in-batch softmax over
  the other movies of the batch, with log-Q sampling-bias correction (the
  probability of a movie being an in-batch negative is its training
  frequency) and accidental-hit removal. Temperature and L2-normalised
  embeddings (cosine scores) are options.
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

custom_config keys: trainer_modules/configs.py RetrievalConfig (types,
bounds, defaults; an unknown key or a bad value stops run_fn with a
ConfigError), among them warm_start (trainer_modules/warm_start.py: start
from fn_args.base_model) and distribution_strategy
(trainer_modules/strategy.py: auto | one_device | mirrored |
multi_worker_mirrored).
fn_args.train_steps, when set, overrides epochs (epochs × steps ≈ train_steps).
Defaults were chosen on real ml-100k (random 80/20 split, per user, movies
rated in training excluded, retrieval's own top-k; benchmarks/
two_stage_quality.py measures them beside EASE and ALS), seeds 0 and 1,
hit@100 / top-10 nDCG:
  dot product, T 1, lr 0.01, 5 epochs (the previous defaults) 0.606 / 0.357;
  cosine scores, temperature 0.1 (seed 0 only)                0.598 / 0.388;
  cosine, temperature 0.2, mask_seen (other training movies
    are not negatives of a row)                               0.608 / 0.406;
  + lr 0.005, 8 epochs                                        0.620 / 0.417;
  + movie_bias (a per-movie popularity term)                  0.621 / 0.425.
(in-batch softmax without history: 0.558 / 0.344; most-popular 0.41 / 0.22;
EASE 0.62 / 0.44.) Worse: temperature 0.05 / 0.3 / 0.5, 3 / 4 / 10 epochs,
wider towers [256, 128], embedding_dim 128, batch 512, history dropout 0.5,
sparse Adagrad embeddings at this size, and the timestamp context (0.298: a
user's eval ratings are not at the user's last training time).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import common  # noqa: F401  pylint: disable=unused-import
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft
import tf_keras as keras

from common import assets
from common import catalogue as catalogue_lib
from common import features as F
from common import ids
from trainer_modules import budget
from trainer_modules import configs
from trainer_modules import model_parts
from trainer_modules import optimizers
from trainer_modules import retrieval_export
from trainer_modules import strategy as strategy_lib
from trainer_modules import warm_start
from transform import preprocessing

# Every key with its default (trainer_modules/configs.py RetrievalConfig).
DEFAULT_CONFIG: Dict[str, Any] = configs.defaults("retrieval")
SAMPLING_PROB = "__sampling_probability"
TARGET_MOVIE = "__target_movie_idx"     # the row's movie before OOV augmentation
CATALOGUE_INDEX = "__catalogue_index"   # the row's movie in the catalogue (-1: absent)
# Transformed user side features that "unknown" replaces in feature dropout.
USER_SIDE = model_parts.USER_SIDE


def get_config(fn_args) -> Dict[str, Any]:
  """DEFAULT_CONFIG updated with fn_args.custom_config, then with the Tuner's
  values in fn_args.hyperparameters; a bad key or value is a ConfigError."""
  return configs.trainer_config("retrieval", fn_args)


def catalogue_uri_of(fn_args, cfg: Mapping[str, Any]) -> Optional[str]:
  return getattr(fn_args, "catalogue_uri", None) or cfg["catalogue_uri"]


# ---------------------------------------------------------------------------
# Training data statistics (one pass over the transformed training examples).

def training_stats(files: List[str], tft_output: tft.TFTransformOutput) -> Dict[str, Any]:
  """Row count, movie frequencies, seen lists, popularity, user feature table."""
  names = set(model_parts.transformed_names(tft_output))
  side = [n for n in USER_SIDE + model_parts.USER_CONTEXT if n in names]
  ds = model_parts.make_dataset(files, tft_output, batch_size=8192,
                                shuffle=False, num_epochs=1)
  users, movies, movie_idx, user_idx = [], [], [], []
  side_values = {n: [] for n in side}
  for batch in ds:
    # Raw ids as fixed-width bytes ("S"): a few bytes per row instead of a
    # Python bytes object each (~40 B); these arrays live through training.
    users.append(_fixed_bytes(batch[F.T_RAW_USER_ID]))
    user_idx.append(np.reshape(batch[F.T_USER_ID].numpy(), [-1]))
    movies.append(_fixed_bytes(batch[F.T_RAW_MOVIE_ID]))
    movie_idx.append(np.reshape(batch[F.T_MOVIE_ID].numpy(), [-1]))
    for n in side:
      side_values[n].append(np.reshape(batch[n].numpy(), [-1]))
  users = np.concatenate(users)
  movies = np.concatenate(movies)
  movie_idx = np.concatenate(movie_idx)
  user_idx = np.concatenate(user_idx)
  side_values = {n: np.concatenate(v) for n, v in side_values.items()}

  n_movie_buckets = tft_output.num_buckets_for_transformed_feature(F.T_MOVIE_ID)
  movie_counts = np.bincount(movie_idx, minlength=n_movie_buckets).astype(np.float64)
  history = model_parts.user_histories(
      user_idx, movie_idx,
      tft_output.num_buckets_for_transformed_feature(F.T_USER_ID))

  seen = SeenPairs.from_rows(users, movies)
  ids, counts = np.unique(movies, return_counts=True)
  order = np.lexsort((ids, -counts))  # count desc, then id

  # Per user: side features of the first row, time context of the last.
  user_table = model_parts.user_table(users, side_values)
  return {"num_rows": int(len(users)), "movie_counts": movie_counts,
          "seen": seen, "popularity_ids": ids[order],
          "popularity_counts": counts[order], "user_table": user_table,
          "history": history, "num_movie_buckets": n_movie_buckets}


def _fixed_bytes(t: tf.Tensor) -> np.ndarray:
  v = np.reshape(t.numpy(), [-1])
  return v.astype("S") if len(v) else np.zeros([0], "S1")


class SeenPairs:
  """The distinct (user, movie) pairs of the training split, compactly.

  Sorted unique raw ids of users and movies and one int64 code per pair
  (user position × movies + movie position), sorted: ~8 B per pair instead
  of a Python set per user (~200 B per rating); `to_table` gives serving's
  seen table (common/assets.py).
  """

  def __init__(self, user_ids: np.ndarray, movie_ids: np.ndarray, codes: np.ndarray):
    self.user_ids, self.movie_ids, self.codes = user_ids, movie_ids, codes

  @classmethod
  def from_rows(cls, users: np.ndarray, movies: np.ndarray) -> "SeenPairs":
    user_ids, u = np.unique(users, return_inverse=True)
    movie_ids, m = np.unique(movies, return_inverse=True)
    codes = np.unique(u.astype(np.int64) * max(1, len(movie_ids)) + m)
    return cls(user_ids, movie_ids, codes)

  def __len__(self) -> int:
    return len(self.codes)

  def to_table(self, catalogue_ids: Sequence) -> assets.SeenTable:
    """The serving table (common/assets.py): movies as positions in
    `catalogue_ids` (the exported catalogue's order); movies outside it are
    left out, every user with training rows is kept."""
    position = ids.positions(catalogue_ids, self.movie_ids)  # per movie id
    u, m = np.divmod(self.codes, max(1, len(self.movie_ids)))
    p = position[m]
    u, p = u[p >= 0], p[p >= 0]
    by_user = np.lexsort((p, u))
    u, p = u[by_user], p[by_user]
    offsets = np.concatenate(
        [[0], np.cumsum(np.bincount(u, minlength=len(self.user_ids)))])
    return assets.SeenTable(self.user_ids, offsets.astype(np.int64),
                            p.astype(np.int32))


# ---------------------------------------------------------------------------
# Model.

def _dense_stack(layers: List[int], l2: float, name: str) -> List[keras.layers.Layer]:
  reg = keras.regularizers.l2(l2) if l2 else None
  return [keras.layers.Dense(units, activation=None if i == len(layers) - 1 else "relu",
                             kernel_regularizer=reg, name=f"{name}_dense_{i}")
          for i, units in enumerate(layers)]


class Tower(keras.Model):
  """Encoder (+ the user's history for the query) → dense layers.

  With `scale` the (normalised) output is multiplied by it (the query tower
  carries the softmax temperature 1/T when there is a movie bias), with
  `bias` (candidate tower: a per-movie scalar table) the bias is appended as
  one more dimension and with `unit` (query tower) a constant 1, so the dot
  product of the exported embeddings is cosine/T + movie bias.
  """

  def __init__(self, encoder: keras.layers.Layer, layers: List[int], l2: float,
               normalize: bool, history: Optional[model_parts.UserHistory] = None,
               scale: float = 1.0, bias: Optional[keras.layers.Embedding] = None,
               unit: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.user_history = history
    self.dense = _dense_stack(layers, l2, self.name)
    self.normalize = normalize
    self.scale = float(scale)
    self.bias = bias
    self.unit = unit

  def call(self, features, training=False):
    x = self.encoder(features)
    if self.user_history is not None:
      target = features.get(TARGET_MOVIE) if training else None
      x = tf.concat([x, self.user_history(features[F.T_USER_ID], target,
                                     training=training)], axis=1)
    for layer in self.dense:
      x = layer(x)
    if self.normalize:
      x = tf.math.l2_normalize(x, axis=-1)
    if self.scale != 1.0:
      x = x * self.scale
    if self.bias is not None:
      x = tf.concat([x, self.bias(tf.reshape(features[F.T_MOVIE_ID], [-1]))], axis=1)
    if self.unit:
      x = tf.concat([x, tf.ones_like(x[:, :1])], axis=1)
    return x


class RetrievalModel(tfrs.Model):
  """Query and candidate towers trained with a softmax over movies.

  Negatives are the whole catalogue (`catalogue_features` given: every
  movie is scored at every step) or the other movies of the batch.
  """

  def __init__(self, query_model: keras.Model, candidate_model: keras.Model,
               temperature: Optional[float], logq: bool, remove_hits: bool,
               catalogue_features: Optional[Dict[str, Any]] = None,
               mask_seen: bool = False):
    super().__init__()
    self.query_model = query_model
    self.candidate_model = candidate_model
    self.logq = logq
    self.remove_hits = remove_hits
    self.temperature = float(temperature or 1.0)
    self._catalogue = catalogue_features
    # Full softmax only: the catalogue position of each movie vocabulary
    # index (-1: not in the catalogue, or the OOV row), to mask the user's
    # other training movies out of the negatives.
    self._seen_positions = None
    if (mask_seen and catalogue_features is not None
        and query_model.user_history is not None):
      self._seen_positions = _catalogue_positions(
          catalogue_features[F.T_MOVIE_ID],
          query_model.user_history.embedding.input_dim)
    # SUM here and the division by the batch size in compute_loss: Keras
    # refuses SUM_OVER_BATCH_SIZE outside compile() under a distribution
    # strategy; the result is the same batch mean.
    self.task = tfrs.tasks.Retrieval(
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.SUM),
        temperature=temperature or None,
        remove_accidental_hits=remove_hits)

  @property
  def full_softmax(self) -> bool:
    return self._catalogue is not None

  # The towers have plain Python control flow only: skipping their autograph
  # conversion saves most of the (CPU-bound) tracing time.
  @tf.autograph.experimental.do_not_convert
  def _embed(self, features, training=False):
    return (self.query_model(features, training=training),
            self.candidate_model(features, training=training))

  # Not do_not_convert: tfrs.tasks.Retrieval's call needs AutoGraph (it takes
  # len() of a tensor shape), and a Keras layer called from unconverted code
  # is not converted either. The heavy parts below are marked instead.
  def compute_loss(self, features, training=False):
    if self.full_softmax:
      loss, n = self._full_softmax_loss(features, training)
    else:
      q, c = self._embed(features, training=training)
      n = tf.shape(q)[0]
      loss = self.task(
          q, c,
          candidate_sampling_probability=(features[SAMPLING_PROB]
                                          if self.logq else None),
          candidate_ids=(tf.reshape(features[F.T_MOVIE_ID], [-1])
                         if self.remove_hits else None),
          compute_metrics=False, compute_batch_metrics=False)
    loss = loss / tf.cast(tf.maximum(n, 1), loss.dtype)
    return strategy_lib.scale_loss(loss)

  @tf.autograph.experimental.do_not_convert
  def _full_softmax_loss(self, features, training):
    """Summed softmax loss over the whole catalogue, and the batch size."""
    q = self.query_model(features, training=training)
    c = self.candidate_model(self._catalogue, training=training)
    logits = tf.matmul(q, c, transpose_b=True) / self.temperature
    labels = tf.reshape(tf.cast(features[CATALOGUE_INDEX], tf.int64), [-1])
    if self._seen_positions is not None:
      logits = self._mask_seen(features, logits, labels)
    present = labels >= 0
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=logits)
    return (tf.reduce_sum(tf.where(present, losses, tf.zeros_like(losses))),
            tf.shape(q)[0])

  def _mask_seen(self, features, logits, labels):
    """Logits of the user's other training movies set very low.

    Without this the full softmax pushes every other movie the user rated
    down as a negative of this row, although they are positives too (the
    multinomial over the whole history, as in Mult-VAE, keeps them out).
    """
    hist = self.query_model.user_history.histories(features[F.T_USER_ID])
    pos = tf.gather(self._seen_positions, hist.flat_values)
    rows = hist.value_rowids()
    keep = (pos >= 0) & tf.not_equal(pos, tf.gather(labels, rows))
    idx = tf.stack([tf.boolean_mask(rows, keep), tf.boolean_mask(pos, keep)], 1)
    mask = tf.scatter_nd(idx, tf.ones_like(idx[:, 0], tf.float32),
                         tf.shape(logits, out_type=tf.int64))
    return tf.where(mask > 0, tf.constant(-1e9, logits.dtype), logits)

  def row_features(self):
    """Embedding tables indexed by a vocabulary (see warm_start.py)."""
    pairs = model_parts.row_features(self.query_model.encoder,
                                     self.candidate_model.encoder)
    if self.query_model.user_history is not None:
      pairs.append((self.query_model.user_history.embedding, F.T_MOVIE_ID))
    if self.candidate_model.bias is not None:
      pairs.append((self.candidate_model.bias, F.T_MOVIE_ID))
    return pairs

  def build_on(self, features) -> None:
    """Creates the towers' variables from one batch (before fit); idempotent."""
    if not (self.query_model.built and self.candidate_model.built):
      self._embed(features)


def use_full_softmax(cfg: Mapping[str, Any], num_movies: int) -> bool:
  mode = cfg["negatives"]
  return mode == "full" or (
      mode == "auto" and num_movies <= int(cfg["full_softmax_max_movies"]))


def build_model(tft_output: tft.TFTransformOutput, cfg: Mapping[str, Any],
                stats: Optional[Mapping[str, Any]] = None,
                catalogue_features: Optional[Dict[str, Any]] = None) -> RetrievalModel:
  """The untrained two-tower model of config `cfg`.

  stats (training_stats) gives the users' histories when cfg["history"];
  catalogue_features (transformed catalogue) switches on the full softmax.
  """
  q_layers = list(cfg["query_layers"])  # same last size: configs checks it
  c_layers = list(cfg["candidate_layers"])
  user_encoder = model_parts.UserEncoder(
      tft_output, embedding_dim=cfg["embedding_dim"], side_dim=cfg["side_dim"],
      include_context=bool(cfg["use_timestamp"]), name="user_encoder")
  movie_encoder = model_parts.MovieEncoder(
      tft_output, embedding_dim=cfg["embedding_dim"], side_dim=cfg["side_dim"],
      name="movie_encoder")
  history = None
  if cfg["history"] and stats is not None and "history" in stats:
    history = model_parts.UserHistory(
        stats["history"], stats["num_movie_buckets"], int(cfg["embedding_dim"]),
        dropout=float(cfg["history_dropout"]),
          max_len=cfg["history_max_len"], name="user_history")
  temperature = cfg["temperature"]
  bias = None
  if cfg["movie_bias"]:  # the temperature moves into the query tower
    bias = keras.layers.Embedding(
        tft_output.num_buckets_for_transformed_feature(F.T_MOVIE_ID), 1,
        embeddings_initializer="zeros", name="movie_bias")
  query = Tower(user_encoder, q_layers, cfg["l2"], cfg["normalize"],
                history=history, name="query_tower",
                scale=1.0 / float(temperature) if bias else 1.0,
                unit=bias is not None)
  candidate = Tower(movie_encoder, c_layers, cfg["l2"], cfg["normalize"],
                    bias=bias, name="candidate_tower")
  return RetrievalModel(query, candidate, None if bias else temperature,
                        bool(cfg["logq_correction"]),
                        bool(cfg["remove_accidental_hits"]),
                        catalogue_features=catalogue_features,
                        mask_seen=bool(cfg["mask_seen"]))


def _catalogue_positions(movie_idx, num_movies: int) -> tf.Tensor:
  """[num_movies] int64: catalogue position of each movie vocabulary index,
  -1 for indices not in the catalogue and for the OOV row (shared by every
  unknown catalogue movie)."""
  idx = np.reshape(np.asarray(movie_idx), [-1]).astype(np.int64)
  out = np.full([num_movies], -1, np.int64)
  known = idx < num_movies - 1
  out[idx[known]] = np.arange(len(idx))[known]
  return tf.constant(out)




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
                  cfg: Mapping[str, Any], stats: Mapping[str, Any],
                  catalogue_ids: Optional[List[bytes]] = None) -> tf.data.Dataset:
  """Endless, reshuffled batches of equal size with OOV / dropout augmentation.

  Unlike model_parts.make_dataset (10k-record shuffle buffer) this caches
  the serialized records in memory (up to `cache_max_rows` training rows;
  larger data is read from disk every epoch) and shuffles over up to
  `shuffle_buffer` of them:
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

  catalogue_table = None
  if catalogue_ids is not None:  # full softmax: each row's catalogue position
    catalogue_table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(catalogue_ids), tf.string),
            tf.range(len(catalogue_ids), dtype=tf.int64)), default_value=-1)

  def augment(batch):
    batch = dict(batch)
    movie = tf.reshape(batch[F.T_MOVIE_ID], [-1])
    batch[SAMPLING_PROB] = tf.gather(probs, movie)
    batch[TARGET_MOVIE] = movie
    if catalogue_table is not None:
      batch[CATALOGUE_INDEX] = catalogue_table.lookup(
          tf.reshape(batch[F.T_RAW_MOVIE_ID], [-1]))
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

  ds = tf.data.TFRecordDataset(sorted(files), compression_type="GZIP")
  if n_rows <= int(cfg["cache_max_rows"]):  # ~460 B of RAM per cached row
    ds = ds.cache()
  ds = ds.shuffle(min(n_rows, int(cfg["shuffle_buffer"])), seed=seed,
                  reshuffle_each_iteration=True).repeat()
  ds = ds.batch(min(batch_size, n_rows), drop_remainder=True)
  ds = ds.map(lambda s: tf.io.parse_example(s, spec),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  return model_parts.without_autotune_model(ds.prefetch(tf.data.AUTOTUNE))


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
  catalogue_uri = catalogue_uri_of(fn_args, cfg)
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

  catalogue = catalogue_lib.read_catalogue(catalogue_uri)
  full = use_full_softmax(cfg, len(catalogue["movie_ids"]))
  logging.info("Retrieval negatives: %s (%d catalogue movies)",
               "the whole catalogue" if full else "in-batch",
               len(catalogue["movie_ids"]))

  with strategy.scope():
    model = build_model(
        tft_output, cfg, stats,
        catalogue_features=(transformed_catalogue(tft_output, catalogue)
                            if full else None))
    build = lambda: model.build_on(_one_batch(train_files, tft_output))
    start = warm_start.warm_start(fn_args, cfg, model, build, tft_output,
                                  model.row_features(), "retrieval")
    if (not strategy_lib.is_default(strategy)
        or cfg["embedding_optimizer"] != "same"):
      build()  # the composite optimizer splits the variables by kind
    model.compile(optimizer=optimizers.create(cfg, model, sgd_momentum=0.0))
  batch = min(int(cfg["batch_size"]), stats["num_rows"])
  steps_per_epoch = max(1, stats["num_rows"] // batch)
  epochs = budget.epochs_within(stats["num_rows"], cfg["epochs"],
                                cfg["max_train_examples"])
  if fn_args.train_steps:
    epochs = max(1, math.ceil(fn_args.train_steps / steps_per_epoch))
    steps_per_epoch = max(1, math.ceil(fn_args.train_steps / epochs))
  callbacks = [model_parts.LogEpochs("retrieval")]
  if run_dir:
    callbacks.append(keras.callbacks.TensorBoard(
        log_dir=run_dir, update_freq="epoch", profile_batch=0))
  train_ds = strategy_lib.distribute_dataset(
      train_dataset(train_files, tft_output, cfg, stats,
                    catalogue_ids=catalogue["movie_ids"] if full else None))
  history = model.fit(train_ds,
                      epochs=epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, verbose=cfg["verbose"])
  train_seconds = time.time() - t0

  export_model(serving_dir, tft_output, model, cfg, stats,
               catalogue, extra_manifest={
                   "negatives": "full" if full else "in_batch",
                   "train_seconds": round(train_seconds, 1),
                   "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                   "final_loss": (float(history.history["loss"][-1])
                                  if history.history.get("loss") else None),
                   "warm_start": start["status"],
                   "replicas": strategy.num_replicas_in_sync})
  warm_start.save(serving_dir, model, tft_output, model.row_features(), "retrieval")
  warm_start.write_report(run_dir, start)


def transformed_catalogue(tft_output: tft.TFTransformOutput,
                          catalogue: Mapping[str, Any]) -> Dict[str, Any]:
  """The catalogue's movie features through the Transform graph (the same
  path the exported candidate_embedding takes), for the full softmax."""
  parser = model_parts.RawRequestParser(tft_output, F.CATALOGUE_FEATURES,
                                        required=[F.MOVIE_ID])
  return parser(tf.constant(list(catalogue["serialized"]), tf.string))


def _one_batch(files: List[str], tft_output: tft.TFTransformOutput):
  """A few transformed training examples (to create a model's variables)."""
  ds = model_parts.make_dataset(files, tft_output, batch_size=2, shuffle=False,
                                num_epochs=1)
  return next(iter(ds))


def export_model(serving_model_dir: str, tft_output: tft.TFTransformOutput,
                 model: RetrievalModel, cfg: Mapping[str, Any],
                 stats: Mapping[str, Any], catalogue: Mapping[str, Any],
                 extra_manifest: Optional[Mapping[str, Any]] = None) -> None:
  """Saves the SavedModel (3 signatures) and writes assets.extra tables.

  catalogue: common.catalogue.read_catalogue()'s result.
  """
  export = retrieval_export.RetrievalExport(
      tft_output, model.query_model, model.candidate_model,
      stats["user_table"], top_k=int(cfg["top_k"]))
  embeddings = retrieval_export.embed_catalogue(export, catalogue["serialized"])
  export.build_index(catalogue["movie_ids"], catalogue["movie_titles"], embeddings)
  model_parts.save_signatures(export, serving_model_dir, export.signatures())
  manifest = {"top_k": export.index._k,  # pylint: disable=protected-access
              "embedding_dim": int(embeddings.shape[1]),
              "config": {k: v for k, v in cfg.items()
                         if isinstance(v, (int, float, str, bool, list))}}
  manifest.update(extra_manifest or {})
  retrieval_export.write_assets(serving_model_dir, tft_output, catalogue,
                                embeddings, stats, manifest)
