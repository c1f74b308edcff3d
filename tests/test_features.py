"""common/features.py: the hand-written tf.Example encoder is protobuf's message."""
import math

import pytest
import tensorflow as tf

from common import features as F

ROWS = [
    {F.USER_ID: "42", F.MOVIE_ID: "7", F.USER_RATING: 4.5, F.TIMESTAMP: 881250949},
    {F.USER_ID: "ü-ser", F.MOVIE_TITLE: "Amélie (2001)", F.MOVIE_GENRES: [4, 14],
     F.USER_GENDER: 0, F.RAW_USER_AGE: 33.0, F.BUCKETIZED_USER_AGE: 25.0,
     F.USER_OCCUPATION_LABEL: 21, F.USER_OCCUPATION_TEXT: "writer",
     F.USER_ZIP_CODE: "02139"},
    {F.MOVIE_ID: "1", F.MOVIE_GENRES: []},                # an empty varlen list
    {F.USER_ID: "u", F.TIMESTAMP: -1, F.USER_GENDER: -1},  # negative int64
    {F.USER_ID: "x" * 300, F.TIMESTAMP: 2**63 - 1, F.USER_RATING: 0.1},  # long, big
    {F.USER_ID: "n", F.USER_RATING: None},                 # None is left out
    {F.USER_ID: "inf", F.RAW_USER_AGE: 1e300},             # beyond float32
]


def _parsed(data: bytes) -> tf.train.Example:
  return tf.train.Example.FromString(data)


@pytest.mark.parametrize("row", ROWS)
def test_serialize_example_is_to_tf_example(row):
  assert _parsed(F.serialize_example(row)) == F.to_tf_example(row)


def test_values_round_trip_through_protobuf():
  ex = _parsed(F.serialize_example(ROWS[1])).features.feature
  assert ex[F.USER_ID].bytes_list.value == ["ü-ser".encode()]
  assert list(ex[F.MOVIE_GENRES].int64_list.value) == [4, 14]
  assert ex[F.RAW_USER_AGE].float_list.value == [33.0]
  assert ex[F.MOVIE_GENRES].WhichOneof("kind") == "int64_list"
  empty = _parsed(F.serialize_example(ROWS[2])).features.feature[F.MOVIE_GENRES]
  assert empty.WhichOneof("kind") == "int64_list" and not empty.int64_list.value
  assert list(_parsed(F.serialize_example(ROWS[3])).features.feature[
      F.TIMESTAMP].int64_list.value) == [-1]
  assert math.isinf(_parsed(F.serialize_example(ROWS[6])).features.feature[
      F.RAW_USER_AGE].float_list.value[0])


def test_features_of_two_rows_concatenate_into_one_example():
  user = F.features_bytes({F.USER_ID: "7", F.USER_GENDER: 1})
  movie = F.features_bytes({F.MOVIE_ID: "3", F.MOVIE_GENRES: [1, 4]})
  assert _parsed(F.example_from_features(user + movie)) == F.to_tf_example(
      {F.USER_ID: "7", F.USER_GENDER: 1, F.MOVIE_ID: "3", F.MOVIE_GENRES: [1, 4]})


def test_tensorflow_parses_what_the_encoder_writes():
  spec = {F.USER_ID: tf.io.FixedLenFeature([], tf.string),
          F.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
          F.USER_RATING: tf.io.FixedLenFeature([], tf.float32)}
  out = tf.io.parse_example(tf.constant([F.serialize_example(ROWS[0])]), spec)
  assert out[F.USER_ID].numpy().tolist() == [b"42"]
  assert out[F.TIMESTAMP].numpy().tolist() == [881250949]
  assert out[F.USER_RATING].numpy().tolist() == [4.5]


def test_unknown_features_and_out_of_range_integers_are_errors():
  with pytest.raises(KeyError, match="not a feature of the contract"):
    F.serialize_example({"user": "1"})
  with pytest.raises(ValueError, match="int64"):
    F.serialize_example({F.TIMESTAMP: 2**63})


def test_age_buckets_are_movielens_groups_named_by_their_lower_bound():
  assert [F.bucketize_age(a) for a in (0, 17, 18, 24.9, 25, 49, 50, 55, 56, 99)] == [
      1, 1, 18, 18, 25, 45, 50, 50, 56, 56]
  assert F.AGE_BUCKETS == (1, 18, 25, 35, 45, 50, 56)
  assert F.GENDER_CODES["M".lower()] == 1 and F.GENDER_CODES["female"] == 0
