"""Regenerates the curated MovieLens schemas of this folder.

    python -m pipeline.schemas.curate --ml100k DIR [--out DIR]

1. Statistics of real data are computed with TFDV: the GroupLens ml-100k
   folder given by --ml100k (read at run time, never copied into the repo).
   Rows are made the way TFDS `movielens/100k-ratings` makes them
   (tensorflow_datasets movielens_parsing) and encoded with the feature
   contract (common.features.to_tf_example).
2. tfdv.infer_schema gives the starting schema; its feature types are checked
   against the contract.
3. `curate` then replaces everything data-dependent by the real domains of
   MovieLens (CURATED_DOMAINS) and the conventions Transform relies on:
   single-valued features get `presence {min_fraction: 1 min_count: 1}` and
   `shape {dim {size: 1}}` (dense FixedLenFeature([1]) in tf.Transform);
   movie_genres gets no shape (VarLenFeature) and `value_count {min: 0}`.
   No string_domain lists values of ids, titles, zip codes or occupations (new
   data brings new ones), and there are no drift/distribution constraints.
4. The 1m and current (ml-20m/25m/latest) schemas are the same curation
   restricted to the features those sources have (FAMILY_FEATURES), with the
   half-star rating range for "current".

The domains are facts of MovieLens, not of one sample, so the output does not
depend on which data step 1 saw; the data only cross-checks the types.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, Iterable, Iterator, List, Mapping, Optional

from common import features as F

HERE = os.path.dirname(os.path.abspath(__file__))

# Sane floor and ceiling of a rating's time: 1990-01-01 and 2100-01-01 UTC.
# (MovieLens starts in 1995; a timestamp past 2100 is a unit or parsing bug.)
MIN_TIMESTAMP = 631152000
MAX_TIMESTAMP = 4102444800
BUCKETIZED_AGES = (1, 18, 25, 35, 45, 50, 56)

_ALL = list(F.FEATURES)
FAMILY_FEATURES: Dict[str, List[str]] = {
    "100k": _ALL,
    "1m": [n for n in _ALL if n != F.RAW_USER_AGE],
    "current": [F.USER_ID, F.MOVIE_ID, F.MOVIE_TITLE, F.MOVIE_GENRES,
                F.TIMESTAMP, F.USER_RATING],
}
RATING_RANGE = {"100k": (1.0, 5.0), "1m": (1.0, 5.0), "current": (0.5, 5.0)}

# (domain kind, min, max) of every feature that has a curated domain. Ids are
# bytes holding positive integers in every MovieLens release: an int_domain
# on a BYTES feature makes TFDV reject empty or non-numeric ids without
# listing any id. Gender is an int_domain {0, 1}, not a bool_domain, because
# tf.Transform's schema_utils cannot write a bool_domain back.
CURATED_DOMAINS = {
    F.USER_ID: ("int", 1, None),
    F.MOVIE_ID: ("int", 1, None),
    F.USER_GENDER: ("int", 0, 1),
    F.BUCKETIZED_USER_AGE: ("float", min(BUCKETIZED_AGES), max(BUCKETIZED_AGES)),
    F.RAW_USER_AGE: ("float", 1, 120),
    F.USER_OCCUPATION_LABEL: ("int", 0, len(F.OCCUPATION_LABELS) - 1),
    F.MOVIE_GENRES: ("int", 0, len(F.GENRE_NAMES) - 1),
    F.TIMESTAMP: ("int", MIN_TIMESTAMP, MAX_TIMESTAMP),
    # F.USER_RATING: per family, RATING_RANGE.
}

HEADER = """\
# Curated TFDV schema of MovieLens family "{family}" (features: {names}).
# Made by pipeline/schemas/curate.py: tfdv.infer_schema on statistics of
# realistic data, then the real MovieLens domains and the presence/shape
# conventions Transform relies on (see pipeline/schemas/README.md).
# Regenerate with: python -m pipeline.schemas.curate --ml100k <dir>
"""


def tfds_100k_row(ex: Mapping[str, object]) -> Dict[str, object]:
  """A contract row from one example of movielens_parsing.parse_100k_ratings_data."""
  row = dict(ex)
  row[F.USER_RATING] = float(ex[F.USER_RATING])
  row[F.TIMESTAMP] = int(ex[F.TIMESTAMP])
  row[F.USER_GENDER] = int(bool(ex[F.USER_GENDER]))
  row[F.BUCKETIZED_USER_AGE] = float(ex[F.BUCKETIZED_USER_AGE])
  row[F.RAW_USER_AGE] = float(ex[F.RAW_USER_AGE])
  row[F.MOVIE_GENRES] = [F.GENRE_ID[g] for g in ex[F.MOVIE_GENRES]]
  row[F.USER_OCCUPATION_LABEL] = F.OCCUPATION_LABEL_ID[
      ex[F.USER_OCCUPATION_LABEL]]
  return row


def ml100k_rows(path: str) -> Iterator[Dict[str, object]]:
  """Contract rows of a GroupLens-format ml-100k folder, as TFDS parses it."""
  from tensorflow_datasets.structured import movielens_parsing  # pylint: disable=g-import-not-at-top
  for _, ex in movielens_parsing.parse_100k_ratings_data(path):
    yield tfds_100k_row(ex)


def statistics_of_examples(serialized: Iterable[bytes]):
  """TFDV statistics (DatasetFeatureStatisticsList) of serialized tf.Examples.

  In memory, without Beam: the same statistics generators StatisticsGen runs.
  """
  from tensorflow_data_validation.statistics import stats_impl  # pylint: disable=g-import-not-at-top
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(
      list(serialized))
  return stats_impl.generate_statistics_in_memory(batch)


def statistics_of_rows(rows: Iterable[Mapping[str, object]]):
  return statistics_of_examples(
      F.to_tf_example(r).SerializeToString() for r in rows)


def curate(inferred, family: str):
  """The curated schema of `family` from a TFDV-inferred schema."""
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  by_name = {f.name: f for f in inferred.feature}
  type_of = {F.BYTES: schema_pb2.BYTES, F.FLOAT: schema_pb2.FLOAT,
             F.INT64: schema_pb2.INT}
  out = schema_pb2.Schema()
  for name in FAMILY_FEATURES[family]:
    spec = F.FEATURES[name]
    if name not in by_name:
      raise ValueError(f"inferred schema lacks {name!r}")
    if by_name[name].type != type_of[spec.dtype]:
      raise ValueError(f"{name!r}: inferred type "
                       f"{schema_pb2.FeatureType.Name(by_name[name].type)} is "
                       f"not the contract's {spec.dtype}")
    f = out.feature.add(name=name, type=type_of[spec.dtype])
    f.presence.min_fraction = 1.0
    f.presence.min_count = 1
    if spec.varlen:
      f.value_count.min = 0
    else:
      f.shape.dim.add(size=1)
    domain = CURATED_DOMAINS.get(name)
    if name == F.USER_RATING:
      domain = ("float",) + RATING_RANGE[family]
    if domain:
      kind, lo, hi = domain
      d = f.int_domain if kind == "int" else f.float_domain
      d.SetInParent()
      if lo is not None:
        d.min = lo
      if hi is not None:
        d.max = hi
  return out


def schema_text(schema, family: str) -> str:
  names = ", ".join(f.name for f in schema.feature)
  return HEADER.format(family=family, names=names) + str(schema)


def main(argv: Optional[List[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ml100k", required=True,
                      help="GroupLens ml-100k folder to infer from")
  parser.add_argument("--out", default=HERE)
  args = parser.parse_args(argv)
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  rows = list(ml100k_rows(args.ml100k))
  inferred = tfdv.infer_schema(statistics_of_rows(rows))
  for family in FAMILY_FEATURES:
    path = os.path.join(args.out, f"movielens_{family}.pbtxt")
    with open(path, "w") as f:
      f.write(schema_text(curate(inferred, family), family))
    print("wrote", path)


if __name__ == "__main__":
  main()
