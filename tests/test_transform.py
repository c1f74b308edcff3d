"""Runs preprocessing_fn with TFT's Beam implementation on tiny data."""
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from common import features as F
from tests import tft_fixture
from trainer_modules import configs
from transform import preprocessing

# The fixture's raw spec (the curated schema's shapes), without the label id.
RAW_SPEC = {k: v for k, v in tft_fixture.RAW_SPEC.items()
            if k != F.USER_OCCUPATION_LABEL}


def _row(user, movie, title, genres, rating, ts, gender, age, occ, zipc):
  return {F.USER_ID: [user], F.MOVIE_ID: [movie], F.MOVIE_TITLE: [title],
          F.MOVIE_GENRES: genres, F.USER_RATING: [rating], F.TIMESTAMP: [ts],
          F.USER_GENDER: [gender], F.BUCKETIZED_USER_AGE: [float(age // 10 * 10)],
          F.RAW_USER_AGE: [float(age)], F.USER_OCCUPATION_TEXT: [occ],
          F.USER_ZIP_CODE: [zipc]}


ROWS = [
    # user "1" rates 5 times, "2" 5 times, "3" once (rare -> OOV at min count 2)
    _row(b"1", b"10", b"Star Wars (1977)", [0, 1], 5.0, 1000, 1, 20, b"student", b"94110"),
    _row(b"1", b"11", b"Star Trek (1979)", [15], 4.0, 2000, 1, 20, b"student", b"94110"),
    _row(b"1", b"10", b"Star Wars (1977)", [0, 1], 5.0, 3000, 1, 20, b"student", b"94110"),
    _row(b"1", b"11", b"Star Trek (1979)", [15], 3.0, 4000, 1, 20, b"student", b"94110"),
    _row(b"1", b"12", b"Heat (1995)", [0], 2.0, 5000, 1, 20, b"student", b"94110"),
    _row(b"2", b"10", b"Star Wars (1977)", [0, 1], 4.0, 6000, 0, 40, b"writer", b"10001"),
    _row(b"2", b"11", b"Star Trek (1979)", [15], 1.0, 7000, 0, 40, b"writer", b"10001"),
    _row(b"2", b"10", b"Star Wars (1977)", [0, 1], 5.0, 8000, 0, 40, b"writer", b"10001"),
    _row(b"2", b"11", b"Star Trek (1979)", [15], 2.0, 9000, 0, 40, b"writer", b"10001"),
    _row(b"2", b"10", b"Star Wars (1977)", [0, 1], 3.0, 10000, 0, 40, b"writer", b"10001"),
    _row(b"3", b"13", b"Alien (1979)", [10], 4.0, 11000, 0, 30, b"doctor", b"02139"),
]
CONFIG = {"num_timestamp_buckets": 10, "min_user_count": 2, "min_movie_count": 2,
          "min_word_count": 2, "min_zip_prefix_count": 2}


@pytest.fixture(scope="module")
def transformed():
  tmp = tempfile.mkdtemp()
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(RAW_SPEC))

  def fn(inputs):
    return preprocessing.preprocessing_fn(inputs, CONFIG)

  # use_deep_copy_optimization as TFX's Transform executor sets it.
  with tft_beam.Context(temp_dir=os.path.join(tmp, "tmp"),
                        use_deep_copy_optimization=True):
    (data, _), transform_fn = ((ROWS, metadata)
                               | tft_beam.AnalyzeAndTransformDataset(
                                   fn, output_record_batches=False))
    out_dir = os.path.join(tmp, "tft")
    _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
  return data, tft.TFTransformOutput(out_dir)


def _vocab(tft_out, name):
  return [w.decode() if isinstance(w, bytes) else w
          for w in tft_out.vocabulary_by_name(name)]


def test_id_vocabularies_send_rare_ids_to_oov(transformed):
  data, tft_out = transformed
  users = _vocab(tft_out, F.VOCAB_USER_ID)
  assert sorted(users) == ["1", "2"]  # "3" has one rating < min count 2
  oov = len(users)
  by_user = {r[F.T_RAW_USER_ID]: r[F.T_USER_ID] for r in data}
  assert by_user[b"3"] == oov
  assert by_user[b"1"] == users.index("1")
  assert tft_out.num_buckets_for_transformed_feature(F.T_USER_ID) == oov + 1
  movies = _vocab(tft_out, F.VOCAB_MOVIE_ID)
  assert sorted(movies) == ["10", "11"]  # 12 and 13 rated once
  assert {r[F.T_RAW_MOVIE_ID]: r[F.T_MOVIE_ID] for r in data}[b"13"] == len(movies)


def test_title_words_and_genres(transformed):
  data, tft_out = transformed
  words = _vocab(tft_out, F.VOCAB_TITLE_WORDS)
  assert "star" in words and "wars" in words and "trek" in words
  assert "1977" not in words and "(1977)" not in words  # year suffix removed
  assert "alien" not in words  # once: below min_word_count
  star_wars = data[0][F.T_MOVIE_TITLE_WORDS]
  assert list(star_wars) == [words.index("star"), words.index("wars")]
  genres = _vocab(tft_out, F.VOCAB_GENRES)
  assert [genres[i] for i in data[0][F.T_MOVIE_GENRES]] == ["0", "1"]


def test_timestamp_buckets_and_normalization(transformed):
  data, tft_out = transformed
  buckets = [int(r[F.T_TIMESTAMP_BUCKET]) for r in data]
  # Evenly spaced between min (1000) and max (11000): 10 buckets of 1000 s.
  assert buckets == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
  assert tft_out.num_buckets_for_transformed_feature(F.T_TIMESTAMP_BUCKET) == 10
  norm = np.array([r[F.T_TIMESTAMP] for r in data])
  assert abs(norm.mean()) < 1e-5 and abs(norm.std() - 1) < 1e-3


def test_user_features(transformed):
  data, tft_out = transformed
  assert [int(r[F.T_USER_GENDER]) for r in data[:6]] == [1] * 5 + [0]
  assert tft_out.num_buckets_for_transformed_feature(F.T_USER_GENDER) == 3
  ages = np.array([r[F.T_USER_AGE] for r in data])
  assert abs(ages.mean()) < 1e-5
  assert ages[0] < 0 < ages[5]  # 20 is below the mean age, 40 above
  occ = _vocab(tft_out, F.VOCAB_OCCUPATION)
  assert occ[data[0][F.T_USER_OCCUPATION]] == "student"
  zips = _vocab(tft_out, F.VOCAB_ZIP_PREFIX)
  assert sorted(zips) == ["100", "941"]  # "021" seen once
  assert data[-1][F.T_USER_ZIP_PREFIX] == len(zips)
  assert [r[F.T_LABEL] for r in data[:2]] == [5.0, 4.0]


def test_serving_defaults_map_to_unknown(transformed):
  """A request without demographics must land on the 'unknown' values."""
  _, tft_out = transformed
  layer = tft_out.transform_features_layer()
  raw = {
      F.USER_ID: tf.constant([[b"999"]]), F.MOVIE_ID: tf.constant([[b"10"]]),
      F.MOVIE_TITLE: tf.constant([[b""]]),
      F.MOVIE_GENRES: tf.sparse.from_dense(tf.zeros([1, 0], tf.int64)),
      F.USER_RATING: tf.constant([[0.0]]), F.TIMESTAMP: tf.constant([[20000]], tf.int64),
      F.USER_GENDER: tf.constant([[-1]], tf.int64),
      F.BUCKETIZED_USER_AGE: tf.constant([[-1.0]]),
      F.RAW_USER_AGE: tf.constant([[-1.0]]),
      F.USER_OCCUPATION_TEXT: tf.constant([[b""]]),
      F.USER_ZIP_CODE: tf.constant([[b""]]),
  }
  out = layer(raw)
  assert int(out[F.T_USER_ID][0]) == 2  # OOV row after "1", "2"
  assert int(out[F.T_USER_GENDER][0]) == preprocessing.GENDER_UNKNOWN
  assert float(out[F.T_USER_AGE][0]) == 0.0
  assert int(out[F.T_TIMESTAMP_BUCKET][0]) == 9  # after training max: last bucket


def test_time_after_training_is_clipped(transformed):
  _, tft_out = transformed
  layer = tft_out.transform_features_layer()
  out = layer({F.TIMESTAMP: tf.constant([[11000], [10**10]], tf.int64)})
  norm = out[F.T_TIMESTAMP].numpy()
  assert norm[0] == pytest.approx(norm[1])  # far future == training max


def test_a_bad_config_stops_preprocessing_fn_with_a_config_error():
  """Raised before any input is read (Transform traces the fn first)."""
  for bad, match in (({"min_user_cnt": 2}, "did you mean min_user_count"),
                     ({"num_timestamp_buckets": 0}, "num_timestamp_buckets should be "
                      "greater than or equal to 1"),
                     ({"min_movie_count": "2"}, "min_movie_count should be a valid integer")):
    with pytest.raises(configs.ConfigError, match=f"^transform config: .*{match}"):
      preprocessing.preprocessing_fn({}, dict(CONFIG, **bad))
