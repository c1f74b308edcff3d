"""tf.Transform preprocessing_fn: every vocabulary and statistic the trainers need.

Computed once, over the training split, by the TFX Transform component, so no
trainer recomputes a vocabulary and serving applies exactly the same mapping
(the Transform graph is embedded in every exported model).

What it produces (names in common.features, T_* constants):
* vocabulary indices with one OOV bucket for user_id, movie_id, occupation,
  3-digit zip prefix, genres, title words and age buckets. A minimum frequency
  sends rare ids to the OOV bucket during training, so the OOV embedding is
  trained and unknown ids at serving time get a meaningful vector;
* timestamp buckets evenly spaced between the training min and max (the TFRS
  deep-retrieval tutorial's scheme) plus a normalized timestamp;
* normalized raw age, a gender index with an "unknown" value;
* the raw ids and the rating label, passed through.

Features the data lacks (ml-20m has no demographics, ml-1m no raw age) are
simply absent from `inputs` and from the outputs.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import schema_inference

from common import features as F
from trainer_modules import configs

# Gender index for "not given" (serving default -1, or any other code).
GENDER_UNKNOWN = 2


def _dense(x, default):
  """A [batch] tensor from a [batch, 1] dense or a sparse (optional) feature."""
  if isinstance(x, tf.SparseTensor):
    x = tft.sparse_tensor_to_dense_with_shape(x, [None, 1], default_value=default)
  return tf.reshape(x, [-1])


def _with_domain(x: tf.Tensor, num_values: int) -> tf.Tensor:
  """Records [0, num_values) as x's domain in the transformed schema.

  Trainers size every embedding with
  TFTransformOutput.num_buckets_for_transformed_feature(name), so an
  integerized feature that is not a vocabulary still needs its domain.
  """
  schema_inference.set_tensor_schema_override(
      x, tf.constant(0, tf.int64), tf.constant(num_values - 1, tf.int64))
  return x


def title_words(titles: tf.Tensor) -> tf.SparseTensor:
  """Lower-cased words of movie titles, without the "(1995)" year suffix."""
  t = tf.strings.lower(titles)
  t = tf.strings.regex_replace(t, r"\(\d{4}\)", " ")
  t = tf.strings.regex_replace(t, r"[^a-z0-9\x80-\xff]+", " ")
  return tf.strings.split(tf.strings.strip(t)).to_sparse()


def preprocessing_fn(inputs: Mapping[str, Any],
                     custom_config: Optional[Mapping[str, Any]] = None):
  """Maps raw contract features to the transformed features trainers read.

  custom_config: trainer_modules/configs.py TransformConfig (a bad key or
  value is a ConfigError).
  """
  cfg = configs.validate("transform", custom_config)
  out = {}

  user_id = _dense(inputs[F.USER_ID], b"")
  movie_id = _dense(inputs[F.MOVIE_ID], b"")
  out[F.T_RAW_USER_ID] = user_id
  out[F.T_RAW_MOVIE_ID] = movie_id
  out[F.T_USER_ID] = tft.compute_and_apply_vocabulary(
      user_id, frequency_threshold=cfg["min_user_count"], num_oov_buckets=1,
      vocab_filename=F.VOCAB_USER_ID)
  out[F.T_MOVIE_ID] = tft.compute_and_apply_vocabulary(
      movie_id, frequency_threshold=cfg["min_movie_count"], num_oov_buckets=1,
      vocab_filename=F.VOCAB_MOVIE_ID)

  if F.MOVIE_TITLE in inputs:
    out[F.T_MOVIE_TITLE_WORDS] = tft.compute_and_apply_vocabulary(
        title_words(_dense(inputs[F.MOVIE_TITLE], b"")),
        frequency_threshold=cfg["min_word_count"], num_oov_buckets=1,
        vocab_filename=F.VOCAB_TITLE_WORDS)
  if F.MOVIE_GENRES in inputs:
    out[F.T_MOVIE_GENRES] = tft.compute_and_apply_vocabulary(
        inputs[F.MOVIE_GENRES], num_oov_buckets=1,
        vocab_filename=F.VOCAB_GENRES)

  if F.USER_GENDER in inputs:
    g = _dense(inputs[F.USER_GENDER], -1)
    out[F.T_USER_GENDER] = _with_domain(
        tf.where((g == 0) | (g == 1), g, tf.constant(GENDER_UNKNOWN, tf.int64)),
        GENDER_UNKNOWN + 1)
  if F.BUCKETIZED_USER_AGE in inputs:
    age_bucket = tf.cast(_dense(inputs[F.BUCKETIZED_USER_AGE], -1.0), tf.int64)
    out[F.T_USER_AGE_BUCKET] = tft.compute_and_apply_vocabulary(
        age_bucket, num_oov_buckets=1, vocab_filename=F.VOCAB_AGE_BUCKET)
  if F.RAW_USER_AGE in inputs:
    age = _dense(inputs[F.RAW_USER_AGE], -1.0)
    known = age > 0
    mean = tft.mean(age)
    std = tf.sqrt(tft.var(age))
    # An unknown age (serving default -1) sits at the training mean.
    out[F.T_USER_AGE] = tf.where(known, (age - mean) / tf.maximum(std, 1e-6), 0.0)
  occupation = None
  if F.USER_OCCUPATION_TEXT in inputs:
    occupation = _dense(inputs[F.USER_OCCUPATION_TEXT], b"")
  elif F.USER_OCCUPATION_LABEL in inputs:
    occupation = tf.strings.as_string(_dense(inputs[F.USER_OCCUPATION_LABEL], -1))
  if occupation is not None:
    out[F.T_USER_OCCUPATION] = tft.compute_and_apply_vocabulary(
        occupation, num_oov_buckets=1, vocab_filename=F.VOCAB_OCCUPATION)
  if F.USER_ZIP_CODE in inputs:
    prefix = tf.strings.substr(_dense(inputs[F.USER_ZIP_CODE], b""), 0, 3)
    out[F.T_USER_ZIP_PREFIX] = tft.compute_and_apply_vocabulary(
        prefix, frequency_threshold=cfg["min_zip_prefix_count"],
        num_oov_buckets=1, vocab_filename=F.VOCAB_ZIP_PREFIX)

  if F.TIMESTAMP in inputs:
    ts = _dense(inputs[F.TIMESTAMP], 0)
    # Every analyzer reads the raw input, so the whole preprocessing_fn is
    # one analysis phase: one pass over the data.
    t_min, t_max = tft.min(ts), tft.max(ts)
    ts_float = tf.cast(ts, tf.float32)
    mean, var = tft.mean(ts_float), tft.var(ts_float)
    # Times outside the training range (serving "now" is years later for
    # MovieLens) are clipped to it: the model never saw them, and an
    # unclipped z-score of "now" would be in the hundreds.
    clipped = tf.clip_by_value(ts, t_min, t_max)
    span = tf.maximum(tf.cast(t_max - t_min, tf.float32), 1.0)
    n = cfg["num_timestamp_buckets"]
    bucket = tf.cast(tf.floor(tf.cast(clipped - t_min, tf.float32) / span * n),
                     tf.int64)
    out[F.T_TIMESTAMP_BUCKET] = _with_domain(tf.clip_by_value(bucket, 0, n - 1), n)
    out[F.T_TIMESTAMP] = ((tf.cast(clipped, tf.float32) - mean)
                          / tf.maximum(tf.sqrt(var), 1.0))

  if F.USER_RATING in inputs:
    out[F.T_LABEL] = _dense(inputs[F.USER_RATING], 0.0)
  return out
