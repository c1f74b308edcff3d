"""Ranking stage: a TFRS multi-task model trained by the TFX Trainer (`run_fn`).

What it is for: ordering the ~100 candidates retrieval returns for a user
(serving/recommender.py), and showing a predicted rating with each. Two
tasks share the user and movie encoders (as in the TFRS multitask tutorial):

* engagement (orders the list): a softmax over every training movie of
  user_vec · movie_vec, where the user vector holds the user's features and
  the user's rated movies (model_parts.UserHistory); its logit is `scores`.
  Above `engagement_full_max_movies` movies the softmax is over the batch's
  movies instead (log-Q corrected), so a step costs the same at any
  catalogue size;
* rating: rating = global_mean + user_bias + movie_bias + deep([user_vec,
  movie_vec]), the deep part "dense" (the TFRS ranking tutorial's stack) or
  "dcn" (tfrs.layers.dcn.Cross layers, stacked or parallel, as in the TFRS
  DCN tutorial), its last layer starting at zero; it is `predictions`.

Beside the two tasks the model carries EASE's closed-form item-item weights
(Steck 2019; trainer_modules/ease.py), fitted on the training histories when
the movie vocabulary is small enough (`ease_max_movies`), and exports the
mean weight from the user's history to the row's movie as
`item_item_scores`. Serving fuses the retrieval, engagement and item-item
orders (serving.recommender.fuse_ranks): on ml-100k the two-stage nDCG@10
goes from 0.394 (retrieval + engagement) to 0.448, where EASE alone scores
0.442. The item-item weights are not trained with the tasks: trained
end-to-end (model_parts.ItemItem, `item_item_max_movies`) they moved nDCG@10
by 0.002 for twice the training time, while the closed form costs a second.

Why not order by the predicted rating: on ml-100k (random 80/20 split,
per-user nDCG@10 of the top-10 with seen movies excluded) sorting the
retrieval's 100 candidates by predicted rating scored 0.197, below
most-popular (0.22) and far below retrieval's own order (0.374): it
promotes rarely seen movies with a few high ratings. The engagement order
scores 0.386, and serving fuses it with the retrieval order (0.406,
serving.recommender.fuse_ranks). As a weak fourth rank in that fusion the
predicted rating does help (0.449 → 0.454 ± 0.001, 3 seeds): it says how
much the user will like a candidate, which the other orders do not. The
rating task also improves the shared encoders: test RMSE 0.909 (0.925 for
the rating-only model; user+item bias 0.945). Implicit-feedback data (no
rating) trains the engagement task alone and exports only `scores`.

A small fraction of training ids is replaced by the vocabulary's OOV index
(`oov_rate`), so the OOV embedding and bias rows are trained and a user or
movie never seen in training gets a sensible (average) prediction.

Export (fn_args.serving_model_dir, SavedModel):
* `serving_default`: `examples` (serialized tf.Example, tf.string [None], raw
  contract features; only user_id and movie_id required: a known user's
  left-out features are the user's own from training, model_parts.
  UserDefaults) → `scores` (float32 [None], higher first), with ratings
  `predictions` (float32 [None], clipped to the training rating range), and
  with EASE weights `item_item_scores` (float32 [None], higher first; 0 for
  a user without training history).
* `transform_features`: `examples` → the transformed features (sparse lists
  densified with -1), for TFMA and debugging (as in the TFX taxi template).

Every hyperparameter comes from `custom_config` (trainer_modules/configs.py
RankingConfig: types, bounds, defaults; an unknown key or a bad value stops
run_fn with a ConfigError); the defaults were chosen on ml-100k with
benchmarks/two_stage_quality.py (see the figures above; the whole trainer
takes about 30 s on 2 cores).

`warm_start` (default True) starts from fn_args.base_model, the last blessed
ranking model (trainer_modules/warm_start.py); `distribution_strategy`
(default "auto") picks the tf.distribute strategy (trainer_modules/strategy.py).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, Mapping, Optional

import numpy as np

import common  # noqa: F401  pylint: disable=unused-import  (TF_USE_LEGACY_KERAS)

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft
import tf_keras as keras

from common import features as F
from trainer_modules import budget
from trainer_modules import configs
from trainer_modules import ease
from trainer_modules import model_parts
from trainer_modules import optimizers
from trainer_modules import strategy as strategy_lib
from trainer_modules import warm_start

# Every key with its default (trainer_modules/configs.py RankingConfig).
DEFAULT_CONFIG: Dict[str, Any] = configs.defaults("ranking")

SERVING_SIGNATURE = "serving_default"
SCORES_KEY = "scores"                    # serving order (higher first)
ITEM_ITEM_KEY = "item_item_scores"       # EASE score of the user's history
TARGET_MOVIE = "__target_movie_idx"      # the row's movie before OOV augmentation
TRANSFORM_SIGNATURE = "transform_features"
INPUT_KEY = "examples"
OUTPUT_KEY = "predictions"


def engagement_full(cfg: Mapping[str, Any], num_movies: int) -> bool:
  """Whether the engagement softmax scores the whole movie table."""
  mode = cfg["engagement_negatives"]
  return mode == "full" or (
      mode == "auto" and num_movies <= int(cfg["engagement_full_max_movies"]))


def resolve_config(custom_config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
  """DEFAULT_CONFIG updated by custom_config; a bad key or value is a ConfigError."""
  return configs.validate("ranking", custom_config)


class RankingModel(tfrs.models.Model):
  """Rating regression on the shared user and movie encoders."""

  def __init__(self, tft_output: tft.TFTransformOutput, config: Mapping[str, Any],
               global_mean: float = 3.5, stats: Optional[Mapping[str, Any]] = None,
               has_rating: bool = True, **kwargs):
    super().__init__(**kwargs)
    cfg = resolve_config(config)
    self._cfg = cfg
    stats = stats or {}
    self.has_rating = bool(has_rating) and float(cfg["rating_weight"]) > 0
    self.has_engagement = (float(cfg["engagement_weight"]) > 0
                           and stats.get("movie_table") is not None)
    if not (self.has_rating or self.has_engagement):
      raise ValueError("The ranking model needs a task: rating_weight > 0 "
                       "with explicit ratings, or engagement_weight > 0")
    self.user_history = None
    if cfg["history"] and stats.get("history") is not None:
      self.user_history = model_parts.UserHistory(
          stats["history"], stats["num_movie_buckets"], int(cfg["embedding_dim"]),
          dropout=float(cfg["history_dropout"]),
          max_len=cfg["history_max_len"], name="user_history")
    self._movie_table = stats.get("movie_table") if self.has_engagement else None
    # In-batch engagement negatives: log of each movie's training frequency.
    self._log_q = None
    if self.has_engagement and not engagement_full(
        cfg, stats.get("num_movie_buckets", 0)):
      counts = np.asarray(stats["movie_counts"], np.float64)
      self._log_q = tf.constant(
          np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)), tf.float32)
    self.item_item = None
    n_movies = stats.get("num_movie_buckets", 0)
    # Fixed (closed-form) item-item weights: a serving signal of their own.
    self.ease = None
    if self.user_history is not None and stats.get("ease") is not None:
      self.ease = model_parts.ItemItem(n_movies, weights=stats["ease"], name="ease")
    if (self.has_engagement and self.user_history is not None
        and self._log_q is None  # a movie × movie term needs the full softmax
        and 0 < n_movies <= int(cfg["item_item_max_movies"])):
      self.item_item = model_parts.ItemItem(
          n_movies, l2=float(cfg["item_item_l2"]), name="item_item")
    if self.has_engagement:
      layers = [int(u) for u in cfg["engagement_layers"]]
      make = lambda side: [keras.layers.Dense(
          u, activation=None if i == len(layers) - 1 else "relu",
          name=f"{side}_engagement_{i}") for i, u in enumerate(layers)]
      self.user_engagement = make("user")
      self.movie_engagement = make("movie")
    self.user_encoder = model_parts.UserEncoder(
        tft_output, embedding_dim=cfg["embedding_dim"], side_dim=cfg["side_dim"],
        include_context=cfg["include_context"], name="user_encoder")
    self.movie_encoder = model_parts.MovieEncoder(
        tft_output, embedding_dim=cfg["embedding_dim"], side_dim=cfg["side_dim"],
        name="movie_encoder")
    sizes = model_parts.vocab_sizes(tft_output, [F.T_USER_ID, F.T_MOVIE_ID])
    # Vocabulary + one OOV bucket: the OOV index is the last row.
    self._oov = {name: size - 1 for name, size in sizes.items()}
    kernel_reg = (keras.regularizers.l2(cfg["kernel_l2"])
                  if cfg["kernel_l2"] else None)

    self.cross_layers = []
    if cfg["architecture"] == "dcn":
      for i in range(int(cfg["num_cross_layers"])):
        self.cross_layers.append(tfrs.layers.dcn.Cross(
            projection_dim=cfg["cross_projection_dim"],
            kernel_initializer="glorot_uniform", kernel_regularizer=kernel_reg,
            name=f"cross_{i}"))
    self.deep_layers = []
    for i, width in enumerate(cfg["layer_sizes"]):
      self.deep_layers.append(keras.layers.Dense(
          int(width), activation="relu", kernel_regularizer=kernel_reg,
          name=f"dense_{i}"))
      if cfg["dropout"]:
        self.deep_layers.append(keras.layers.Dropout(cfg["dropout"]))
    # Starts at 0: the first predictions are the global mean (plus biases).
    self.output_layer = keras.layers.Dense(
        1, kernel_initializer="zeros", name="rating")

    self.use_bias = bool(cfg["use_bias"])
    # Predictions are made around the training mean (also without biases).
    self.global_mean = tf.Variable(float(global_mean), trainable=False,
                                   dtype=tf.float32, name="global_mean")
    if self.use_bias:
      self.user_bias = keras.layers.Embedding(
          sizes[F.T_USER_ID], 1, embeddings_initializer="zeros", name="user_bias")
      self.movie_bias = keras.layers.Embedding(
          sizes[F.T_MOVIE_ID], 1, embeddings_initializer="zeros", name="movie_bias")
    # Labels and predictions are [batch] vectors, so MSE already averages over
    # the batch (its last axis); SUM only avoids Keras' refusal of the
    # default reduction outside compile() under a distribution strategy.
    self.task = tfrs.tasks.Ranking(
        loss=keras.losses.MeanSquaredError(reduction=keras.losses.Reduction.SUM),
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])

  def _replace_by_oov(self, features: Mapping[str, Any]) -> Dict[str, Any]:
    """Sends a random `oov_rate` fraction of ids to the OOV row (training)."""
    features = dict(features)
    rate = float(self._cfg["oov_rate"])
    if rate <= 0:
      return features
    for name, oov in self._oov.items():
      ids = tf.cast(tf.reshape(features[name], [-1]), tf.int64)
      drop = tf.random.uniform(tf.shape(ids)) < rate
      features[name] = tf.where(drop, tf.constant(oov, tf.int64), ids)
    return features

  def _user_parts(self, features: Mapping[str, Any], training: bool):
    """The user vector and the user's (masked) history, or None."""
    user = self.user_encoder(features)
    hist = None
    if self.user_history is not None:
      if training:
        hist = self.user_history.masked(features[F.T_USER_ID],
                                        features.get(TARGET_MOVIE), training=True)
        pooled = self.user_history.pool(hist)
      else:  # serving / evaluation: each distinct user's history pooled once
        pooled = self.user_history.pool_by_user(features[F.T_USER_ID])
        if self.item_item is not None:
          hist = self.user_history.histories(features[F.T_USER_ID])
      user = tf.concat([user, pooled], axis=1)
    return user, hist

  @staticmethod
  def _apply(layers, x):
    for layer in layers:
      x = layer(x)
    return x

  def engagement_logits(self, features: Mapping[str, Any], training: bool,
                        parts=None):
    """Logit of the row's own movie [batch] (the serving score) and the user
    vectors. `parts`: _user_parts of these features, when already made."""
    user, hist = parts or self._user_parts(features, training)
    q = self._apply(self.user_engagement, user)
    c = self._apply(self.movie_engagement, self.movie_encoder(features))
    logit = tf.reduce_sum(q * c, axis=1)
    if self.item_item is not None:
      logit = logit + self.item_item.scores(hist, features[F.T_MOVIE_ID])
    return logit / float(self._cfg["temperature"]), q

  def _engagement_loss(self, features: Mapping[str, Any], training: bool,
                       parts=None):
    """Softmax over every training movie; rows of OOV movies are skipped."""
    if self._log_q is not None:
      return self._in_batch_engagement_loss(features, training, parts)
    user, hist = parts or self._user_parts(features, training)
    q = self._apply(self.user_engagement, user)
    c = self._apply(self.movie_engagement, self.movie_encoder(self._movie_table))
    logits = tf.matmul(q, c, transpose_b=True)
    if self.item_item is not None:
      logits = logits + self.item_item.all_scores(hist)
    logits = logits / float(self._cfg["temperature"])
    oov = self._oov[F.T_MOVIE_ID]
    # The OOV row stands for many movies: it is neither a target nor a negative.
    logits = logits + tf.one_hot(oov, tf.shape(c)[0], on_value=-1e9, off_value=0.0)
    labels = tf.reshape(tf.cast(features[TARGET_MOVIE], tf.int64), [-1])
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                            logits=logits)
    keep = tf.cast(tf.not_equal(labels, oov), losses.dtype)
    return tf.reduce_sum(losses * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)

  def _in_batch_engagement_loss(self, features: Mapping[str, Any],
                                training: bool, parts=None):
    """The engagement softmax over the batch's movies (engagement_negatives
    in_batch): each row's movie against the other rows' movies, their
    logits lowered by log Q (a movie's chance to be an in-batch negative is
    its training frequency, as in tfrs.tasks.Retrieval), the same movie in
    another row not a negative. As in the full softmax, the OOV row is
    neither a target nor a negative."""
    user = (parts or self._user_parts(features, training))[0]
    q = self._apply(self.user_engagement, user)
    c = self._apply(self.movie_engagement, self.movie_encoder(features))
    logits = tf.matmul(q, c, transpose_b=True) / float(self._cfg["temperature"])
    movies = tf.reshape(tf.cast(features[F.T_MOVIE_ID], tf.int64), [-1])
    logits = logits - tf.gather(self._log_q, movies)[tf.newaxis, :]
    n = tf.shape(movies)[0]
    oov = tf.equal(movies, self._oov[F.T_MOVIE_ID])
    not_negative = (tf.equal(movies[:, tf.newaxis], movies[tf.newaxis, :])
                    & ~tf.cast(tf.eye(n), tf.bool)) | oov[tf.newaxis, :]
    logits = tf.where(not_negative, tf.constant(-1e9, logits.dtype), logits)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.range(n, dtype=tf.int64), logits=logits)
    keep = tf.cast(~oov, losses.dtype)
    return tf.reduce_sum(losses * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)

  def _score(self, features: Mapping[str, Any], training: bool, parts=None):
    """Predicted ratings [batch] and the regularization term."""
    user = (parts or self._user_parts(features, training))[0]
    movie = self.movie_encoder(features)
    x = tf.concat([user, movie], axis=1)
    if self.cross_layers:
      x0 = x
      xl = x0
      for layer in self.cross_layers:
        xl = layer(x0, xl)
      if self._cfg["dcn_structure"] == "stacked":
        x = xl
      else:
        deep = x0
        for layer in self.deep_layers:
          deep = layer(deep, training=training)
        x = tf.concat([xl, deep], axis=1)
    if not (self.cross_layers and self._cfg["dcn_structure"] == "parallel"):
      for layer in self.deep_layers:
        x = layer(x, training=training)
    pred = tf.reshape(self.output_layer(x), [-1]) + self.global_mean
    # L2 on what this batch looked up (the usual matrix-factorization form).
    reg = tf.reduce_sum(tf.square(user), axis=1) + tf.reduce_sum(
        tf.square(movie), axis=1)
    if self.use_bias:
      b_u = tf.reshape(self.user_bias(tf.reshape(features[F.T_USER_ID], [-1])), [-1])
      b_m = tf.reshape(self.movie_bias(tf.reshape(features[F.T_MOVIE_ID], [-1])), [-1])
      pred = pred + b_u + b_m
      reg = reg + tf.square(b_u) + tf.square(b_m)
    return pred, tf.reduce_mean(reg)

  # No Python control flow on tensors here: skipping AutoGraph's conversion of
  # this call tree saves most of a minute of tracing on 2 cores.
  @tf.autograph.experimental.do_not_convert
  def call(self, features: Mapping[str, Any], training: bool = False):
    """{"predictions": rating [batch] (rating task), "scores": the serving
    order [batch]: engagement logit + rating_blend × rating}."""
    features = dict(features)
    features.setdefault(TARGET_MOVIE, features[F.T_MOVIE_ID])
    if training:
      features = self._replace_by_oov(features)
    out = {}
    # One user vector (encoder + history) for both tasks.
    parts = self._user_parts(features, bool(training))
    if self.has_rating:
      out[OUTPUT_KEY], _ = self._score(features, bool(training), parts)
    if self.has_engagement:
      scores, _ = self.engagement_logits(features, bool(training), parts)
      blend = float(self._cfg["rating_blend"])
      if blend and self.has_rating:
        scores = scores + blend * out[OUTPUT_KEY]
      out[SCORES_KEY] = scores
    else:
      out[SCORES_KEY] = out[OUTPUT_KEY]
    if self.ease is not None:
      out[ITEM_ITEM_KEY] = self.ease.scores(
          self.user_history.histories(features[F.T_USER_ID]), features[F.T_MOVIE_ID])
    return out

  @tf.autograph.experimental.do_not_convert
  def compute_loss(self, features: Mapping[str, Any], training: bool = False):
    features = dict(features)
    features.setdefault(TARGET_MOVIE, features[F.T_MOVIE_ID])
    if training:
      features = self._replace_by_oov(features)
    loss = 0.0
    # One user vector (encoder + history, one dropout draw) for both tasks,
    # as in the TFRS multitask tutorial; computed per task it cost a third
    # of the training step.
    parts = self._user_parts(features, training)
    if self.has_rating:
      labels = tf.reshape(tf.cast(features[F.T_LABEL], tf.float32), [-1])
      pred, reg = self._score(features, training, parts)
      rating_loss = self.task(labels=labels, predictions=pred, training=training)
      if training and self._cfg["l2"]:
        rating_loss = rating_loss + float(self._cfg["l2"]) * reg
      loss = float(self._cfg["rating_weight"]) * rating_loss
    if self.has_engagement:
      loss = loss + float(self._cfg["engagement_weight"]) * self._engagement_loss(
          features, training, parts)
    return strategy_lib.scale_loss(loss)

  def row_features(self):
    """Tables indexed by a vocabulary (warm_start.py remaps them by token)."""
    pairs = model_parts.row_features(self.user_encoder, self.movie_encoder)
    if self.user_history is not None:
      pairs.append((self.user_history.embedding, F.T_MOVIE_ID))
    if self.use_bias and self.has_rating:
      pairs += [(self.user_bias, F.T_USER_ID), (self.movie_bias, F.T_MOVIE_ID)]
    return pairs

  def build_on(self, features) -> None:
    """Creates the variables from one batch (before fit); idempotent.

    In training mode, so the dropout layers' random-generator state is
    created too (a distributed fit cannot create it inside its tf.function).
    """
    if not self.built:
      self(features, training=True)


class ExportModule(tf.Module):
  """What is saved: the model, the request parsers and the two signatures."""

  def __init__(self, model: RankingModel, tft_output: tft.TFTransformOutput,
               rating_min: float, rating_max: float,
               user_table: Optional[Mapping[str, Any]] = None):
    super().__init__()
    self.model = model
    raw_names = [n for n in F.FEATURES if n != F.LABEL_KEY]
    # A known user's left-out features (side features, and the time context
    # of the user's last training rating) come from training, as in retrieval.
    self.user_defaults = (model_parts.UserDefaults(user_table)
                          if user_table is not None else None)
    # Tracked here, so the Transform graph and its vocabulary assets are saved.
    self.parser = model_parts.RawRequestParser(
        tft_output, raw_names, required=(F.USER_ID, F.MOVIE_ID),
        user_defaults=self.user_defaults)
    self.rating_min = tf.constant(float(rating_min))
    self.rating_max = tf.constant(float(rating_max))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)],
               autograph=False)
  def serve(self, examples):
    transformed = self.parser(examples)
    out = self.model(transformed, training=False)
    result = {SCORES_KEY: tf.cast(tf.reshape(out[SCORES_KEY], [-1]), tf.float32)}
    if OUTPUT_KEY in out:
      pred = tf.clip_by_value(tf.reshape(out[OUTPUT_KEY], [-1]),
                              self.rating_min, self.rating_max)
      result[OUTPUT_KEY] = tf.cast(pred, tf.float32)
    if ITEM_ITEM_KEY in out:
      result[ITEM_ITEM_KEY] = tf.cast(tf.reshape(out[ITEM_ITEM_KEY], [-1]), tf.float32)
    return result

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)],
               autograph=False)
  def transform_features(self, examples):
    transformed = self.parser(examples)
    out = {}
    for name, value in transformed.items():
      if isinstance(value, tf.SparseTensor):
        default = "" if value.dtype == tf.string else tf.cast(-1, value.dtype)
        value = tf.sparse.to_dense(value, default_value=default)
      out[name] = value
    return out


def _training_stats(file_patterns, tft_output) -> Dict[str, Any]:
  """One pass over the training split: label statistics (when rated), the
  user table (model_parts.user_table), users' histories and the movie table
  (each training movie's transformed features, for the engagement softmax)."""
  names = set(model_parts.transformed_names(tft_output))
  has_label = F.T_LABEL in names
  side = [n for n in model_parts.USER_SIDE + model_parts.USER_CONTEXT if n in names]
  ds = model_parts.make_dataset(file_patterns, tft_output, batch_size=8192,
                                shuffle=False, num_epochs=1)
  n, total, lo, hi = 0, 0.0, math.inf, -math.inf
  users, user_idx, movie_idx = [], [], []
  values = {name: [] for name in side}
  n_movies = tft_output.num_buckets_for_transformed_feature(F.T_MOVIE_ID)
  bags = [b for b in model_parts.MOVIE_BAG if b in names]
  movie_bags = {b: [None] * n_movies for b in bags}
  for batch in ds:
    m = np.reshape(batch[F.T_MOVIE_ID].numpy(), [-1])
    n += len(m)
    if has_label:
      y = tf.reshape(batch[F.T_LABEL], [-1]).numpy()
      total += float(y.sum())
      lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
    users.append(np.reshape(batch[F.T_RAW_USER_ID].numpy(), [-1]))
    user_idx.append(np.reshape(batch[F.T_USER_ID].numpy(), [-1]))
    movie_idx.append(m)
    for name in side:
      values[name].append(np.reshape(batch[name].numpy(), [-1]))
    # Bags of the movies first seen in this batch (vectorised per batch).
    new = [i for i, movie in zip(*np.unique(m, return_index=True)[::-1])
           if movie_bags[bags[0]][movie] is None] if bags else []
    for b in bags:
      sp = batch[b]
      rows, vals = sp.indices.numpy()[:, 0], sp.values.numpy()
      for i in new:
        movie_bags[b][m[i]] = vals[rows == i]
  if n == 0:
    raise ValueError("The training split has no examples.")
  users = np.concatenate(users)
  user_idx = np.concatenate(user_idx)
  movie_idx = np.concatenate(movie_idx)
  values = {k: np.concatenate(v) for k, v in values.items()}
  movie_table = {F.T_MOVIE_ID: tf.range(n_movies, dtype=tf.int64)}
  for b in bags:
    lists = [x if x is not None else np.zeros([0], np.int64) for x in movie_bags[b]]
    movie_table[b] = tf.RaggedTensor.from_row_lengths(
        np.concatenate(lists).astype(np.int64),
        [len(x) for x in lists]).to_sparse()
  return {"count": n, "mean": total / n if has_label else 0.0,
          "min": lo if has_label else 0.0, "max": hi if has_label else 1.0,
          "has_label": has_label,
          "user_table": model_parts.user_table(users, values),
          "history": model_parts.user_histories(
              user_idx, movie_idx,
              tft_output.num_buckets_for_transformed_feature(F.T_USER_ID)),
          "num_movie_buckets": n_movies, "movie_table": movie_table,
          "movie_counts": np.bincount(movie_idx, minlength=n_movies)}


def _fit_ease(stats: Mapping[str, Any], cfg: Mapping[str, Any]) -> Optional[np.ndarray]:
  """EASE weights B over the movie vocabulary from the training histories,
  or None when off, without history, or above `ease_max_movies`."""
  n = int(stats["num_movie_buckets"])
  cap = int(cfg["ease_max_movies"] or 0)
  if not cfg["history"] or stats.get("history") is None or not 0 < n <= cap:
    if cap:
      logging.info("EASE item-item scores off (%d movie buckets, ease_max_movies=%d, "
                   "history=%s)", n, cap, cfg["history"])
    return None
  from scipy import sparse  # pylint: disable=g-import-not-at-top
  hist = stats["history"]
  lengths = np.array([len(h) for h in hist], np.int64)
  cols = np.concatenate([np.asarray(h, np.int64) for h in hist]) if lengths.sum() else (
      np.zeros([0], np.int64))
  rows = np.repeat(np.arange(len(hist)), lengths)
  x = sparse.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)),
                        shape=(len(hist), n))
  t0 = time.time()
  b = ease.fit(x, lam=float(cfg["ease_lambda"]))
  logging.info("EASE item-item weights: %d movies, lambda %s, %.1fs", n,
               cfg["ease_lambda"], time.time() - t0)
  return b




def _transform_dir(fn_args) -> str:
  path = getattr(fn_args, "transform_output", None) or getattr(
      fn_args, "transform_graph_path", None)
  if not path:
    raise ValueError("The ranking trainer needs the Transform output "
                     "(fn_args.transform_output / transform_graph_path).")
  return path


def export(model: RankingModel, tft_output: tft.TFTransformOutput,
           serving_model_dir: str, rating_min: float, rating_max: float,
           user_table: Optional[Mapping[str, Any]] = None) -> None:
  """Saves `model` with the serving_default and transform_features signatures."""
  module = ExportModule(model, tft_output, rating_min, rating_max, user_table)
  t0 = time.time()
  model_parts.save_signatures(
      module, serving_model_dir,
      {SERVING_SIGNATURE: module.serve.get_concrete_function(),
       TRANSFORM_SIGNATURE: module.transform_features.get_concrete_function()})
  logging.info("Exported the ranking model to %s in %.1fs", serving_model_dir,
               time.time() - t0)


def run_fn(fn_args) -> None:
  """TFX Trainer entry point: trains the ranking model and exports it."""
  cfg = configs.trainer_config("ranking", fn_args)  # the Tuner's values win
  logging.info("Ranking config: %s", cfg)
  tft_output = tft.TFTransformOutput(_transform_dir(fn_args))
  has_rating = F.T_LABEL in tft_output.transformed_feature_spec()
  if not has_rating:
    logging.info("No %r label (implicit feedback): the ranking model trains "
                 "the engagement task alone.", F.T_LABEL)
  strategy = strategy_lib.create(cfg["distribution_strategy"])
  serving_dir, run_dir = strategy_lib.output_dirs(
      strategy, fn_args.serving_model_dir, getattr(fn_args, "model_run_dir", None))
  keras.utils.set_random_seed(int(cfg["seed"]))

  stats = _training_stats(fn_args.train_files, tft_output)
  stats["ease"] = _fit_ease(stats, cfg)
  batch_size = int(cfg["batch_size"])
  steps_per_epoch = max(1, math.ceil(stats["count"] / batch_size))
  epochs = budget.epochs_within(stats["count"], cfg["epochs"],
                                cfg["max_train_examples"])
  logging.info("Ranking: %d training rows, %d epochs (max_train_examples %s), "
               "engagement negatives: %s", stats["count"], epochs,
               cfg["max_train_examples"],
               "the whole movie table" if engagement_full(cfg, stats["num_movie_buckets"])
               else "in-batch")
  repeat = None
  if fn_args.train_steps:  # a total step budget overrides the epoch count
    total = int(fn_args.train_steps)
    epochs = max(1, min(epochs, round(total / steps_per_epoch)))
    steps_per_epoch = max(1, math.ceil(total / epochs))
  else:
    repeat = 1
  train_ds = model_parts.make_dataset(fn_args.train_files, tft_output, batch_size,
                                      shuffle=True, num_epochs=repeat,
                                      seed=int(cfg["seed"]))
  eval_ds = model_parts.make_dataset(fn_args.eval_files, tft_output, 4096,
                                     shuffle=False,
                                     num_epochs=None if fn_args.eval_steps else 1)

  train_ds = strategy_lib.distribute_dataset(train_ds)
  eval_ds = strategy_lib.distribute_dataset(eval_ds)

  with strategy.scope():
    model = RankingModel(tft_output, cfg, global_mean=stats["mean"], stats=stats,
                         has_rating=has_rating)
    build = lambda: model.build_on(next(iter(model_parts.make_dataset(
        fn_args.train_files, tft_output, 2, shuffle=False, num_epochs=1))))
    start = warm_start.warm_start(fn_args, cfg, model, build, tft_output,
                                  model.row_features(), "ranking")
    if (not strategy_lib.is_default(strategy)
        or cfg["embedding_optimizer"] != "same"):
      build()  # the composite optimizer splits the variables by kind
    model.compile(optimizer=optimizers.create(cfg, model, sgd_momentum=0.9))
  callbacks = [model_parts.LogEpochs("ranking")]  # to the log, not the console
  if run_dir:
    callbacks.append(keras.callbacks.TensorBoard(
        log_dir=run_dir, update_freq="epoch"))
  model.fit(train_ds, epochs=epochs,
            steps_per_epoch=steps_per_epoch if repeat is None else None,
            validation_data=eval_ds,
            validation_steps=fn_args.eval_steps or None,
            validation_freq=1 if cfg["validate_each_epoch"] else [epochs],
            callbacks=callbacks, verbose=0)
  export(model, tft_output, serving_dir, stats["min"], stats["max"],
         stats["user_table"])
  warm_start.save(serving_dir, model, tft_output, model.row_features(), "ranking")
  warm_start.write_report(run_dir, start)
