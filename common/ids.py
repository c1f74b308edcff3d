"""Raw ids (user_id, movie_id) as numpy arrays, and lookups among them.

Tens of millions of ratings cannot be indexed with a Python object (a str
or a dict entry) per row: ~100-200 B each. Ids are kept as fixed-width
UTF-8 bytes arrays (`S<n>`, a few bytes per id) and looked up by sorting and
binary search. Used by the rating baselines, the retrieval training stats
and the retrieval evaluator, so they all compare ids the same way.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def as_ids(values: Sequence) -> np.ndarray:
  """`values` (bytes, str or numbers; a list or an array) as an `S` array of
  their UTF-8 bytes; so bytes from tf.Examples and str from Python match."""
  a = np.asarray(values)
  if a.dtype.kind == "S":
    return a
  if not len(a):
    return np.zeros([0], "S1")
  if a.dtype == object and isinstance(a.flat[0], bytes):
    return a.astype("S")
  return np.char.encode(a.astype(str), "utf-8")


def positions(keys: Sequence, query: Sequence) -> np.ndarray:
  """int64 position of each query id in `keys` (distinct, any order), -1
  where it is absent."""
  keys, query = as_ids(keys), as_ids(query)
  if not len(keys):
    return np.full(len(query), -1, np.int64)
  order = np.argsort(keys, kind="stable")
  ordered = keys[order]
  at = np.minimum(np.searchsorted(ordered, query), len(keys) - 1)
  return np.where(ordered[at] == query, order[at], -1).astype(np.int64)


def require_distinct(ids: np.ndarray, what: str) -> None:
  if len(np.unique(ids)) != len(ids):
    raise ValueError(f"{what} must be distinct ids ({len(ids)} given, "
                     f"{len(np.unique(ids))} distinct)")
