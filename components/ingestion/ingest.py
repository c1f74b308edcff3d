"""Reads a source, splits it and writes TFX-layout GZIP TFRecords of tf.Example.

`ingest()` is the whole work of the MovieLensExampleGen executor, without
TFX artifacts, so it can be used and tested on plain folders:

* ``<examples_dir>/Split-train/data_tfrecord-SSSSS-of-NNNNN.gz`` and
  ``Split-eval/...``: one tf.Example per rating (`features.serialize_example`);
* ``<catalogue_dir>/Split-catalogue/data_tfrecord-SSSSS-of-NNNNN.gz``: one
  tf.Example per movie of the source (movie_id, movie_title, movie_genres).

Shards: every split is written as several files (the names of Beam's and
stock ExampleGen's WriteToTFRecord; readers glob ``Split-<name>/*``). GZIP
files cannot be split, so a Beam stage reads a split with at most one worker
per file: on Flink, Spark or Dataflow (and the DirectRunner's
multi_processing mode) more shards let more workers read. With num_shards 0
(the default) the number grows with the data: rows are dealt round-robin to
a group of MIN_SHARDS open files, and every MIN_SHARDS * ROWS_PER_SHARD rows
the group is closed and a new one opened, so a split has
MIN_SHARDS * ceil(rows / (MIN_SHARDS * ROWS_PER_SHARD)) shards of at most
ROWS_PER_SHARD rows (fewer when the split has fewer rows than MIN_SHARDS).
num_shards > 0 deals the rows round-robin to exactly that many files.
Reading the shards in name order gives every row once, in a deterministic
order. Files are written under temporary names and renamed when the split is
complete (when the total, NNNNN, is known).

Splits:

* ``random``: a rating goes to eval when a stable hash (MD5) of
  ``user_id \\0 movie_id`` falls below eval_fraction: the same rating always
  lands in the same split, whatever the row order, process or machine.
* ``time``: a global cut at the (1 - eval_fraction) quantile of timestamps
  (first pass over the data); train holds ratings with timestamp <= cut (the
  past), eval the later ones.
* ``u1``..``u5``, ``ua``, ``ub`` (ml-100k folders/zips only): train =
  ``<fold>.base``, eval = ``<fold>.test``.

Duplicates (several ratings of one (user, movie) pair, duplicates.py) are
found on hashes recorded in the pass that reads every row anyway: the
writing pass of ``random`` and the folds, the timestamp pass of ``time``.
With ``keep_newest`` the older ratings are left out: ``time`` skips them in
its writing pass (and in its quantile); ``random`` and the folds, which have
written them already, write their splits once more, a pass only data with
duplicates pays. Bad rows are counted (and max_bad_row_fraction enforced)
in the first pass; later passes read with reporting paused.

Spans (a ``{SPAN}`` pattern, components/ingestion/spans.py): the ratings of
the spans `range_config` selects (default: the newest) are read as one union
and split as above; the examples carry the newest span number. With
`drift_dir` the data of the drift check is written besides:

* ``<drift_dir>/Split-current/...``: every rating of the newest span;
* ``<drift_dir>/Split-previous/...``: every rating of the span before it,
  when there is one.

These re-read the spans with bad-row reporting paused: the newest span was
counted (and its bad rows enforced) in the main pass, and the previous span
only serves as the drift baseline.

Writing streams row by row (memory: the movie and user tables, 8 bytes a
row for the duplicate check, plus 8 more for the time split's timestamps).
"""
from __future__ import annotations

import array
import dataclasses
import hashlib
import logging
import os
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from common import features
from components.ingestion import duplicates
from components.ingestion import sources
from components.ingestion import spans as spans_lib
from components.ingestion.base import (BadRowTracker, IngestionError, Row,
                                       Source)
from components.ingestion.grouplens import ML100K_FOLDS

TRAIN, EVAL, CATALOGUE = "train", "eval", "catalogue"
CURRENT, PREVIOUS = "current", "previous"  # splits of the drift examples
SPLITS = ("random", "time") + ML100K_FOLDS
FILE_PREFIX = "data_tfrecord"
MIN_SHARDS = 2  # shards per split at least (fewer only for fewer rows)
ROWS_PER_SHARD = 1_000_000  # automatic sharding: rows per shard at most
PROGRESS_EVERY = 1_000_000  # rows between progress log lines


@dataclasses.dataclass
class IngestionSummary:
  """What ingest() wrote."""
  source: str
  source_family: str
  split: str
  num_examples: Dict[str, int]
  num_movies: int
  num_bad_rows: int
  implicit: bool
  problems: List[str]
  # Spans (empty / None without a {SPAN} pattern).
  spans: List[int] = dataclasses.field(default_factory=list)
  span: Optional[int] = None  # the newest span read
  previous_span: Optional[int] = None  # the drift baseline
  num_drift_examples: Dict[str, int] = dataclasses.field(default_factory=dict)
  num_shards: Dict[str, int] = dataclasses.field(default_factory=dict)
  num_duplicates: int = 0  # ratings left out as older duplicates


def split_dir(base_dir: str, split_name: str) -> str:
  """The folder of one split, in TFX's layout."""
  return os.path.join(base_dir, f"Split-{split_name}")


def shard_name(index: int, total: int) -> str:
  """data_tfrecord-00003-of-00008.gz (Beam's default shard template)."""
  return f"{FILE_PREFIX}-{index:05d}-of-{total:05d}.gz"


def split_files(base_dir: str, split_name: str) -> List[str]:
  """The TFRecord files of one split, in shard order ([] when none)."""
  pattern = os.path.join(split_dir(base_dir, split_name), f"{FILE_PREFIX}-*")
  return sorted(tf.io.gfile.glob(pattern))


def is_eval_random(user_id: str, movie_id: str, eval_fraction: float) -> bool:
  """Stable pseudo-random split of one (user, movie) pair."""
  key = user_id.encode("utf-8") + b"\0" + movie_id.encode("utf-8")
  digest = hashlib.md5(key).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < eval_fraction


def time_cut(timestamps, eval_fraction: float) -> int:
  """The timestamp at the (1 - eval_fraction) quantile (train: ts <= cut)."""
  values = np.frombuffer(timestamps, dtype=np.int64) if isinstance(
      timestamps, array.array) else np.asarray(timestamps, dtype=np.int64)
  if values.size == 0:
    raise IngestionError("No ratings to split")
  return int(np.quantile(values, 1.0 - eval_fraction, method="lower"))


def check_num_shards(num_shards: int) -> int:
  if not isinstance(num_shards, int) or num_shards < 0:
    raise IngestionError(f"num_shards must be an integer >= 0 (0: by the "
                         f"number of rows), got {num_shards!r}")
  return num_shards


class _Writer:
  """Sharded GZIP TFRecord files of tf.Examples for one split (see above)."""

  def __init__(self, base_dir: str, split_name: str, num_shards: int = 0):
    self._dir = split_dir(base_dir, split_name)
    tf.io.gfile.makedirs(self._dir)
    self._width = check_num_shards(num_shards) or MIN_SHARDS
    self._group_rows = (0 if num_shards else self._width * ROWS_PER_SHARD)
    self._group: List = []  # open writers of the current group
    self._paths: List[str] = []  # temporary paths, in shard order
    self._closed = False
    self.count = 0

  def _open(self):
    path = os.path.join(self._dir,
                        f".{FILE_PREFIX}-{len(self._paths):05d}.tmp.gz")
    self._paths.append(path)
    self._group.append(tf.io.TFRecordWriter(path, options="GZIP"))

  def _close_group(self) -> None:
    for writer in self._group:
      writer.close()
    self._group = []

  def write(self, row) -> None:
    slot = self.count % self._width
    if self._group_rows and self.count and self.count % self._group_rows == 0:
      self._close_group()
    if slot >= len(self._group):
      self._open()
    self._group[slot].write(features.serialize_example(row))
    self.count += 1

  @property
  def num_shards(self) -> int:
    return len(self._paths)

  def close(self) -> None:
    """Closes the files and gives them their final names (once)."""
    if self._closed:
      return
    self._closed = True
    if not self._paths:  # an empty split still gets one (empty) file
      self._open()
    self._close_group()
    total = len(self._paths)
    for index, path in enumerate(self._paths):
      tf.io.gfile.rename(
          path, os.path.join(self._dir, shard_name(index, total)),
          overwrite=True)


def check_split(split: str, eval_fraction: float) -> None:
  if split not in SPLITS:
    raise IngestionError(f"split {split!r} is not one of {', '.join(SPLITS)}")
  if split in ("random", "time") and not 0.0 < eval_fraction < 1.0:
    raise IngestionError(f"eval_fraction must be in (0, 1), got "
                         f"{eval_fraction}")


def ingest(source: str = "", data_config: str = "", split: str = "random",
           eval_fraction: float = 0.2, max_bad_row_fraction: float = 0.0, *,
           examples_dir: str, catalogue_dir: str,
           tfds_data_dir: Optional[str] = None, range_config=None,
           drift_dir: Optional[str] = None,
           num_shards: int = 0) -> IngestionSummary:
  """Writes the train/eval examples and the catalogue; returns the counts.

  range_config (a RangeConfig, its dict or JSON) selects the spans of a
  ``{SPAN}`` pattern; drift_dir receives the current/previous span splits;
  num_shards is the number of files per split (0: by the number of rows).
  """
  split = (split or "random").strip()
  check_split(split, eval_fraction)
  check_num_shards(num_shards)
  tracker = BadRowTracker(max_bad_row_fraction)
  pattern = sources.source_pattern(source, data_config)
  selection = spans_lib.resolve(pattern, range_config) if pattern else None
  if selection is not None:
    logging.info("Spans of %s: %s available, reading %s (%s)", pattern,
                 sorted(selection.available), selection.spans,
                 spans_lib.describe_range(range_config))
    reader = sources.open_spans(selection, selection.spans,
                                (data_config or "").strip(), tracker)
  else:
    reader = sources.open_source(source, data_config, tracker, tfds_data_dir,
                                 range_config)
  try:
    if split in ML100K_FOLDS and f"{split}.base" not in reader.parts:
      raise IngestionError(
          f"split {split!r} needs a GroupLens ml-100k folder or zip with "
          f"{split}.base and {split}.test; {reader.name} is "
          f"{reader.family!r} data. Use split 'random' or 'time'.")
    logging.info("Ingesting %s (family %s), split %s", reader.name,
                 reader.family, split)
    reader.prepare()
    writers, found = _write_examples(reader, split, eval_fraction,
                                     examples_dir, num_shards)
    counts = {name: w.count for name, w in writers.items()}
    for name, count in counts.items():
      if not count:
        raise IngestionError(
            f"The {name} split of {reader.name} is empty ({counts}); use more "
            f"data or another split / eval_fraction")
    catalogue = _Writer(catalogue_dir, CATALOGUE, num_shards)
    try:
      for movie in reader.catalogue():
        catalogue.write(movie)
    finally:
      catalogue.close()
    shards = {name: w.num_shards for name, w in writers.items()}
    shards[CATALOGUE] = catalogue.num_shards
    logging.info("Wrote %d train and %d eval examples, %d catalogue movies "
                 "(%d bad rows skipped, %d duplicates left out); shards: %s",
                 counts[TRAIN], counts[EVAL], catalogue.count, tracker.bad,
                 found.rows, shards)
    summary = IngestionSummary(
        source=reader.name, source_family=reader.family, split=split,
        num_examples=counts, num_movies=catalogue.count,
        num_bad_rows=tracker.bad, implicit=reader.implicit,
        problems=list(tracker.problems), num_shards=shards,
        num_duplicates=found.rows)
  finally:
    reader.close()
  if selection is not None:
    summary.spans = list(selection.spans)
    summary.span = selection.newest
    summary.previous_span = selection.previous
    if drift_dir:
      summary.num_drift_examples = write_drift_examples(
          selection, (data_config or "").strip(), drift_dir, num_shards)
  return summary


def write_drift_examples(selection: spans_lib.SpanSelection, data_config: str,
                         drift_dir: str, num_shards: int = 0
                         ) -> Dict[str, int]:
  """Writes the newest span (current) and the one before it (previous)."""
  counts = {}
  parts = [(CURRENT, selection.newest)]
  if selection.previous is not None:
    parts.append((PREVIOUS, selection.previous))
  for name, span in parts:
    tracker = BadRowTracker(0.0)
    reader = sources.open_spans(selection, [span], data_config, tracker)
    writer = _Writer(drift_dir, name, num_shards)
    try:
      with tracker.paused():  # see the module docstring
        for row in reader.ratings():
          writer.write(row)
    finally:
      writer.close()
      reader.close()
    if not writer.count:
      raise IngestionError(f"span {span} ({selection.path(span)}) has no "
                           f"ratings; a span must hold data")
    counts[name] = writer.count
  logging.info("Drift examples: %s", ", ".join(
      f"{n} (span {s}): {counts[n]}" for n, s in parts))
  return counts


def _progress(writers) -> None:
  total = sum(w.count for w in writers.values())
  if total % PROGRESS_EVERY == 0:
    logging.info("... %d examples (%s)", total, ", ".join(
        f"{n}: {w.count}" for n, w in writers.items()))


def _ordered_rows(reader: Source, split: str
                  ) -> Iterator[Tuple[Optional[str], Row]]:
  """(TRAIN/EVAL for a fold's part, else None; row), in reading order.

  Every pass reads the rows through here, so row i is the same row in each
  (duplicates.py numbers them).
  """
  if split in ML100K_FOLDS:
    for name, part in ((TRAIN, f"{split}.base"), (EVAL, f"{split}.test")):
      for row in reader.ratings(part):
        yield name, row
  else:
    for row in reader.ratings():
      yield None, row


def _write_all(reader: Source, split: str, route: Callable, examples_dir: str,
               num_shards: int, drop: Optional[np.ndarray] = None,
               keys: Optional[duplicates.PairKeys] = None
               ) -> Dict[str, "_Writer"]:
  """Writes every row but those at `drop` to the split route() names.

  route(fold part or None, row) -> TRAIN or EVAL; keys, when given, records
  every row's pair for the duplicate check.
  """
  writers = {TRAIN: _Writer(examples_dir, TRAIN, num_shards),
             EVAL: _Writer(examples_dir, EVAL, num_shards)}
  rows = _ordered_rows(reader, split)
  if drop is not None:
    rows = duplicates.without(rows, drop)
  try:
    for target, row in rows:
      if keys is not None:
        keys.add(row)
      writers[route(target, row)].write(row)
      _progress(writers)
  finally:
    for writer in writers.values():
      writer.close()
  return writers


def _time_cut(reader: Source, split: str, eval_fraction: float,
              keys: duplicates.PairKeys, rows_again
              ) -> Tuple[int, duplicates.Duplicates]:
  """The time split's first pass: its cut, of the ratings kept."""
  timestamps = array.array("q")
  for _, row in _ordered_rows(reader, split):  # bad rows count here
    if row.get("timestamp") is None:
      raise IngestionError(f"split 'time' needs timestamps; {reader.name} "
                           f"has none. Use split 'random'.")
    timestamps.append(row["timestamp"])
    keys.add(row)
  reader.tracker.check()
  found = duplicates.resolve(reader, keys, rows_again)
  kept = np.frombuffer(timestamps, dtype=np.int64)
  if found.drop.size:
    kept = np.delete(kept, found.drop)
  return time_cut(kept, eval_fraction), found


def _write_examples(reader: Source, split: str, eval_fraction: float,
                    examples_dir: str, num_shards: int
                    ) -> Tuple[Dict[str, "_Writer"], duplicates.Duplicates]:
  """The train and eval splits, duplicates handled (module docstring)."""
  keys = duplicates.PairKeys()

  def rows_again():
    return (row for _, row in _ordered_rows(reader, split))

  if split == "time":
    cut, found = _time_cut(reader, split, eval_fraction, keys, rows_again)
    del keys
    logging.info("Time split: train timestamp <= %d < eval", cut)
    with reader.tracker.paused():
      writers = _write_all(
          reader, split, lambda _, row: TRAIN if row["timestamp"] <= cut
          else EVAL, examples_dir, num_shards, found.drop)
    return writers, found

  if split in ML100K_FOLDS:
    def route(part, _):
      return part
  else:
    def route(_, row):
      return EVAL if is_eval_random(row["user_id"], row["movie_id"],
                                    eval_fraction) else TRAIN
  # Bad rows count in this pass.
  writers = _write_all(reader, split, route, examples_dir, num_shards,
                       keys=keys)
  reader.tracker.check()
  found = duplicates.resolve(reader, keys, rows_again)
  if not found.rows:
    return writers, found
  del keys
  logging.info("Writing the splits again without %d older duplicates",
               found.rows)
  for name in writers:
    tf.io.gfile.rmtree(split_dir(examples_dir, name))
  with reader.tracker.paused():
    writers = _write_all(reader, split, route, examples_dir, num_shards,
                         found.drop)
  return writers, found
