"""Duplicate ratings: several ratings of one (user, movie) pair.

A log delivered twice, or a user who re-rated a movie, gives one pair
several (often contradicting) ratings; written as they are, the same pair
lands twice in train (or in train and eval). They are found without any
Python structure per pair, cheaply enough for 25M ratings:

1. While ingest.py reads the rows anyway (the writing pass of the random and
   fold splits, the timestamp pass of the time split), `PairKeys` records a
   64-bit hash of each row's (user_id, movie_id) in an int64 array: 8 bytes
   and ~0.2 us a row (200 MB at 25M ratings). numpy sorts it (seconds at
   25M) and rows whose hash occurs more than once are the candidates. Clean
   data stops here.
2. Only when there are candidates, `find` reads the rows again and gives
   each candidate a second, independent 64-bit hash (MD5), its timestamp
   and, for the first few pairs, its file and line. Rows with equal hash
   pairs are ratings of one (user, movie) (a false match needs two 64-bit
   hashes to collide at once: ~1e-20 at 25M ratings). Rows are numbered in
   reading order, which every pass over a source repeats.

What happens then is the source's policy (`Source.duplicates`: the data
config's ``duplicates`` key; GroupLens and TFDS sources use the default):

* ``keep_newest`` (default): of each pair the rating with the latest
  timestamp is kept (on a tie, or without timestamps, the later row, i.e.
  the later line or span); a warning names the count and the first pairs.
  ingest.py then leaves the other rows out (the random and fold splits
  write their splits again, so only data with duplicates pays that pass);
* ``error``: `IngestionError` naming the count and the first pairs.

Duplicates are not bad rows: max_bad_row_fraction does not count them.
"""
from __future__ import annotations

import array
import dataclasses
import hashlib
import logging
from typing import Callable, Dict, Iterable, Iterator, List, Tuple, TypeVar

import numpy as np

from components.ingestion.base import ERROR, IngestionError, Row, Source

T = TypeVar("T")
MAX_PAIRS_SHOWN = 3
MAX_ROWS_SHOWN = 3  # per pair


class PairKeys:
  """64-bit hashes of the (user_id, movie_id) of rows, in reading order.

  Python's hash() of the pair: fast, and stable within the process that
  makes every pass (its salt differs between processes, which is fine).
  """

  def __init__(self):
    self._keys = array.array("q")

  def add(self, row: Row) -> None:
    self._keys.append(hash((row["user_id"], row["movie_id"])))

  def __len__(self) -> int:
    return len(self._keys)

  def array(self) -> np.ndarray:
    return np.frombuffer(self._keys, dtype=np.int64)

  def candidates(self) -> np.ndarray:
    """Ascending indices of the rows whose hash occurs more than once."""
    keys = self.array()
    if keys.size < 2:
      return np.empty(0, np.int64)
    ordered = np.sort(keys)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    if not repeated.size:
      return np.empty(0, np.int64)
    repeated = np.unique(repeated)
    position = np.minimum(np.searchsorted(repeated, keys), repeated.size - 1)
    return np.flatnonzero(repeated[position] == keys)


@dataclasses.dataclass
class Duplicates:
  """What `find` found.

  Attributes:
    rows: ratings beyond the first of their pair (dropped by keep_newest).
    pairs: (user, movie) pairs rated more than once.
    examples: the first pairs, with file and line of their ratings.
    drop: ascending row indices of the ratings keep_newest leaves out.
  """
  rows: int = 0
  pairs: int = 0
  examples: List[str] = dataclasses.field(default_factory=list)
  drop: np.ndarray = dataclasses.field(
      default_factory=lambda: np.empty(0, np.int64))

  def describe(self, source_name: str) -> str:
    return (f"{self.rows} duplicate rating(s) in {source_name}: "
            f"{self.pairs} (user, movie) pair(s) rated more than once, e.g. "
            + "; ".join(self.examples))


def _second_hash(row: Row) -> int:
  digest = hashlib.md5(row["user_id"].encode("utf-8") + b"\0"
                       + row["movie_id"].encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "little", signed=True)


def _show(row: Row, where: str) -> str:
  parts = []
  if row.get("user_rating") is not None:
    parts.append(f"rating {row['user_rating']:g}")
  if row.get("timestamp") is not None:
    parts.append(f"timestamp {row['timestamp']}")
  return where + (f" ({', '.join(parts)})" if parts else "")


def find(rows: Iterable[Row], where: Callable[[], str], keys: PairKeys,
         candidates: np.ndarray) -> Duplicates:
  """Groups the candidate rows of `rows` (the rows `keys` was made of)."""
  count = candidates.size
  if not count:
    return Duplicates()
  first = keys.array()[candidates]
  second = np.empty(count, np.int64)
  timestamps = np.zeros(count, np.int64)
  shown: Dict[Tuple[int, int], List[str]] = {}
  names: Dict[Tuple[int, int], Tuple[str, str]] = {}
  j, wanted, index = 0, int(candidates[0]), -1
  for index, row in enumerate(rows):
    if index != wanted:
      continue
    second[j] = _second_hash(row)
    timestamps[j] = row.get("timestamp") or 0
    pair = (int(first[j]), int(second[j]))
    if pair in shown or len(shown) < 2 * MAX_PAIRS_SHOWN:
      lines = shown.setdefault(pair, [])
      names.setdefault(pair, (row["user_id"], row["movie_id"]))
      if len(lines) < MAX_ROWS_SHOWN:
        lines.append(_show(row, where()))
    j += 1
    if j == count:
      break
    wanted = int(candidates[j])
  if j != count:
    raise IngestionError(f"the source gave fewer rows on a second reading "
                         f"({index + 1} instead of at least {wanted + 1}); "
                         f"did its files change during ingestion?")
  # Sorted by pair, then timestamp, then row: each pair's last row is kept.
  order = np.lexsort((candidates, timestamps, second, first))
  a, b = first[order], second[order]
  last = np.ones(count, bool)
  last[:-1] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
  begins = np.ones(count, bool)
  begins[1:] = last[:-1]
  group_size = np.diff(np.append(np.flatnonzero(begins), count))
  pairs = int(np.count_nonzero(group_size > 1))
  drop = np.sort(candidates[order[~last]])
  examples = []
  for pair, lines in shown.items():
    if len(lines) > 1 and len(examples) < MAX_PAIRS_SHOWN:
      user, movie = names[pair]
      examples.append(f"user {user!r} movie {movie!r}: " + ", ".join(lines))
  return Duplicates(rows=int(drop.size), pairs=pairs, examples=examples,
                    drop=drop)


def resolve(reader: Source, keys: PairKeys,
            rows_again: Callable[[], Iterator[Row]]) -> Duplicates:
  """Finds the duplicates and applies `reader.duplicates` (the policy).

  rows_again() must give the rows `keys` was made of, in the same order;
  it is called only when some hash occurs twice, and read with bad-row
  reporting paused (the first pass counted them).
  """
  candidates = keys.candidates()
  if not candidates.size:
    return Duplicates()
  with reader.tracker.paused():
    found = find(rows_again(), reader.where, keys, candidates)
  if not found.rows:
    return found  # only hash collisions
  message = found.describe(reader.name)
  if reader.duplicates == ERROR:
    raise IngestionError(
        f"{message}. Stopped (duplicates: error); remove them, or set "
        f"duplicates: keep_newest in the data config to keep the newest "
        f"rating of each pair")
  logging.warning("%s. Kept the newest rating of each pair (latest "
                  "timestamp, then the later row) and left %d out; a data "
                  "config's duplicates: error stops instead", message,
                  found.rows)
  return found


def without(items: Iterable[T], drop: np.ndarray) -> Iterator[T]:
  """`items` (rows, or tuples holding them) minus those at the ascending
  indices `drop`."""
  if not drop.size:
    yield from items
    return
  j, skip = 0, int(drop[0])
  for index, item in enumerate(items):
    if index == skip:
      j += 1
      skip = int(drop[j]) if j < drop.size else -1
      continue
    yield item
