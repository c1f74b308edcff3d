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
  what a request leaves out with defaults ("now" for a missing timestamp) and
  applies the Transform graph, so training and serving cannot skew.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

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


def _gzip_reader(filenames):
  return tf.data.TFRecordDataset(filenames, compression_type="GZIP")


def make_dataset(file_patterns: Sequence[str],
                 tft_output: tft.TFTransformOutput,
                 batch_size: int,
                 shuffle: bool = True,
                 num_epochs: Optional[int] = None,
                 seed: Optional[int] = None) -> tf.data.Dataset:
  """Batches of transformed features (a dict, label included) from TFRecords."""
  files = []
  for pattern in file_patterns:
    files.extend(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"No transformed examples match {list(file_patterns)}")
  return tf.data.experimental.make_batched_features_dataset(
      file_pattern=sorted(files),
      batch_size=batch_size,
      features=tft_output.transformed_feature_spec(),
      reader=_gzip_reader,
      num_epochs=num_epochs,
      shuffle=shuffle,
      shuffle_seed=seed,
      shuffle_buffer_size=10_000,
      prefetch_buffer_size=tf.data.AUTOTUNE,
      drop_final_batch=False)


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


class RawRequestParser(tf.Module):
  """Serialized tf.Examples with raw contract features → transformed features.

  Parses only `names` (those the data has), requires only `required`, gives
  the rest their contract serving default, and replaces a missing timestamp
  (default -1) with the current time. Keep an instance as an attribute of the
  exported model so the Transform graph and its vocabularies are saved with
  it.
  """

  def __init__(self, tft_output: tft.TFTransformOutput, names: Sequence[str],
               required: Sequence[str] = (F.USER_ID,)):
    super().__init__()
    raw = tft_output.raw_feature_spec()
    self.names = [n for n in names if n in raw]
    self.required = [n for n in required if n in raw]
    self.tft_layer = tft_output.transform_features_layer()

  def parse(self, serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Raw features, [batch, 1] dense (sparse for lists) as Transform expects."""
    spec = F.serving_parse_spec(self.names)
    for name in self.required:  # no default: a request without it fails
      if not F.FEATURES[name].varlen:
        spec[name] = tf.io.FixedLenFeature([], spec[name].dtype)
    parsed = tf.io.parse_example(serialized, spec)
    if F.TIMESTAMP in parsed:
      now = tf.cast(tf.timestamp(), tf.int64)
      ts = parsed[F.TIMESTAMP]
      parsed[F.TIMESTAMP] = tf.where(ts < 0, now, ts)
    return {k: v if isinstance(v, tf.SparseTensor) else tf.expand_dims(v, -1)
            for k, v in parsed.items()}

  def __call__(self, serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self.tft_layer(self.parse(serialized))


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
