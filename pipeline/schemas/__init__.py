"""Curated TFDV schemas of the MovieLens source families.

One schema per family of sources, checked into the repository:

* ``"100k"``    movielens_100k.pbtxt: all contract features; ratings 1..5.
* ``"1m"``      movielens_1m.pbtxt: as 100k without raw_user_age.
* ``"current"`` movielens_current.pbtxt (ml-20m/25m/latest): user_id,
  movie_id, movie_title, movie_genres, timestamp, user_rating 0.5..5.
* ``"custom"``  no curated schema: the pipeline uses SchemaGen's inferred one.

How they were made: pipeline/schemas/curate.py ran ``tfdv.infer_schema`` on
statistics of realistic data (the GroupLens ml-100k, read from
shared/datasets at run time and not copied here, converted to tf.Examples the
way TFDS parses it), then curated the result by hand-written rules: the real
domains (rating range; gender {0, 1}; timestamp 1990-01-01..2100-01-01; genre
ids 0..20; occupation label ids 0..21; raw age 1..120; bucketized age 1..56;
ids are positive integers, hence non-empty), ``presence {min_fraction: 1.0
min_count: 1}`` and ``shape {dim {size: 1}}`` on every single-valued feature
(tf.Transform parses them as dense FixedLenFeature([1])), no shape on
movie_genres (VarLenFeature, ``value_count {min: 0}``), no string_domain
listing ids, titles, zip codes or occupations, and no drift or distribution
constraints, so a new span of legitimate data validates. See README.md here.
"""
from __future__ import annotations

import os
from typing import Optional

SCHEMA_DIR = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ("100k", "1m", "current", "custom")
_FILES = {
    "100k": "movielens_100k.pbtxt",
    "1m": "movielens_1m.pbtxt",
    "current": "movielens_current.pbtxt",
}


def schema_path(family: str) -> Optional[str]:
  """Path of the curated schema of `family`; None for "custom".

  Raises ValueError for a family that is not one of FAMILIES.
  """
  if family == "custom":
    return None
  if family not in _FILES:
    raise ValueError(f"unknown source family {family!r}; "
                     f"known: {', '.join(FAMILIES)}")
  return os.path.join(SCHEMA_DIR, _FILES[family])


def load_schema(family: str):
  """The curated schema_pb2.Schema of `family`; None for "custom"."""
  path = schema_path(family)
  if path is None:
    return None
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())
