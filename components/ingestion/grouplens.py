"""Readers of GroupLens MovieLens folders and zips (ml-100k ... ml-latest).

A GroupLens folder or ``.zip`` (a top folder inside the zip, as in
``ml-100k.zip`` -> ``ml-100k/u.data``, is found by itself); the format is
detected from the files present (`FORMATS`):

* ml-100k: ``u.data`` (tab separated), ``u.item``, ``u.user`` (``|``); the
  folds ``u1``..``u5``, ``ua``, ``ub`` read ``<fold>.base`` /
  ``<fold>.test``;
* ml-1m: ``ratings.dat``, ``movies.dat``, ``users.dat`` (``::``);
* ml-10m: ``ratings.dat``, ``movies.dat`` without ``users.dat``;
* ml-20m, ml-25m, ml-latest, ml-latest-small: ``ratings.csv`` and
  ``movies.csv`` (UTF-8 CSV with a header, genres separated by ``|``).

GroupLens ships the ``|`` and ``::`` files in latin-1; the movie and user
files are read in the encoding `files.detect_encoding` finds (UTF-8 for a
re-saved copy), so titles are never silently garbled. Rating files hold
only numbers and are read as latin-1 without that extra pass: a non-ASCII
byte there is a bad row in either encoding.

Encodings match TFDS (and `tensorflow_datasets.structured.movielens_parsing`,
which the tests compare against): genre names map to ids of
`features.GENRE_NAMES` ("Children's" -> "Children", "unknown" -> "Unknown");
ml-100k occupations map to the labels of `features.OCCUPATION_LABELS`
(administrator -> clerical/admin, ...) while user_occupation_text keeps the
raw text; ml-1m occupation codes become their ml-1m text, K-12 and college
students get the label "student"; user_gender is 1 for "M"; ml-100k ages are
bucketized to 1, 18, 25, 35, 45, 50, 56 (raw_user_age keeps the age); ml-1m
ages are already these bucket codes.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

from common import features
from components.ingestion.base import (BadRow, BadRowTracker, IngestionError,
                                       Row, Source, genre_id, parse_float,
                                       parse_id, parse_int, split_fields)
from components.ingestion.files import LATIN_1, DataFiles

ML100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
# ml-100k u.item genre columns, in file order, as TFDS names.
ML100K_GENRE_COLUMNS = [
    "Unknown", "Action", "Adventure", "Animation", "Children", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
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
# ml-1m's users.dat age codes are the buckets themselves; ml-100k's ages are
# bucketized like TFDS does (features.bucketize_age).
ML1M_AGE_CODES = features.AGE_BUCKETS
bucketize_age = features.bucketize_age


class _GroupLensSource(Source):
  """Shared code of the GroupLens readers."""

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

  def _read_all(self, name: str, parse, encoding: Optional[str] = None
                ) -> None:
    """Parses every line of a movie or user file (encoding: detected)."""
    for _ in self._rows(self.files.display(name),
                        self.files.lines(name, encoding), parse):
      pass

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

    self._read_all("u.item", movie)
    self._read_all("u.user", user)

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

    yield from self._rows(self.files.display(name),
                          self.files.lines(name, LATIN_1), rating)


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

    self._read_all("movies.dat", movie)
    if self.has_users:
      self._read_all("users.dat", user)

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
                          self.files.lines("ratings.dat", LATIN_1), rating)


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
FORMATS = [
    (("u.data", "u.item", "u.user"), MovieLens100K),
    (("ratings.dat", "movies.dat"), MovieLens1M),
    (("ratings.csv", "movies.csv"), MovieLensCurrent),
]


def find_format(path: str) -> Tuple[DataFiles, type]:
  """The files of a GroupLens folder or zip and the reader of its format."""
  files = DataFiles(path)
  for markers, reader in FORMATS:
    if files.find(*markers):
      return files, reader
  files.close()
  raise IngestionError(
      f"{path} holds no GroupLens MovieLens data: expected u.data, u.item and "
      f"u.user (ml-100k), ratings.dat and movies.dat (ml-1m, ml-10m), or "
      f"ratings.csv and movies.csv (ml-20m, ml-25m, ml-latest)")


def open_grouplens(path: str, tracker: Optional[BadRowTracker] = None
                   ) -> _GroupLensSource:
  files, reader = find_format(path)
  return reader(files, path, tracker)


def family_of(path: str) -> str:
  """'100k', '1m' or 'current' from the file list alone (no parsing)."""
  files, reader = find_format(path)
  try:
    if reader is MovieLens1M:
      return "1m" if files.has("users.dat") else "current"
    return reader.family
  finally:
    files.close()
