"""Model parts shared by the retrieval and ranking trainers.

Both stages embed the same users and movies from the same Transform output;
this module holds that once:

* `make_dataset`: transformed tf.Examples (Transform's output) as batches.
* `UserEncoder` / `MovieEncoder`: Keras layers turning the transformed user
  (and context) / movie features into one vector, using whatever features the
  data has. Embedding table sizes come from the Transform output
  (`num_buckets_for_transformed_feature`), so vocabularies are never
  recomputed and OOV rows are part of every table.
* `RawRequestParser`: the serving side. It parses serialized tf.Examples
  with the contract's raw names, only the features a signature needs, fills
  what a request leaves out with defaults and applies the Transform graph,
  so training and serving cannot skew.
* `user_table` / `UserDefaults`: what a known user's request leaves out is
  filled from training, inside the exported model: the user's side features
  (gender, age, occupation, zip prefix of the user's first training row) and
  the time context of the user's LAST training row. A model trained with the
  timestamp as context and served "now" would otherwise see a time it never
  saw (historic data served today: the Transform clips it to the end of the
  training range, the same instant for everybody), which cost the ranking
  model 0.06 RMSE on ml-100k. A request that carries a value keeps it.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from common import features as F

# Transformed categorical features of each side, and numeric ones.
USER_CATEGORICAL = [F.T_USER_ID, F.T_USER_GENDER, F.T_USER_AGE_BUCKET,
                    F.T_USER_OCCUPATION, F.T_USER_ZIP_PREFIX]
CONTEXT_CATEGORICAL = [F.T_TIMESTAMP_BUCKET]
USER_NUMERIC = [F.T_USER_AGE]
CONTEXT_NUMERIC = [F.T_TIMESTAMP]
MOVIE_CATEGORICAL = [F.T_MOVIE_ID]
MOVIE_BAG = [F.T_MOVIE_TITLE_WORDS, F.T_MOVIE_GENRES]  # variable-length lists
# The ids get the full embedding width, side features a smaller one.
ID_FEATURES = {F.T_USER_ID, F.T_MOVIE_ID}


def transformed_names(tft_output: tft.TFTransformOutput) -> List[str]:
  """Names of the transformed features this data has."""
  return list(tft_output.transformed_feature_spec().keys())


def vocab_sizes(tft_output: tft.TFTransformOutput,
                names: Iterable[str]) -> Dict[str, int]:
  """Embedding table size (vocabulary + OOV) of each present feature."""
  present = set(transformed_names(tft_output))
  return {n: tft_output.num_buckets_for_transformed_feature(n)
          for n in names if n in present}


# Records parsed per batch in parallel (what make_batched_features_dataset
# used by default).
PARSER_THREADS = 2


def make_dataset(file_patterns: Sequence[str],
                 tft_output: tft.TFTransformOutput,
                 batch_size: int,
                 shuffle: bool = True,
                 num_epochs: Optional[int] = None,
                 seed: Optional[int] = None,
                 features: Optional[Sequence[str]] = None) -> tf.data.Dataset:
  """Batches of transformed features (a dict, label included) from TFRecords.

  The pipeline of tf.data.experimental.make_batched_features_dataset (files
  in shuffled order, records shuffled over a 10,000 buffer, repeated,
  batched, each batch parsed with tf.io.parse_example) without its
  ParallelInterleaveDataset, which hands every record from a reader thread
  over to the consumer: on one GZIP file of 2M transformed examples that
  hand-over made a pass take 47 s instead of 5 s, and the trainers' passes
  over 8M training rows minutes. `features` limits the parsed features to
  these names (a pass that needs only ids and labels skips parsing the
  rest). num_epochs None repeats forever and drops the last partial batch.
  """
  spec = tft_output.transformed_feature_spec()
  if features is not None:
    spec = {name: spec[name] for name in features}
  files = []
  for pattern in file_patterns:
    files.extend(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"No transformed examples match {list(file_patterns)}")
  names = tf.data.Dataset.from_tensor_slices(sorted(files))
  if shuffle:
    names = names.shuffle(len(files), seed=seed)
  ds = tf.data.TFRecordDataset(names, compression_type="GZIP")
  if shuffle:
    ds = ds.shuffle(10_000, seed=seed)
  ds = ds.repeat(num_epochs).batch(batch_size, drop_remainder=num_epochs is None)
  ds = ds.map(lambda records: tf.io.parse_example(records, spec),
              num_parallel_calls=PARSER_THREADS)
  return without_autotune_model(ds.prefetch(tf.data.AUTOTUNE))


def save_signatures(module: tf.Module, export_dir: str,
                    signatures: Mapping[str, object]) -> None:
  """tf.saved_model.save without Keras's per-layer call traces.

  Why: the exports are used through their signatures only (serving/, TFMA's
  TF_GENERIC model type, TF Serving); nothing loads them back as Keras
  models (warm starts read warm_start/). The traces Keras adds for
  keras.models.load_model took 12 of the ranking export's 15 s on ml-100k.
  (tf_keras's `model.save(save_traces=False)` scope, for a tf.Module.)
  """
  from tf_keras.src.saving.legacy.saved_model import utils as keras_saving  # pylint: disable=g-import-not-at-top
  with keras_saving.keras_option_scope(save_traces=False):
    tf.saved_model.save(module, export_dir, signatures=dict(signatures))


def without_autotune_model(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` without tf.data's autotuning model (options.autotune.enabled).

  Why: deleting an iterator waits for the model's optimisation thread to
  finish its current pass (RootDataset::Iterator's destructor), and on these
  small pipelines that pass intermittently took ~40 s: about one ranking
  trainer run in three stalled that long when Keras dropped its iterator at
  the end of fit(). AUTOTUNE values then keep tf.data's static defaults;
  measured on ml-100k, 2 cores: no stall in 4 of 4 ranking runs (1 in 3
  before) and epochs no slower (6.4-7.5 s against 7-8 s).
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


class _Encoder(keras.layers.Layer):
  """Concatenates embeddings of categorical, bag-of-ids and numeric features."""

  def __init__(self, sizes: Mapping[str, int], numeric: Sequence[str],
               embedding_dim: int, side_dim: int, bags: Sequence[str] = (),
               **kwargs):
    super().__init__(**kwargs)
    self._sizes = dict(sizes)
    self._numeric = list(numeric)
    self._bags = [b for b in bags if b in self._sizes]
    self._embeddings = {}
    for name, size in self._sizes.items():
      dim = embedding_dim if (name in ID_FEATURES or name in self._bags) else side_dim
      self._embeddings[name] = keras.layers.Embedding(
          size, dim, name=f"{name}_embedding")

  @property
  def embeddings(self) -> Dict[str, keras.layers.Embedding]:
    return self._embeddings

  def call(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
    parts = []
    for name, layer in self._embeddings.items():
      value = features[name]
      if name in self._bags:
        if not isinstance(value, tf.SparseTensor):
          value = tf.sparse.from_dense(value)
        if not layer.built:
          layer.build(None)
        # Mean of the list's embeddings; an empty list gives zeros.
        pooled = tf.nn.safe_embedding_lookup_sparse(
            layer.embeddings, tf.cast(value, tf.int64), combiner="mean")
        parts.append(tf.reshape(pooled, [-1, layer.output_dim]))
      else:
        parts.append(layer(tf.reshape(value, [-1])))
    for name in self._numeric:
      parts.append(tf.reshape(tf.cast(features[name], tf.float32), [-1, 1]))
    return tf.concat(parts, axis=1)


class UserEncoder(_Encoder):
  """User (and optionally context: time) features → one vector."""

  def __init__(self, tft_output: tft.TFTransformOutput, embedding_dim: int = 32,
               side_dim: int = 8, include_context: bool = True, **kwargs):
    cat = USER_CATEGORICAL + (CONTEXT_CATEGORICAL if include_context else [])
    num = USER_NUMERIC + (CONTEXT_NUMERIC if include_context else [])
    present = set(transformed_names(tft_output))
    super().__init__(vocab_sizes(tft_output, cat), [n for n in num if n in present],
                     embedding_dim, side_dim, **kwargs)


class MovieEncoder(_Encoder):
  """Movie id, title words and genres → one vector.

  Title words and genres give a movie nobody rated in training (OOV id) a
  meaningful vector.
  """

  def __init__(self, tft_output: tft.TFTransformOutput, embedding_dim: int = 32,
               side_dim: int = 8, **kwargs):
    super().__init__(vocab_sizes(tft_output, MOVIE_CATEGORICAL + MOVIE_BAG), [],
                     embedding_dim, side_dim, bags=MOVIE_BAG, **kwargs)


def row_features(*encoders: _Encoder) -> List[Tuple[keras.layers.Embedding, str]]:
  """(embedding layer, transformed feature indexing its rows) of `encoders`.

  Warm start (trainer_modules/warm_start.py) remaps the rows of these tables
  by token when the feature's vocabulary changed between runs.
  """
  return [(layer, name) for encoder in encoders
          for name, layer in encoder.embeddings.items()]


# Transformed user / context feature → the raw features it is computed from.
# A request "leaves a feature out" when all its raw sources are at their
# serving default (features.FEATURES[...].serving_default).
USER_FILL_SOURCES = {
    F.T_USER_GENDER: [F.USER_GENDER],
    F.T_USER_AGE_BUCKET: [F.BUCKETIZED_USER_AGE],
    F.T_USER_AGE: [F.RAW_USER_AGE],
    F.T_USER_OCCUPATION: [F.USER_OCCUPATION_TEXT, F.USER_OCCUPATION_LABEL],
    F.T_USER_ZIP_PREFIX: [F.USER_ZIP_CODE],
    F.T_TIMESTAMP_BUCKET: [F.TIMESTAMP],
    F.T_TIMESTAMP: [F.TIMESTAMP],
}
USER_SIDE = [F.T_USER_GENDER, F.T_USER_AGE_BUCKET, F.T_USER_AGE,
             F.T_USER_OCCUPATION, F.T_USER_ZIP_PREFIX]
USER_CONTEXT = [F.T_TIMESTAMP_BUCKET, F.T_TIMESTAMP]


def user_table(users: np.ndarray, values: Mapping[str, np.ndarray]
               ) -> Dict[str, np.ndarray]:
  """Per distinct user: side features of the first row, context of the last.

  users: raw user ids [n] (bytes), one per training row in file order;
  values: transformed feature name → [n] values of the same rows. Side
  features (USER_SIDE) come from the user's first row, the time context
  (USER_CONTEXT) from the row with the user's largest normalized timestamp.
  Returns {features.USER_ID: sorted unique ids, name: [users] values}.
  """
  uniq, first, inverse = np.unique(users, return_index=True, return_inverse=True)
  table = {F.USER_ID: uniq}
  for name in USER_SIDE:
    if name in values:
      table[name] = np.asarray(values[name])[first]
  if F.T_TIMESTAMP in values:
    ts = np.asarray(values[F.T_TIMESTAMP], np.float64)
    order = np.lexsort((ts, inverse))     # by user, then time
    last = order[np.r_[np.flatnonzero(np.diff(inverse[order])), len(order) - 1]]
    for name in USER_CONTEXT:
      if name in values:
        table[name] = np.asarray(values[name])[last]
  return table


class UserDefaults(tf.Module):
  """Known users' stored transformed features, filled in where a request
  leaves them out (see USER_FILL_SOURCES). Unknown users keep what the
  request gives (and the trained OOV rows)."""

  def __init__(self, table: Mapping[str, np.ndarray]):
    super().__init__()
    keys = np.asarray(table[F.USER_ID], dtype=object)
    self.lookup = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string),
            tf.range(len(keys), dtype=tf.int64)), default_value=-1)
    self.values = {
        name: tf.Variable(np.asarray(table[name]), trainable=False,
                          name=f"stored_{name}")
        for name in USER_FILL_SOURCES if name in table}

  def fill(self, raw: Mapping[str, tf.Tensor],
           transformed: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    out = dict(transformed)
    row = self.lookup.lookup(tf.reshape(raw[F.USER_ID], [-1]))
    known = row >= 0
    safe_row = tf.maximum(row, 0)
    for name, stored in self.values.items():
      if name not in out:
        continue
      sources = [s for s in USER_FILL_SOURCES[name] if s in raw]
      missing = tf.ones_like(known)
      for s in sources:
        default = tf.constant(F.FEATURES[s].serving_default, dtype=raw[s].dtype)
        missing &= tf.equal(tf.reshape(raw[s], [-1]), default)
      value = out[name]
      flat = tf.reshape(value, [-1])
      filled = tf.cast(tf.gather(stored, safe_row), flat.dtype)
      out[name] = tf.reshape(tf.where(known & missing, filled, flat),
                             tf.shape(value))
    return out


class RawRequestParser(tf.Module):
  """Serialized tf.Examples with raw contract features → transformed features.

  Parses only `names` (those the data has), requires only `required`, gives
  the rest their contract serving default, and replaces a missing timestamp
  (default -1) with the current time, which the Transform clips to the end
  of the training range. With `user_defaults` (a UserDefaults), a known
  user's left-out features, the time included, are the user's own from
  training instead. Keep an instance as an attribute of the exported model
  so the Transform graph and its vocabularies are saved with it.
  """

  def __init__(self, tft_output: tft.TFTransformOutput, names: Sequence[str],
               required: Sequence[str] = (F.USER_ID,),
               user_defaults: Optional[UserDefaults] = None):
    super().__init__()
    raw = tft_output.raw_feature_spec()
    self.names = [n for n in names if n in raw]
    self.required = [n for n in required if n in raw]
    self.tft_layer = tft_output.transform_features_layer()
    self.user_defaults = user_defaults

  def parse_raw(self, serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    """The request's raw features as given (serving defaults where absent)."""
    spec = F.serving_parse_spec(self.names)
    for name in self.required:  # no default: a request without it fails
      if not F.FEATURES[name].varlen:
        spec[name] = tf.io.FixedLenFeature([], spec[name].dtype)
    return tf.io.parse_example(serialized, spec)

  @staticmethod
  def for_transform(parsed: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Raw features, [batch, 1] dense (sparse for lists) as Transform expects;
    a missing timestamp becomes "now"."""
    parsed = dict(parsed)
    if F.TIMESTAMP in parsed:
      now = tf.cast(tf.timestamp(), tf.int64)
      ts = parsed[F.TIMESTAMP]
      parsed[F.TIMESTAMP] = tf.where(ts < 0, now, ts)
    return {k: v if isinstance(v, tf.SparseTensor) else tf.expand_dims(v, -1)
            for k, v in parsed.items()}

  def parse(self, serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self.for_transform(self.parse_raw(serialized))

  def __call__(self, serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    raw = self.parse_raw(serialized)
    transformed = self.tft_layer(self.for_transform(raw))
    if self.user_defaults is not None and F.USER_ID in raw:
      transformed = self.user_defaults.fill(raw, transformed)
    return transformed


class LogEpochs(keras.callbacks.Callback):
  """Logs each epoch's metrics through `logging` instead of printing them.

  The local runner shows one line per component on the console and keeps
  everything else in the run's log file; Keras's own progress output
  (verbose=1/2) would print straight to the console.
  """

  def __init__(self, name: str):
    super().__init__()
    self._name = name

  def on_epoch_end(self, epoch, logs=None):
    import logging  # pylint: disable=g-import-not-at-top
    metrics = ", ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
    logging.info("%s epoch %d: %s", self._name, epoch + 1, metrics)


# UserHistory.pool: from this many movies its gradient is sparse.
HISTORY_SPARSE_GRADIENT_ROWS = 10_000


class UserHistory(keras.layers.Layer):
  """The movies a user rated in training, pooled into one vector.

  The user's own history is the strongest signal of what the user will
  watch next (item-to-item models such as EASE live on it alone), and a
  user-id embedding learns it only indirectly. As in YouTube's candidate
  generation network, the history enters the query as the mean embedding of
  the rated movies. The table (user vocabulary index → movie vocabulary
  indices) is built from the training split and saved inside the model as
  non-trainable variables, so serving needs nothing but the user id; users
  without history (OOV, cold) get a zero vector.

  In training the row's own movie is left out of its history (otherwise the
  model learns to find the target in the bag), and a `dropout` fraction of
  the remaining movies is dropped, which makes the vector robust to the
  history it will see at serving (all training movies).

  `max_len` bounds the cost of a training step: a history longer than
  cap = max_len / (1 - dropout) is represented by `cap` movies drawn from it
  at random (with replacement), then dropped out as the others, so about
  max_len movies enter the mean, and a step reads at most `cap` entries of
  a row's history whatever its length. On heavy-tailed data the
  row-weighted history length grows with the data (synthetic
  ml-25m-format ratings: 580 at 1M, 720 at 10M, the longest thousands),
  and with it the pooling cost per row; a random subset's mean is an
  unbiased estimate of the full mean that serving pools.
  """

  def __init__(self, history: Sequence[np.ndarray], num_movies: int, dim: int,
               dropout: float = 0.0, max_len: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    lengths = np.asarray([len(h) for h in history], np.int64)
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = (np.concatenate([np.asarray(h, np.int64) for h in history])
              if len(history) and splits[-1] else np.zeros([0], np.int64))
    self._num_rows = len(history)
    self._num_movies = int(num_movies)
    self._values = tf.Variable(values.astype(np.int32), trainable=False,
                               name="history_values")
    self._splits = tf.Variable(splits, trainable=False, name="history_splits")
    self._dropout = float(dropout)
    if not 0.0 <= self._dropout < 1.0:
      raise ValueError(f"history dropout must be in [0, 1), got {dropout}")
    if max_len is not None and int(max_len) < 1:
      raise ValueError(f"history max_len must be at least 1, got {max_len}")
    self._max_len = int(max_len) if max_len else None
    longest = int(lengths.max()) if len(lengths) else 0
    self._capped = (self._max_len is not None
                    and longest * (1.0 - self._dropout) > self._max_len)
    self.embedding = keras.layers.Embedding(num_movies, dim,
                                            name="history_embedding")

  def histories(self, user_idx: tf.Tensor) -> tf.RaggedTensor:
    rows = tf.RaggedTensor.from_row_splits(self._values, self._splits,
                                           validate=False)
    user_idx = tf.clip_by_value(tf.cast(tf.reshape(user_idx, [-1]), tf.int64),
                                0, self._num_rows - 1)
    return tf.cast(tf.gather(rows, user_idx), tf.int64)

  def masked(self, user_idx: tf.Tensor, target: Optional[tf.Tensor] = None,
             training: bool = False) -> tf.RaggedTensor:
    """The histories [batch, None] without the target, after dropout (and
    subsampled to about max_len movies in training).

    One mask over the flat values (target and dropout together) and one
    rebuild from row ids: ragged boolean masks per step cost more than the
    pooling itself.
    """
    if training and self._capped:
      flat, rows, nrows = self._sampled(user_idx)
    else:
      hist = self.histories(user_idx)
      flat, rows, nrows = hist.flat_values, hist.value_rowids(), hist.nrows()
    drop_target = target is not None
    drop_random = training and self._dropout > 0
    if not (drop_target or drop_random):
      return tf.RaggedTensor.from_value_rowids(flat, rows, nrows=nrows,
                                               validate=False)
    keep = tf.ones_like(flat, tf.bool)
    if drop_target:
      keep = tf.not_equal(flat, tf.gather(
          tf.cast(tf.reshape(target, [-1]), tf.int64), rows))
    if drop_random:
      keep = keep & (tf.random.uniform(tf.shape(flat)) < 1.0 - self._dropout)
    return tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(flat, keep), tf.boolean_mask(rows, keep),
        nrows=nrows, validate=False)

  def _sampled(self, user_idx: tf.Tensor):
    """(movies, row ids, rows) of each row's history, a history longer than
    cap = max_len / (1 - dropout) replaced by `cap` of its movies drawn at
    random: the entries are read directly, so the cost is at most `cap`
    per row, not the history's length."""
    user_idx = tf.clip_by_value(tf.cast(tf.reshape(user_idx, [-1]), tf.int64),
                                0, self._num_rows - 1)
    start = tf.gather(self._splits, user_idx)
    length = tf.gather(self._splits, user_idx + 1) - start
    cap = tf.constant(int(math.ceil(self._max_len / (1.0 - self._dropout))),
                      tf.int64)
    count = tf.minimum(length, cap)
    nrows = tf.size(user_idx, out_type=tf.int64)
    rows = tf.repeat(tf.range(nrows), count)
    offset = tf.range(tf.reduce_sum(count)) - tf.gather(
        tf.cumsum(count, exclusive=True), rows)
    row_length = tf.gather(length, rows)
    drawn = tf.cast(tf.random.uniform(tf.shape(offset), dtype=tf.float64)
                    * tf.cast(row_length, tf.float64), tf.int64)
    position = tf.where(row_length <= cap, offset,
                        tf.minimum(drawn, row_length - 1))
    flat = tf.gather(self._values, tf.gather(start, rows) + position)
    return tf.cast(flat, tf.int64), rows, nrows

  def pool(self, hist: tf.RaggedTensor) -> tf.Tensor:
    """Mean embedding of each history (zeros for an empty one).

    tf.sparse.segment_mean is one fused kernel forward and backward; a
    gather then a segment sum materialises every history entry's embedding
    and gradient (ml-100k-sized batch: 8 vs 21 ms per training step for this
    part). Its gradient is a dense table below HISTORY_SPARSE_GRADIENT_ROWS
    movies (fastest: 8 vs 15 ms) and tf.IndexedSlices above, so a sparse
    embedding optimizer (trainer_modules/optimizers.py) touches only the
    looked-up rows of a large table.
    """
    if not self.embedding.built:
      self.embedding.build(None)
    return tf.sparse.segment_mean(
        self.embedding.embeddings, hist.flat_values, hist.value_rowids(),
        num_segments=hist.nrows(),
        sparse_gradient=self._num_movies >= HISTORY_SPARSE_GRADIENT_ROWS)

  def pool_by_user(self, user_idx: tf.Tensor) -> tf.Tensor:
    """pool(histories(user_idx)) with each distinct user pooled once.

    A ranking request is one user's ~100 candidates: pooling the history
    per row repeated the same mean 100 times (for a user with 2,000 rated
    movies, 200,000 embedding rows per request). Each segment's mean is
    computed alone, so the values are exactly those of per-row pooling.
    """
    unique, position = tf.unique(tf.cast(tf.reshape(user_idx, [-1]), tf.int64))
    return tf.gather(self.pool(self.histories(unique)), position)

  def call(self, user_idx: tf.Tensor, target: Optional[tf.Tensor] = None,
           training: bool = False) -> tf.Tensor:
    if target is None and not training:
      return self.pool_by_user(user_idx)
    return self.pool(self.masked(user_idx, target, training=training))


class ItemItem(keras.layers.Layer):
  """A full movie-to-movie weight matrix over the user's history.

  The score of movie i for a user is the mean of W[j, i] over the movies j of
  the user's history: the form of item-to-item models such as EASE or SLIM,
  learned here with the model's own loss. The dot product of two towers can
  only express a low-rank W; a full one captures "people who watched j watch
  i" pairs directly, which is where EASE beat the towers on MovieLens. It
  costs movies² weights, so it is for catalogues of a few thousand movies
  (the ranking model's `item_item_max_movies`). W starts at zero.
  """

  def __init__(self, num_movies: int, l2: float = 0.0,
               weights: Optional[np.ndarray] = None, **kwargs):
    """`weights` [num_movies, num_movies]: fixed weights (e.g. EASE's closed
    form, trainer_modules/ease.py), not trained; otherwise W is learned."""
    super().__init__(**kwargs)
    self.num_movies = int(num_movies)
    if weights is not None:
      if tuple(np.shape(weights)) != (self.num_movies, self.num_movies):
        raise ValueError(f"item-item weights must be [{self.num_movies}, "
                         f"{self.num_movies}], got {np.shape(weights)}")
      self.trainable = False
    self.w = self.add_weight(
        name="weights", shape=[self.num_movies, self.num_movies],
        initializer="zeros", trainable=weights is None,
        regularizer=keras.regularizers.l2(l2) if l2 and weights is None else None)
    if weights is not None:
      self.w.assign(np.asarray(weights, np.float32))

  def _weights_of(self, hist: tf.RaggedTensor) -> tf.Tensor:
    count = tf.cast(tf.maximum(hist.row_lengths(), 1), tf.float32)
    return tf.gather(1.0 / count, hist.value_rowids())

  def all_scores(self, hist: tf.RaggedTensor) -> tf.Tensor:
    """[batch, num_movies]: every movie's score for each history."""
    rows = hist.value_rowids()
    sparse = tf.SparseTensor(
        indices=tf.stack([rows, hist.flat_values], axis=1),
        values=self._weights_of(hist),
        dense_shape=tf.stack([hist.nrows(), tf.constant(self.num_movies, tf.int64)]))
    return tf.sparse.sparse_dense_matmul(sparse, self.w)

  def scores(self, hist: tf.RaggedTensor, movies: tf.Tensor) -> tf.Tensor:
    """[batch]: the score of each row's movie for the row's history."""
    rows = hist.value_rowids()
    movie = tf.gather(tf.cast(tf.reshape(movies, [-1]), tf.int64), rows)
    values = tf.gather_nd(self.w, tf.stack([hist.flat_values, movie], axis=1))
    return tf.math.unsorted_segment_sum(values * self._weights_of(hist), rows,
                                        hist.nrows())


def user_histories(user_idx: np.ndarray, movie_idx: np.ndarray,
                   num_users: int) -> List[np.ndarray]:
  """Per user vocabulary index: the distinct movie indices of its rows.

  The last (OOV) user row is left empty: ids outside the vocabulary are
  many different users.
  """
  user_idx = np.asarray(user_idx, np.int64)
  movie_idx = np.asarray(movie_idx, np.int64)
  order = np.lexsort((movie_idx, user_idx))
  u, m = user_idx[order], movie_idx[order]
  keep = np.ones(len(u), bool)
  keep[1:] = (u[1:] != u[:-1]) | (m[1:] != m[:-1])
  u, m = u[keep], m[keep]
  bounds = np.searchsorted(u, np.arange(num_users + 1))
  out = [m[bounds[i]:bounds[i + 1]] for i in range(num_users)]
  out[num_users - 1] = np.zeros([0], np.int64)
  return out
