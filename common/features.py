"""The feature contract: one definition of every raw and transformed feature.

Ingestion writes these raw features into tf.Examples, the curated schemas
describe them, Transform turns them into the transformed features below, and
the trainers, evaluators and serving code read them by these names. Names and
encodings follow TFDS `movielens/*-ratings`, so data from TFDS and from
GroupLens files are interchangeable.

Sources that lack a feature (ml-20m/25m have no demographics, ml-1m has no raw
age) simply leave it out; every consumer uses what the data has.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

# ---------------------------------------------------------------------------
# Raw feature names (TFDS movielens/*-ratings).
USER_ID = "user_id"
MOVIE_ID = "movie_id"
MOVIE_TITLE = "movie_title"
MOVIE_GENRES = "movie_genres"
USER_RATING = "user_rating"
TIMESTAMP = "timestamp"
USER_GENDER = "user_gender"
BUCKETIZED_USER_AGE = "bucketized_user_age"
RAW_USER_AGE = "raw_user_age"
USER_OCCUPATION_LABEL = "user_occupation_label"
USER_OCCUPATION_TEXT = "user_occupation_text"
USER_ZIP_CODE = "user_zip_code"

BYTES, FLOAT, INT64 = "bytes", "float", "int64"
USER, MOVIE, CONTEXT, LABEL = "user", "movie", "context", "label"


@dataclasses.dataclass(frozen=True)
class Feature:
  """One raw feature: its tf.Example type, what it describes, its shape."""
  name: str
  dtype: str          # BYTES, FLOAT or INT64 (the tf.train.Feature list kind)
  kind: str           # USER, MOVIE, CONTEXT or LABEL
  varlen: bool = False  # True for lists of any length (movie_genres)
  # Value a serving request may leave out; None means the feature is required.
  serving_default: Optional[object] = None


FEATURES: Dict[str, Feature] = {f.name: f for f in [
    Feature(USER_ID, BYTES, USER),
    Feature(USER_GENDER, INT64, USER, serving_default=-1),  # 1 = male, 0 = female
    Feature(BUCKETIZED_USER_AGE, FLOAT, USER, serving_default=-1.0),
    Feature(RAW_USER_AGE, FLOAT, USER, serving_default=-1.0),
    Feature(USER_OCCUPATION_LABEL, INT64, USER, serving_default=-1),
    Feature(USER_OCCUPATION_TEXT, BYTES, USER, serving_default=b""),
    Feature(USER_ZIP_CODE, BYTES, USER, serving_default=b""),
    Feature(MOVIE_ID, BYTES, MOVIE),
    Feature(MOVIE_TITLE, BYTES, MOVIE, serving_default=b""),
    Feature(MOVIE_GENRES, INT64, MOVIE, varlen=True),
    Feature(TIMESTAMP, INT64, CONTEXT, serving_default=-1),  # -1: "now" at serving
    Feature(USER_RATING, FLOAT, LABEL),
]}

USER_FEATURES = [n for n, f in FEATURES.items() if f.kind == USER]
MOVIE_FEATURES = [n for n, f in FEATURES.items() if f.kind == MOVIE]
CONTEXT_FEATURES = [n for n, f in FEATURES.items() if f.kind == CONTEXT]
LABEL_KEY = USER_RATING
# A retrieval query: who asks, and when.
QUERY_FEATURES = USER_FEATURES + CONTEXT_FEATURES
# Serving interface of the exported retrieval model, read by the retrieval
# evaluator and by serving code: each signature takes `examples`
# (serialized tf.Examples with raw contract features).
RETRIEVAL_QUERY_SIGNATURE = "query_embedding"
RETRIEVAL_CANDIDATE_SIGNATURE = "candidate_embedding"
EMBEDDING_OUTPUT = "embedding"
# What the catalogue output of ingestion holds for every movie.
CATALOGUE_FEATURES = [MOVIE_ID, MOVIE_TITLE, MOVIE_GENRES]

# ClassLabel name lists of TFDS movielens (index = the int64 id written).
GENRE_NAMES: List[str] = [
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "Unknown", "War",
    "Western", "(no genres listed)",
]
OCCUPATION_LABELS: List[str] = [
    "academic/educator", "artist", "clerical/admin", "customer service",
    "doctor/health care", "entertainment", "executive/managerial", "farmer",
    "homemaker", "lawyer", "librarian", "other/not specified", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "student",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]
GENRE_ID = {name: i for i, name in enumerate(GENRE_NAMES)}
OCCUPATION_LABEL_ID = {name: i for i, name in enumerate(OCCUPATION_LABELS)}

# bucketized_user_age: MovieLens' age groups, each named by its lower bound
# (ml-1m's age codes; TFDS bucketizes ml-100k's ages the same way).
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
# user_gender: the int64 written for each spelling of a gender.
GENDER_CODES = {"m": 1, "male": 1, "f": 0, "female": 0}


def bucketize_age(age: float) -> int:
  """The AGE_BUCKETS entry an age falls in (1 below 18, 56 from 56 on)."""
  bucket = AGE_BUCKETS[0]
  for lower in AGE_BUCKETS[1:]:
    if age < lower:
      break
    bucket = lower
  return bucket

# ---------------------------------------------------------------------------
# Transformed features (outputs of transform/preprocessing.py). Trainers read
# these; vocabularies are found with
# TFTransformOutput.vocabulary_file_by_name(<VOCAB_* name>).
T_USER_ID = "user_id_idx"                 # int64, vocab index, OOV bucket at the end
T_MOVIE_ID = "movie_id_idx"               # int64
T_MOVIE_TITLE_WORDS = "movie_title_words_idx"  # int64 varlen (sparse)
T_MOVIE_GENRES = "movie_genres_idx"       # int64 varlen (sparse)
T_USER_GENDER = "user_gender_idx"         # int64: 0 female, 1 male, 2 unknown
T_USER_AGE_BUCKET = "user_age_bucket_idx"  # int64 vocab index of bucketized_user_age
T_USER_AGE = "user_age_norm"              # float32 z-score of raw_user_age
T_USER_OCCUPATION = "user_occupation_idx"  # int64 vocab index of occupation text
T_USER_ZIP_PREFIX = "user_zip_prefix_idx"  # int64 vocab index of 3-digit zip prefix
T_TIMESTAMP_BUCKET = "timestamp_bucket"   # int64 in [0, num_timestamp_buckets)
T_TIMESTAMP = "timestamp_norm"            # float32 z-score of timestamp
T_LABEL = "user_rating"                   # float32, passed through
# Raw ids passed through unchanged, for evaluation and candidate identifiers.
T_RAW_USER_ID = "user_id"
T_RAW_MOVIE_ID = "movie_id"

VOCAB_USER_ID = "user_id"
VOCAB_MOVIE_ID = "movie_id"
VOCAB_TITLE_WORDS = "movie_title_words"
VOCAB_GENRES = "movie_genres"
VOCAB_AGE_BUCKET = "bucketized_user_age"
VOCAB_OCCUPATION = "user_occupation_text"
VOCAB_ZIP_PREFIX = "user_zip_prefix"


def present(names: Iterable[str], available: Iterable[str]) -> List[str]:
  """The features of `names` that the data has, in contract order."""
  available = set(available)
  return [n for n in names if n in available]


# ---------------------------------------------------------------------------
# tf.Example wire format, written without protobuf objects.
#
# Building a tf.train.Example message per row cost ingestion ~25 µs of its
# ~33 µs per rating; the bytes below are the same message (checked against
# protobuf's parser in tests/test_features.py) at a few µs. Serving builds
# requests from the same pieces: a user's `features_bytes` once, each
# movie's once per model version, concatenated per candidate (a repeated
# message field's entries may be concatenated).


_SMALL_VARINTS = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
  """Protobuf base-128 varint of a non-negative integer."""
  if n < 128:
    return _SMALL_VARINTS[n]
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _int64_varint(n: int) -> bytes:
  """An int64 field value: negatives as 10-byte two's complement."""
  if not -(1 << 63) <= n < (1 << 63):
    raise ValueError(f"{n} is out of the int64 range")
  return _varint(n & 0xFFFFFFFFFFFFFFFF if n < 0 else n)


def _delimited(tag: bytes, payload: bytes) -> bytes:
  return tag + _varint(len(payload)) + payload


def _bytes_value(v) -> bytes:  # BytesList.value = 1
  data = v.encode("utf-8") if isinstance(v, str) else bytes(v)
  return b"\x0a" + _varint(len(data)) + data


def _feature_value(spec: Feature, value) -> bytes:
  """A serialized tf.train.Feature (its oneof list) of one raw value."""
  if spec.dtype == BYTES:  # Feature.bytes_list = 1
    items = (b"".join(_bytes_value(v) for v in value) if spec.varlen
             else _bytes_value(value))
    return b"\x0a" + _varint(len(items)) + items
  if spec.dtype == FLOAT:  # Feature.float_list = 2, FloatList.value = 1, packed
    floats = [float(v) for v in value] if spec.varlen else [float(value)]
    try:
      packed = struct.pack(f"<{len(floats)}f", *floats)
    except OverflowError:  # beyond float32: ±inf, as protobuf stores it
      import numpy as np  # pylint: disable=g-import-not-at-top
      with np.errstate(over="ignore"):
        packed = np.asarray(floats, "<f4").tobytes()
    return _delimited(b"\x12", _delimited(b"\x0a", packed) if floats else b"")
  packed = (b"".join(_int64_varint(int(v)) for v in value) if spec.varlen
            else _int64_varint(int(value)))  # Feature.int64_list = 3, packed
  return _delimited(b"\x1a", _delimited(b"\x0a", packed) if packed else b"")


def _contract_items(row: Mapping[str, object]):
  """(name, Feature, value) of a raw row's features. Keys not in the
  contract are rejected (a typo would silently drop data); values of None
  are left out, which is how a source lacks a feature."""
  for name, value in row.items():
    if value is None:
      continue
    spec = FEATURES.get(name)
    if spec is None:
      raise KeyError(f"{name!r} is not a feature of the contract "
                     f"(known: {', '.join(FEATURES)})")
    yield name, spec, value


# Each feature's map-entry key (MapEntry.key = 1), serialized once.
_ENTRY_KEYS = {name: _delimited(b"\x0a", name.encode("utf-8")) for name in FEATURES}


def features_bytes(row: Mapping[str, object]) -> bytes:
  """The serialized tf.train.Features of a raw row (what `to_tf_example`
  builds, as bytes). The entries of two such strings may be concatenated
  (e.g. a user's and a movie's) into one Features message."""
  out = []
  for name, spec, value in _contract_items(row):
    feature = _feature_value(spec, value)  # MapEntry.value = 2
    entry = _ENTRY_KEYS[name] + b"\x12" + _varint(len(feature)) + feature
    out.append(b"\x0a" + _varint(len(entry)) + entry)  # Features.feature = 1
  return b"".join(out)


def example_from_features(features: bytes) -> bytes:
  """A serialized tf.Example whose `features` field (1) is `features`."""
  return _delimited(b"\x0a", features)


def serialize_example(row: Mapping[str, object]) -> bytes:
  """`to_tf_example(row).SerializeToString()`, several times faster."""
  return example_from_features(features_bytes(row))


def to_tf_example(row: Mapping[str, object]):
  """Builds a tf.train.Example from a dict of raw contract features
  (`_contract_items`: unknown keys are errors, None values left out)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  feature = {}
  for name, spec, value in _contract_items(row):
    values = list(value) if spec.varlen else [value]
    if spec.dtype == BYTES:
      values = [v.encode("utf-8") if isinstance(v, str) else bytes(v)
                for v in values]
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    elif spec.dtype == FLOAT:
      feature[name] = tf.train.Feature(
          float_list=tf.train.FloatList(value=[float(v) for v in values]))
    else:
      feature[name] = tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(v) for v in values]))
  return tf.train.Example(features=tf.train.Features(feature=feature))


def serving_parse_spec(names: Sequence[str]):
  """tf.io.parse_example spec for a serving request of `names`.

  Optional features get their serving default, so a request may carry only
  the ids; varlen features parse as sparse lists (an absent list is empty).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf_dtype = {BYTES: tf.string, FLOAT: tf.float32, INT64: tf.int64}
  spec = {}
  for name in names:
    f = FEATURES[name]
    if f.varlen:
      spec[name] = tf.io.VarLenFeature(tf_dtype[f.dtype])
    elif f.serving_default is None:
      spec[name] = tf.io.FixedLenFeature([], tf_dtype[f.dtype])
    else:
      spec[name] = tf.io.FixedLenFeature([], tf_dtype[f.dtype],
                                         default_value=f.serving_default)
  return spec
