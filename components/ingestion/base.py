"""The bottom of the ingestion package: errors, rows, bad rows, field parsers.

Every other ingestion module builds on these and this module imports none of
them:

* `IngestionError` (the data cannot be ingested; one sentence saying why)
  and `BadRow` (one row cannot be parsed; caught per row);
* `Row`, a rating or movie as a dict keyed by the raw feature names of
  `common.features`, and `Source`, the interface every reader implements;
* `BadRowTracker`, which enforces max_bad_row_fraction;
* the field parsers (`parse_id`, `parse_int`, `parse_float`, `split_fields`,
  `genre_id`), which raise `BadRow` naming the field and what was expected.

Bad rows (a missing column, an empty id, text in a numeric column, a rating
of a movie or user that is not in the movie or user file) are reported to a
`BadRowTracker` with file and line number. With max_fraction 0 the first one
raises `IngestionError` ("u.data line 17: rating 'abc' is not a number");
otherwise rows are skipped and counted, and `BadRowTracker.check` raises once
more than that fraction of all rows read (movie, user and rating files
together) were bad. Duplicate (user, movie) ratings are not bad rows (see
components/ingestion/duplicates.py).
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from common import features

Row = Dict[str, object]

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
FLOAT32_MAX = 3.4028234663852886e38  # tf.Example floats are float32
# GroupLens spellings that differ from the TFDS ClassLabel names.
GENRE_ALIASES = {"Children's": "Children", "unknown": "Unknown"}
# What to do with several ratings of one (user, movie) pair (duplicates.py).
KEEP_NEWEST, ERROR = "keep_newest", "error"
DUPLICATE_POLICIES = (KEEP_NEWEST, ERROR)


class IngestionError(Exception):
  """The data cannot be ingested; the message says why and what to do."""


class BadRow(Exception):
  """One row cannot be parsed (raised by the row parsers, caught per row)."""


# ---------------------------------------------------------------------------
# Bad rows.
class BadRowTracker:
  """Counts rows read and bad rows, and enforces max_bad_row_fraction."""

  def __init__(self, max_fraction: float = 0.0, max_reported: int = 5):
    if not 0.0 <= max_fraction < 1.0:
      raise IngestionError(
          f"max_bad_row_fraction must be in [0, 1), got {max_fraction}")
    self.max_fraction = max_fraction
    self.max_reported = max_reported
    self.rows = 0
    self.bad = 0
    self.problems: List[str] = []
    self._paused = 0

  @contextlib.contextmanager
  def paused(self):
    """Rows read inside are neither counted nor reported (a re-read)."""
    self._paused += 1
    try:
      yield
    finally:
      self._paused -= 1

  def ok(self) -> None:
    if not self._paused:
      self.rows += 1

  def report(self, file: str, line: int, message: str,
             unit: str = "line") -> None:
    """Records a bad row; raises at once when no bad rows are allowed."""
    if self._paused:
      return
    problem = f"{file} {unit} {line}: {message}"
    if self.max_fraction <= 0.0:
      raise IngestionError(
          problem + " (set max_bad_row_fraction > 0 to skip bad rows)")
    self.rows += 1
    self.bad += 1
    if len(self.problems) < self.max_reported:
      self.problems.append(problem)
      logging.warning("Skipping bad row: %s", problem)

  def check(self) -> None:
    """Raises when more than max_fraction of the rows read were bad."""
    if not self.bad:
      return
    fraction = self.bad / max(self.rows, 1)
    logging.warning("Skipped %d bad rows of %d (%.4f%%); first: %s", self.bad,
                    self.rows, 100 * fraction, "; ".join(self.problems))
    if fraction > self.max_fraction:
      raise IngestionError(
          f"{self.bad} of {self.rows} rows ({100 * fraction:.2f}%) could not "
          f"be read, more than max_bad_row_fraction={self.max_fraction}. "
          f"First problems: " + "; ".join(self.problems))


# ---------------------------------------------------------------------------
# Sources.
class Source:
  """Rating rows and the movie catalogue of one data set.

  `where()` names the file and line (or row) of the rating `ratings()` has
  just yielded, for messages about that rating (duplicates.py).
  """

  family = "custom"
  implicit = False  # True: rows carry no user_rating (implicit feedback)
  parts: Tuple[str, ...] = ()  # named parts besides the whole (ml-100k folds)
  duplicates = KEEP_NEWEST  # duplicate (user, movie) ratings: DUPLICATE_POLICIES

  def __init__(self, name: str, tracker: Optional[BadRowTracker] = None):
    self.name = name
    self.tracker = tracker or BadRowTracker()
    self._file, self._unit, self._line = name, "row", 0

  def prepare(self) -> None:
    """Reads what ratings() joins in (movies, users); idempotent."""

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    raise NotImplementedError

  def catalogue(self) -> Iterator[Row]:
    raise NotImplementedError

  def close(self) -> None:
    pass

  def where(self) -> str:
    """'<file> line <n>' of the row yielded last."""
    return f"{self._file} {self._unit} {self._line}"

  def _rows(self, file: str, rows, parse, unit: str = "line"
            ) -> Iterator[Row]:
    """Applies parse to (line, raw) pairs, reporting bad rows."""
    self._file, self._unit = file, unit
    for line, raw in rows:
      try:
        row = parse(raw)
      except BadRow as e:
        self.tracker.report(file, line, str(e), unit)
        continue
      self.tracker.ok()
      if row is not None:
        self._line = line
        yield row


# ---------------------------------------------------------------------------
# Field parsers (raise BadRow with what was expected).
def parse_id(value: object, what: str) -> str:
  if value is None:
    raise BadRow(f"{what} is missing")
  if isinstance(value, float):
    if not math.isfinite(value):
      raise BadRow(f"{what} is missing")
    if value.is_integer():
      value = int(value)
  if isinstance(value, bytes):
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError:
      raise BadRow(f"{what} {value!r} is not UTF-8 text") from None
  text = str(value).strip()
  if not text:
    raise BadRow(f"{what} is empty")
  return text


def check_int64(number: int, what: str) -> int:
  """`number`, or BadRow when a tf.Example int64 cannot hold it."""
  if not INT64_MIN <= number <= INT64_MAX:
    raise BadRow(f"{what} {number} is out of the int64 range "
                 f"[{INT64_MIN}, {INT64_MAX}]")
  return number


def parse_int(value: object, what: str) -> int:
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, int):
    return check_int64(value, what)
  if isinstance(value, float) and value.is_integer():
    return check_int64(int(value), what)
  text = "" if value is None else str(value).strip()
  try:
    number = int(text)
  except ValueError:
    raise BadRow(f"{what} {text!r} is not an integer") from None
  return check_int64(number, what)


def parse_float(value: object, what: str) -> float:
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    try:
      number = float(value)
    except OverflowError:  # an int beyond any float
      raise BadRow(f"{what} {value} is out of the float32 range") from None
  else:
    text = "" if value is None else str(value).strip()
    try:
      number = float(text)
    except ValueError:
      raise BadRow(f"{what} {text!r} is not a number") from None
  if not math.isfinite(number):
    raise BadRow(f"{what} {value!r} is not a finite number")
  if abs(number) > FLOAT32_MAX:
    raise BadRow(f"{what} {value!r} is out of the float32 range "
                 f"(|x| <= {FLOAT32_MAX:.4g})")
  return number


def genre_id(name: str, aliases: Optional[Dict[str, str]] = None) -> int:
  """TFDS ClassLabel id of a genre name (GroupLens spellings accepted)."""
  name = name.strip()
  if aliases and name in aliases:
    name = aliases[name]
  name = GENRE_ALIASES.get(name, name)
  if name not in features.GENRE_ID:
    raise BadRow(f"genre {name!r} is not one of {features.GENRE_NAMES}")
  return features.GENRE_ID[name]


def split_fields(line: str, sep: str, layout: Sequence[str],
                 at_least: bool = False) -> List[str]:
  parts = line.split(sep)
  if len(parts) < len(layout) or (not at_least and len(parts) != len(layout)):
    raise BadRow(f"expected {len(layout)} fields separated by {sep!r} "
                 f"({sep.join(layout)}), found {len(parts)}")
  return parts
