"""The movie catalogue artifact: where its examples are and how they are read.

Ingestion writes every movie of the source, rated or not, as one tf.Example
(movie_id, movie_title, movie_genres) to `<uri>/Split-catalogue/*.gz`
(gzipped TFRecords). The retrieval trainer embeds the whole catalogue into
its index, the evaluators and the tuner score against it: they all read it
here, one entry per movie (the first example of a movie_id wins).
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import tensorflow as tf

from common import features as F

CATALOGUE_SPLIT = "catalogue"


def record_dataset(files: Sequence[str]) -> tf.data.Dataset:
  """TFRecords of `files` (gzip when every name ends in .gz, as TFX writes)."""
  compression = "GZIP" if files and all(f.endswith(".gz") for f in files) else ""
  return tf.data.TFRecordDataset(list(files), compression_type=compression)


def catalogue_files(catalogue_uri: str, split: str = CATALOGUE_SPLIT) -> List[str]:
  """The catalogue's example files: `<uri>/Split-<split>/*`, or the uri's
  own files, or the uri itself (a file)."""
  for pattern in (os.path.join(catalogue_uri, f"Split-{split}", "*"),
                  os.path.join(catalogue_uri, "*"), catalogue_uri):
    files = sorted(f for f in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(f))
    if files:
      return files
  raise FileNotFoundError(f"No catalogue examples under {catalogue_uri!r}")


def _first_bytes(feature: tf.train.Feature) -> bytes:
  return feature.bytes_list.value[0] if feature.bytes_list.value else b""


def decode_catalogue(records: Sequence[bytes]) -> Dict[str, list]:
  """Serialized catalogue examples → {"serialized", "movie_ids",
  "movie_titles", "movie_genres"}, one entry per movie_id (first wins;
  examples without a movie_id are skipped)."""
  out = {"serialized": [], "movie_ids": [], "movie_titles": [], "movie_genres": []}
  seen = set()
  for raw in records:
    feat = tf.train.Example.FromString(raw).features.feature
    movie_id = _first_bytes(feat[F.MOVIE_ID]) if F.MOVIE_ID in feat else b""
    if not movie_id or movie_id in seen:
      continue
    seen.add(movie_id)
    out["serialized"].append(raw)
    out["movie_ids"].append(movie_id)
    out["movie_titles"].append(
        _first_bytes(feat[F.MOVIE_TITLE]) if F.MOVIE_TITLE in feat else b"")
    out["movie_genres"].append(
        list(feat[F.MOVIE_GENRES].int64_list.value) if F.MOVIE_GENRES in feat else [])
  return out


def read_catalogue(catalogue_uri: str, split: str = CATALOGUE_SPLIT) -> Dict[str, list]:
  """decode_catalogue of every example of the catalogue at catalogue_uri."""
  return decode_catalogue(
      r.numpy() for r in record_dataset(catalogue_files(catalogue_uri, split)))
