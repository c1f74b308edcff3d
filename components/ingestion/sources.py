"""Readers of rating data, turning every source into rows of the contract.

Plain Python (no TFX): every reader yields dicts keyed by the raw feature
names of `common.features` (TFDS `movielens/*-ratings` names and encodings),
one per rating, and a catalogue of dicts with movie_id, movie_title and
movie_genres, one per movie of the source whether rated or not.

Sources (the `source` string of `open_source`):

* ``tfds:movielens/<config>``: the TFDS MovieLens builders (100k-ratings,
  1m-ratings, 20m-ratings, 25m-ratings, latest-small-ratings); the catalogue
  comes from the matching ``-movies`` config. Needs the TFDS data prepared in
  the TFDS data dir or internet access to download it; offline the reader
  raises `IngestionError` telling the user to pass a local GroupLens folder.
* a GroupLens folder or ``.zip`` (a top folder inside the zip, as in
  ``ml-100k.zip`` -> ``ml-100k/u.data``, is found by itself). The format is
  detected from the files present:
  - ml-100k: ``u.data`` (tab separated), ``u.item``, ``u.user`` (``|``,
    latin-1); the folds ``u1``..``u5``, ``ua``, ``ub`` read
    ``<fold>.base`` / ``<fold>.test``;
  - ml-1m: ``ratings.dat``, ``movies.dat``, ``users.dat`` (``::``, latin-1);
  - ml-10m: ``ratings.dat``, ``movies.dat`` without ``users.dat``;
  - ml-20m, ml-25m, ml-latest, ml-latest-small: ``ratings.csv`` and
    ``movies.csv`` (UTF-8 CSV with a header, genres separated by ``|``).
* a user's own interaction log described by a YAML/JSON ``data_config``; see
  `components.ingestion.custom_source` for its keys.
* span-numbered deliveries of either: a ``{SPAN}`` pattern such as
  ``/data/ml/span-{SPAN}`` (each match a complete GroupLens folder or zip)
  or ``{SPAN}`` in a data config's interactions path. `open_source` reads
  the spans a RangeConfig selects as one `MultiSpanSource` (see
  `components.ingestion.spans`).

Encodings match TFDS (and `tensorflow_datasets.structured.movielens_parsing`,
which the tests compare against): genre names map to ids of
`features.GENRE_NAMES` ("Children's" -> "Children", "unknown" -> "Unknown");
ml-100k occupations map to the labels of `features.OCCUPATION_LABELS`
(administrator -> clerical/admin, ...) while user_occupation_text keeps the
raw text; ml-1m occupation codes become their ml-1m text, K-12 and college
students get the label "student"; user_gender is 1 for "M"; ml-100k ages are
bucketized to 1, 18, 25, 35, 45, 50, 56 (raw_user_age keeps the age); ml-1m
ages are already these bucket codes.

Bad rows (a missing column, an empty id, text in a numeric column, a rating
of a movie or user that is not in the movie or user file) are reported to a
`BadRowTracker` with file and line number. With max_fraction 0 the first one
raises `IngestionError` ("u.data line 17: rating 'abc' is not a number");
otherwise rows are skipped and counted, and `BadRowTracker.check` raises once
more than that fraction of all rows read (movie, user and rating files
together) were bad.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import io
import logging
import math
import os
import posixpath
import socket
import zipfile
from typing import Dict, Iterator, List, Optional, Sequence, Tuple
from urllib import parse as urlparse

from common import features

Row = Dict[str, object]

SOURCE_FAMILIES = ("100k", "1m", "current", "custom")
TFDS_PREFIX = "tfds:"
TFDS_CONFIGS = {
    "100k-ratings": "100k",
    "1m-ratings": "1m",
    "20m-ratings": "current",
    "25m-ratings": "current",
    "latest-small-ratings": "current",
}
ML100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
PROGRESS_EVERY = 1_000_000

# ml-100k u.item genre columns, in file order, as TFDS names.
ML100K_GENRE_COLUMNS = [
    "Unknown", "Action", "Adventure", "Animation", "Children", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
# GroupLens spellings that differ from the TFDS ClassLabel names.
GENRE_ALIASES = {"Children's": "Children", "unknown": "Unknown"}
ML100K_OCCUPATIONS = {
    "administrator": "clerical/admin",
    "artist": "artist",
    "doctor": "doctor/health care",
    "educator": "academic/educator",
    "engineer": "technician/engineer",
    "entertainment": "entertainment",
    "executive": "executive/managerial",
    "healthcare": "doctor/health care",
    "homemaker": "homemaker",
    "lawyer": "lawyer",
    "librarian": "librarian",
    "marketing": "sales/marketing",
    "none": "other/not specified",
    "other": "other/not specified",
    "programmer": "programmer",
    "retired": "retired",
    "salesman": "sales/marketing",
    "scientist": "scientist",
    "student": "student",
    "technician": "technician/engineer",
    "writer": "writer",
}
# ml-1m users.dat occupation codes (index = code).
ML1M_OCCUPATIONS = [
    "other/not specified", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]
AGE_THRESHOLDS = (18, 25, 35, 45, 50, 56)
ML1M_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)


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
    """Rows read inside are neither counted nor reported (a first pass)."""
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
    value = value.decode("utf-8")
  text = str(value).strip()
  if not text:
    raise BadRow(f"{what} is empty")
  return text


def parse_int(value: object, what: str) -> int:
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, int):
    return value
  if isinstance(value, float) and value.is_integer():
    return int(value)
  text = "" if value is None else str(value).strip()
  try:
    return int(text)
  except ValueError:
    raise BadRow(f"{what} {text!r} is not an integer") from None


def parse_float(value: object, what: str) -> float:
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    number = float(value)
  else:
    text = "" if value is None else str(value).strip()
    try:
      number = float(text)
    except ValueError:
      raise BadRow(f"{what} {text!r} is not a number") from None
  if not math.isfinite(number):
    raise BadRow(f"{what} {value!r} is not a finite number")
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


def bucketize_age(age: int) -> int:
  bucket = 1
  for threshold in AGE_THRESHOLDS:
    if age >= threshold:
      bucket = threshold
    else:
      break
  return bucket


def split_fields(line: str, sep: str, layout: Sequence[str],
                 at_least: bool = False) -> List[str]:
  parts = line.split(sep)
  if len(parts) < len(layout) or (not at_least and len(parts) != len(layout)):
    raise BadRow(f"expected {len(layout)} fields separated by {sep!r} "
                 f"({sep.join(layout)}), found {len(parts)}")
  return parts


# ---------------------------------------------------------------------------
# Files of a GroupLens folder or zip.
def _is_remote(path: str) -> bool:
  return "://" in path


def _open_binary(path: str):
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.GFile(path, "rb")
  return open(path, "rb")


def _isdir(path: str) -> bool:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.isdir(path)
  return os.path.isdir(path)


def _exists(path: str) -> bool:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.exists(path)
  return os.path.exists(path)


def _listdir(path: str) -> List[str]:
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return [n.rstrip("/") for n in tf.io.gfile.listdir(path)]
  return os.listdir(path)


class DataFiles:
  """The files of a GroupLens folder or zip, below the folder holding them."""

  def __init__(self, path: str):
    self.path = path
    self._zip = None
    if path.lower().endswith(".zip") and not _isdir(path):
      if not _exists(path):
        raise IngestionError(f"{path} does not exist")
      try:
        self._zip = zipfile.ZipFile(_open_binary(path))
      except zipfile.BadZipFile as e:
        raise IngestionError(f"{path} is not a readable zip file: {e}") from None
      names = [n for n in self._zip.namelist()
               if not n.endswith("/") and not n.startswith("__MACOSX")]
      self._dirs: Dict[str, List[str]] = {}
      for name in names:
        self._dirs.setdefault(posixpath.dirname(name),
                              []).append(posixpath.basename(name))
    elif _isdir(path):
      top = _listdir(path)
      self._dirs = {"": top}
      for name in top:  # one level down: a folder holding ml-100k/ ...
        if _isdir(os.path.join(path, name)):
          self._dirs[name] = _listdir(os.path.join(path, name))
    else:
      raise IngestionError(
          f"{path!r} is neither a folder nor a .zip file (nor a "
          f"'{TFDS_PREFIX}movielens/<config>' name)")
    self.root = ""

  def find(self, *markers: str) -> bool:
    """Points root at the shallowest folder holding all markers."""
    for folder in sorted(self._dirs, key=lambda d: (d.count("/"), d)):
      if folder.count("/") > 1:
        continue
      if all(m in self._dirs[folder] for m in markers):
        self.root = folder
        return True
    return False

  def has(self, name: str) -> bool:
    return name in self._dirs.get(self.root, [])

  def display(self, name: str) -> str:
    member = posixpath.join(self.root, name) if self.root else name
    if self._zip is not None:
      return f"{self.path}:{member}"
    return os.path.join(self.path, member)

  def open(self, name: str):
    """A binary stream of one file."""
    if not self.has(name):
      raise IngestionError(f"{self.display(name)} is missing")
    if self._zip is not None:
      member = posixpath.join(self.root, name) if self.root else name
      return self._zip.open(member)
    return _open_binary(os.path.join(self.path, self.root, name))

  def lines(self, name: str, encoding: str = "ISO-8859-1"
            ) -> Iterator[Tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines.

    Spaces and line ends around a line are stripped (as TFDS does), tabs are
    kept: a leading tab is an empty first field of u.data.
    """
    with self.open(name) as f:
      for number, raw in enumerate(f, start=1):
        line = codecs.decode(raw, encoding).strip(" \r\n")
        if line.strip():
          yield number, line

  def csv_rows(self, name: str, columns: Sequence[str]
               ) -> Iterator[Tuple[int, List[str]]]:
    """(line number, [values of `columns`]) of a CSV file with a header.

    A row whose number of values differs from the header's gives None.
    """
    with self.open(name) as f:
      text = io.TextIOWrapper(f, encoding="utf-8", newline="")
      reader = csv.reader(text)
      header = next(reader, None)
      if header is None:
        return
      missing = [c for c in columns if c not in header]
      if missing:
        raise IngestionError(
            f"{self.display(name)} line 1: header has no column "
            f"{', '.join(map(repr, missing))} (header: {','.join(header)})")
      index = [header.index(c) for c in columns]
      width = len(header)
      for values in reader:
        if not values or values == [""]:
          continue
        if len(values) != width:
          yield reader.line_num, None  # the parser reports the width
          continue
        yield reader.line_num, [values[i] for i in index]

  def close(self):
    if self._zip is not None:
      self._zip.close()


# ---------------------------------------------------------------------------
# Sources.
class Source:
  """Rating rows and the movie catalogue of one data set."""

  family = "custom"
  implicit = False  # True: rows carry no user_rating (implicit feedback)
  parts: Tuple[str, ...] = ()  # named parts besides the whole (ml-100k folds)

  def __init__(self, name: str, tracker: Optional[BadRowTracker] = None):
    self.name = name
    self.tracker = tracker or BadRowTracker()

  def prepare(self) -> None:
    """Reads what ratings() joins in (movies, users); idempotent."""

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    raise NotImplementedError

  def catalogue(self) -> Iterator[Row]:
    raise NotImplementedError

  def close(self) -> None:
    pass

  def _rows(self, file: str, rows, parse, unit: str = "line"
            ) -> Iterator[Row]:
    """Applies parse to (line, raw) pairs, reporting bad rows."""
    for line, raw in rows:
      try:
        row = parse(raw)
      except BadRow as e:
        self.tracker.report(file, line, str(e), unit)
        continue
      self.tracker.ok()
      if row is not None:
        yield row


class _GroupLensSource(Source):
  """Shared code of the GroupLens readers."""

  ratings_file = ""

  def __init__(self, files: DataFiles, name: str,
               tracker: Optional[BadRowTracker] = None):
    super().__init__(name, tracker)
    self.files = files
    self.movies: Optional[Dict[str, Row]] = None
    self.users: Dict[str, Row] = {}

  def prepare(self) -> None:
    if self.movies is None:
      self.movies = {}
      self._load()

  def _load(self) -> None:
    raise NotImplementedError

  def _add_movie(self, row: Row, file: str) -> Row:
    if row["movie_id"] in self.movies:
      raise BadRow(f"movie id {row['movie_id']!r} appears twice in {file}")
    self.movies[row["movie_id"]] = row
    return row

  def _join(self, user_id: str, movie_id: str, rating: float, timestamp: int,
            movies_file: str, users_file: Optional[str]) -> Row:
    movie = self.movies.get(movie_id)
    if movie is None:
      raise BadRow(f"movie id {movie_id!r} is not in {movies_file}")
    row: Row = {"user_id": user_id, "user_rating": rating,
                "timestamp": timestamp}
    row.update(movie)
    if users_file is not None:
      user = self.users.get(user_id)
      if user is None:
        raise BadRow(f"user id {user_id!r} is not in {users_file}")
      row.update(user)
    return row

  def catalogue(self) -> Iterator[Row]:
    self.prepare()
    yield from self.movies.values()

  def close(self) -> None:
    self.files.close()


class MovieLens100K(_GroupLensSource):
  """ml-100k: u.data, u.item, u.user (and the folds u1..u5, ua, ub)."""

  family = "100k"
  parts = tuple(f"{fold}.{kind}" for fold in ML100K_FOLDS
                for kind in ("base", "test"))

  def _load(self) -> None:
    def movie(line: str) -> Row:
      fields = split_fields(line, "|", ["movie id", "title", "release date",
                                        "video release date", "IMDb URL",
                                        "19 genre flags"], at_least=True)
      flags = fields[5:]
      if len(flags) != 19 or any(f not in ("0", "1") for f in flags):
        raise BadRow(f"expected 19 genre flags (0 or 1) after 5 fields, "
                     f"found {'|'.join(flags)!r}")
      genres = [features.GENRE_ID[g]
                for g, f in zip(ML100K_GENRE_COLUMNS, flags) if f == "1"]
      return self._add_movie({
          "movie_id": parse_id(fields[0], "movie id"),
          "movie_title": fields[1], "movie_genres": genres}, "u.item")

    def user(line: str) -> None:
      fields = split_fields(line, "|", ["user id", "age", "gender",
                                        "occupation", "zip code"])
      user_id = parse_id(fields[0], "user id")
      age = parse_int(fields[1], "age")
      if fields[2] not in ("M", "F"):
        raise BadRow(f"gender {fields[2]!r} is not M or F")
      occupation = fields[3]
      if occupation not in ML100K_OCCUPATIONS:
        raise BadRow(f"occupation {occupation!r} is not one of "
                     f"{sorted(ML100K_OCCUPATIONS)}")
      if user_id in self.users:
        raise BadRow(f"user id {user_id!r} appears twice in u.user")
      self.users[user_id] = {
          "user_gender": int(fields[2] == "M"),
          "bucketized_user_age": float(bucketize_age(age)),
          "raw_user_age": float(age),
          "user_occupation_label":
              features.OCCUPATION_LABEL_ID[ML100K_OCCUPATIONS[occupation]],
          "user_occupation_text": occupation,
          "user_zip_code": fields[4],
      }

    for name, parse in (("u.item", movie), ("u.user", user)):
      for _ in self._rows(self.files.display(name), self.files.lines(name),
                          parse):
        pass

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    self.prepare()
    name = part or "u.data"
    if part is not None and part not in self.parts:
      raise IngestionError(f"{part!r} is not a part of ml-100k "
                           f"(parts: {', '.join(self.parts)})")

    def rating(line: str) -> Row:
      fields = split_fields(line, "\t", ["user id", "movie id", "rating",
                                         "timestamp"])
      return self._join(parse_id(fields[0], "user id"),
                        parse_id(fields[1], "movie id"),
                        parse_float(fields[2], "rating"),
                        parse_int(fields[3], "timestamp"), "u.item", "u.user")

    yield from self._rows(self.files.display(name), self.files.lines(name),
                          rating)


class MovieLens1M(_GroupLensSource):
  """ml-1m (ratings.dat, movies.dat, users.dat) and ml-10m (no users.dat)."""

  def __init__(self, files: DataFiles, name: str,
               tracker: Optional[BadRowTracker] = None):
    super().__init__(files, name, tracker)
    self.has_users = files.has("users.dat")
    self.family = "1m" if self.has_users else "current"

  def _load(self) -> None:
    def movie(line: str) -> Row:
      fields = split_fields(line, "::", ["movie id", "title", "genres"])
      genres = [genre_id(g) for g in fields[2].split("|") if g]
      return self._add_movie({
          "movie_id": parse_id(fields[0], "movie id"),
          "movie_title": fields[1], "movie_genres": genres}, "movies.dat")

    def user(line: str) -> None:
      fields = split_fields(line, "::", ["user id", "gender", "age",
                                         "occupation", "zip code"])
      user_id = parse_id(fields[0], "user id")
      if fields[1] not in ("M", "F"):
        raise BadRow(f"gender {fields[1]!r} is not M or F")
      age = parse_int(fields[2], "age")
      if age not in ML1M_AGE_CODES:
        raise BadRow(f"age {age} is not one of the ml-1m age codes "
                     f"{list(ML1M_AGE_CODES)}")
      code = parse_int(fields[3], "occupation")
      if not 0 <= code < len(ML1M_OCCUPATIONS):
        raise BadRow(f"occupation {code} is not a code 0..20")
      text = ML1M_OCCUPATIONS[code]
      label = "student" if text in ("K-12 student",
                                    "college/grad student") else text
      if user_id in self.users:
        raise BadRow(f"user id {user_id!r} appears twice in users.dat")
      self.users[user_id] = {
          "user_gender": int(fields[1] == "M"),
          "bucketized_user_age": float(age),
          "user_occupation_label": features.OCCUPATION_LABEL_ID[label],
          "user_occupation_text": text,
          "user_zip_code": fields[4],
      }

    files = [("movies.dat", movie)]
    if self.has_users:
      files.append(("users.dat", user))
    for name, parse in files:
      for _ in self._rows(self.files.display(name), self.files.lines(name),
                          parse):
        pass

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    if part is not None:
      raise IngestionError(f"ml-1m has no part {part!r}")
    self.prepare()
    users = "users.dat" if self.has_users else None

    def rating(line: str) -> Row:
      fields = split_fields(line, "::", ["user id", "movie id", "rating",
                                         "timestamp"])
      return self._join(parse_id(fields[0], "user id"),
                        parse_id(fields[1], "movie id"),
                        parse_float(fields[2], "rating"),
                        parse_int(fields[3], "timestamp"), "movies.dat", users)

    yield from self._rows(self.files.display("ratings.dat"),
                          self.files.lines("ratings.dat"), rating)


class MovieLensCurrent(_GroupLensSource):
  """ml-20m, ml-25m, ml-latest(-small): ratings.csv and movies.csv."""

  family = "current"

  def _load(self) -> None:
    columns = ["movieId", "title", "genres"]

    def movie(values: Optional[List[str]]) -> Row:
      if values is None:
        raise BadRow("the number of values differs from the header's "
                     f"(expected {','.join(columns)})")
      genres = [genre_id(g) for g in values[2].split("|") if g]
      return self._add_movie({
          "movie_id": parse_id(values[0], "movieId"),
          "movie_title": values[1], "movie_genres": genres}, "movies.csv")

    for _ in self._rows(self.files.display("movies.csv"),
                        self.files.csv_rows("movies.csv", columns), movie):
      pass

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    if part is not None:
      raise IngestionError(f"{self.name} has no part {part!r}")
    self.prepare()
    columns = ["userId", "movieId", "rating", "timestamp"]

    def rating(values: Optional[List[str]]) -> Row:
      if values is None:
        raise BadRow("the number of values differs from the header's "
                     f"(expected {','.join(columns)})")
      return self._join(parse_id(values[0], "userId"),
                        parse_id(values[1], "movieId"),
                        parse_float(values[2], "rating"),
                        parse_int(values[3], "timestamp"), "movies.csv", None)

    yield from self._rows(self.files.display("ratings.csv"),
                          self.files.csv_rows("ratings.csv", columns), rating)


# GroupLens formats: (files that identify it, reader).
_GROUPLENS_FORMATS = [
    (("u.data", "u.item", "u.user"), MovieLens100K),
    (("ratings.dat", "movies.dat"), MovieLens1M),
    (("ratings.csv", "movies.csv"), MovieLensCurrent),
]


def _grouplens_files(path: str) -> Tuple[DataFiles, type]:
  files = DataFiles(path)
  for markers, reader in _GROUPLENS_FORMATS:
    if files.find(*markers):
      return files, reader
  files.close()
  raise IngestionError(
      f"{path} holds no GroupLens MovieLens data: expected u.data, u.item and "
      f"u.user (ml-100k), ratings.dat and movies.dat (ml-1m, ml-10m), or "
      f"ratings.csv and movies.csv (ml-20m, ml-25m, ml-latest)")


# ---------------------------------------------------------------------------
# TFDS.
OFFLINE_HINT = ("Pass a local GroupLens MovieLens folder or .zip instead, "
                "e.g. --data ../shared/datasets/ml-100k (source=<path>), or "
                "prepare the TFDS data set where TFDS_DATA_DIR points.")


def _check_download_reachable(url: str, timeout: float = 10.0) -> None:
  """Fails fast when the download host cannot be reached.

  TFDS retries a failing download for minutes; a quick connection attempt
  tells an offline machine at once. Skipped behind an HTTP(S) proxy.
  """
  if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy",
                                     "HTTP_PROXY", "http_proxy")):
    return
  host = urlparse.urlparse(url).hostname
  if not host:
    return
  with socket.create_connection((host, 443), timeout=timeout):
    pass


def _tfds_value(name: str, value: object) -> object:
  spec = features.FEATURES[name]
  if spec.varlen:
    return [int(v) if spec.dtype == features.INT64 else v for v in value]
  if spec.dtype == features.BYTES:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
  if spec.dtype == features.FLOAT:
    return float(value)
  return int(value)


class TfdsSource(Source):
  """`tfds:movielens/<config>` read with tfds.builder(...).as_dataset."""

  def __init__(self, source: str, tracker: Optional[BadRowTracker] = None,
               data_dir: Optional[str] = None):
    super().__init__(source, tracker)
    self.config = tfds_config(source)
    self.family = TFDS_CONFIGS[self.config]
    self.data_dir = data_dir

  def _dataset(self, config: str):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    name = f"movielens/{config}"
    try:
      builder = tfds.builder(name, data_dir=self.data_dir)
      if not builder.is_prepared():
        url = getattr(builder.builder_config, "download_url", None)
        if url:
          _check_download_reachable(url)
        builder.download_and_prepare()
      dataset = builder.as_dataset(split="train")
    except Exception as e:  # pylint: disable=broad-except
      cause = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
      raise IngestionError(
          f"Could not read the TFDS data set {name} (offline? the download "
          f"failed: {type(e).__name__}{': ' + cause if cause else ''}). "
          + OFFLINE_HINT) from None
    return tfds.as_numpy(dataset)

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    if part is not None:
      raise IngestionError(f"{self.name} has no part {part!r}")
    for example in self._dataset(self.config):
      self.tracker.ok()
      yield {k: _tfds_value(k, v) for k, v in example.items()
             if k in features.FEATURES}

  def catalogue(self) -> Iterator[Row]:
    movies = self.config.replace("-ratings", "-movies")
    for example in self._dataset(movies):
      yield {k: _tfds_value(k, example[k]) for k in features.CATALOGUE_FEATURES}


def tfds_config(source: str) -> str:
  """'tfds:movielens/100k-ratings' -> '100k-ratings' (checked)."""
  name = source[len(TFDS_PREFIX):].strip()
  dataset, _, config = name.partition("/")
  if dataset != "movielens" or config not in TFDS_CONFIGS:
    raise IngestionError(
        f"Unsupported TFDS source {source!r}: expected "
        + " or ".join(f"'{TFDS_PREFIX}movielens/{c}'" for c in TFDS_CONFIGS))
  return config


# ---------------------------------------------------------------------------
# Spans.
class MultiSpanSource(Source):
  """The union of several spans, each its own (self-contained) source.

  Every rating is joined with the movie and user tables of its own span (a
  span folder is a complete GroupLens data set as of its delivery). The
  catalogue is the union of the spans' catalogues, the newest span's entry
  winning for a movie in several: every rated movie stays in the catalogue
  (the retrieval index needs it) and titles/genres are the latest known.
  """

  def __init__(self, spans: List[Tuple[int, Source]], name: str,
               tracker: BadRowTracker):
    super().__init__(name, tracker)
    self.spans = sorted(spans, key=lambda s: s[0])
    first_span, first = self.spans[0]
    for span, reader in self.spans[1:]:
      if (reader.family, reader.implicit) != (first.family, first.implicit):
        raise IngestionError(
            f"span {span} ({reader.name}) is {reader.family!r} data"
            f"{' (implicit)' if reader.implicit else ''} but span "
            f"{first_span} ({first.name}) is {first.family!r}"
            f"{' (implicit)' if first.implicit else ''}; every span of one "
            f"pattern must have the same format")
    self.family = first.family
    self.implicit = first.implicit

  def prepare(self) -> None:
    for _, reader in self.spans:
      reader.prepare()

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    if part is not None:
      raise IngestionError(f"{self.name} has no part {part!r} (parts such as "
                           f"ml-100k folds need one folder, not spans)")
    for span, reader in self.spans:
      logging.info("Reading span %d: %s", span, reader.name)
      yield from reader.ratings()

  def catalogue(self) -> Iterator[Row]:
    movies: Dict[str, Row] = {}
    for _, reader in self.spans:
      for movie in reader.catalogue():
        movies.pop(movie["movie_id"], None)  # newest last, in newest order
        movies[movie["movie_id"]] = movie
    yield from movies.values()

  def close(self) -> None:
    for _, reader in self.spans:
      reader.close()


def _open_one(source: str, data_config: str, tracker: BadRowTracker,
              tfds_data_dir: Optional[str], span: Optional[int] = None
              ) -> Source:
  if data_config:
    from components.ingestion import custom_source  # pylint: disable=g-import-not-at-top
    return custom_source.CustomSource(data_config, tracker, span=span)
  if source.startswith(TFDS_PREFIX):
    return TfdsSource(source, tracker, tfds_data_dir)
  files, reader = _grouplens_files(source)
  return reader(files, source, tracker)


def open_spans(selection, spans: Sequence[int], data_config: str = "",
               tracker: Optional[BadRowTracker] = None) -> Source:
  """One reader over `spans` of a `spans.SpanSelection` (union of ratings)."""
  tracker = tracker or BadRowTracker()
  readers: List[Tuple[int, Source]] = []
  try:
    for span in spans:
      readers.append((span, _open_one(
          "" if data_config else selection.path(span), data_config, tracker,
          None, span)))
  except Exception:
    for _, reader in readers:
      reader.close()
    raise
  names = ", ".join(str(s) for s in spans)
  return MultiSpanSource(readers, f"{selection.pattern} (span {names})",
                         tracker)


# ---------------------------------------------------------------------------
# Entry points.
def _check_source_args(source: str, data_config: str) -> None:
  if source and data_config:
    raise IngestionError(
        f"Give either source ({source!r}) or data_config ({data_config!r}), "
        f"not both")
  if not source and not data_config:
    raise IngestionError("No data: give source (a 'tfds:movielens/<config>' "
                         "name or a GroupLens folder/.zip) or data_config")
  if source.startswith(TFDS_PREFIX) and "{SPAN" in source:
    raise IngestionError(f"{source!r}: TFDS sources have no spans; {{SPAN}} "
                         f"patterns are for GroupLens folders/zips and data "
                         f"configs")


def open_source(source: str = "", data_config: str = "",
                tracker: Optional[BadRowTracker] = None,
                tfds_data_dir: Optional[str] = None,
                range_config=None) -> Source:
  """The reader of `source` (a TFDS name or GroupLens path) or data_config.

  A ``{SPAN}`` pattern (in source or in the data config's interactions
  path) reads the spans `range_config` selects (components/ingestion/spans.py)
  as one source.
  """
  from components.ingestion import spans  # pylint: disable=g-import-not-at-top
  source = (source or "").strip()
  data_config = (data_config or "").strip()
  _check_source_args(source, data_config)
  tracker = tracker or BadRowTracker()
  pattern = spans.source_pattern(source, data_config)
  if pattern:
    selection = spans.resolve(pattern, range_config)
    return open_spans(selection, selection.spans, data_config, tracker)
  if spans.parse_range_config(range_config) is not None:
    raise IngestionError(
        f"range_config is set but {source or data_config} has no {{SPAN}} "
        f"pattern to select spans from")
  return _open_one(source, data_config, tracker, tfds_data_dir)


def detect_source_family(source: str = "", data_config: str = "") -> str:
  """'100k', '1m', 'current' or 'custom', from names and file lists only.

  For a ``{SPAN}`` pattern, the newest span's files tell.
  """
  source = (source or "").strip()
  if (data_config or "").strip():
    return "custom"
  if source.startswith(TFDS_PREFIX):
    return TFDS_CONFIGS[tfds_config(source)]
  if "{SPAN" in source:
    from components.ingestion import spans  # pylint: disable=g-import-not-at-top
    found = spans.find_spans(source)
    source = found[max(found)]
  files, reader = _grouplens_files(source)
  try:
    if reader is MovieLens1M:
      return "1m" if files.has("users.dat") else "current"
    return reader.family
  finally:
    files.close()
