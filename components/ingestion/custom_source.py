"""A user's own interaction log, described by a YAML (or JSON) data_config.

Example (also in examples/data_config.example.yaml); paths are relative to
the config file; custom_config.py holds the strict model that checks it:

```yaml
interactions:                # required: one row per interaction
  path: events.csv           # .csv or .parquet
  format: csv                # csv | parquet (default: from the extension)
  delimiter: ","             # csv only (default ",")
  encoding: utf-8            # csv only (default utf-8)
  columns:
    user: user_id            # required
    item: item_id            # required
    rating: stars            # required unless implicit: true
    timestamp: ts            # optional; needed by split: time
  timestamp_unit: s          # s | ms | us | ns | iso  (default s)
  user_features:             # optional: contract name -> column of this file
    user_gender: gender
implicit: false              # true: no rating column; see below
duplicates: keep_newest      # keep_newest (default) | error; see below
users:                       # optional table of user features
  path: users.parquet
  format: parquet
  id: user_id                # the user id column
  features:                  # contract name -> column
    raw_user_age: age
    user_occupation_text: job
items:                       # optional item catalogue
  path: items.csv
  format: csv
  columns:
    item: item_id            # required
    title: name              # optional (default: the item id)
    genres: genres           # optional
  genre_separator: "|"       # default "|"
  genre_aliases:             # optional: your genre name -> contract name
    Science Fiction: Sci-Fi
  unknown_genres: error      # error (default) | drop
```

Items are written with the contract's movie names: movie_id, movie_title,
movie_genres; users with user_id and the user features named in the config
(any of user_gender, bucketized_user_age, raw_user_age,
user_occupation_label, user_occupation_text, user_zip_code). Values are
converted to the contract's encodings: user_gender accepts M/F, male/female,
1/0, true/false (1 = male); user_occupation_label accepts a label of
`features.OCCUPATION_LABELS` or its id. A missing (empty/null) user feature
value leaves that feature out of that row.

Decisions:

* Implicit feedback (``implicit: true``): rows carry no user_rating at all
  (no made-up 1.0); the examples artifact gets the custom property
  ``implicit = 1`` so trainers know there is no rating label.
* Duplicates: several interactions of one (user, item) pair are reported
  (count and the first ones with file and line); ``duplicates:
  keep_newest`` keeps the one with the latest timestamp (the later row on a
  tie or without timestamps) with a warning, ``duplicates: error`` stops
  (components/ingestion/duplicates.py).
* Genres: ``movie_genres`` are ids into the fixed TFDS vocabulary
  `features.GENRE_NAMES` (the contract shares it with every source). Names are
  matched case-insensitively, after ``genre_aliases`` and the GroupLens
  spellings ("Children's", "unknown"). Names that still match nothing make
  ingestion fail with an error listing all of them (``unknown_genres:
  error``), or are dropped with a warning (``unknown_genres: drop``).
* Catalogue: with an ``items`` file, the catalogue is every item of it, and
  an interaction with an item not in it is a bad row. Without one, the
  catalogue is the set of items seen in the log, each titled by its id and
  without genres.
* Timestamps: integers in timestamp_unit since the epoch (converted to
  seconds), ISO-8601 strings (unit ``iso``, naive times are UTC), or Parquet
  timestamp columns. Without a timestamp column rows carry no timestamp and
  only split: random is possible.
* Parquet column types are checked before reading: a rating column must be
  numeric, a timestamp column numeric, a timestamp or date (or text with
  unit ``iso``); a string-typed rating column is an error naming the file,
  the column and its Arrow type, never silently parsed.
* A user of the log missing from the users table gets no user features.
* Spans: ``interactions.path`` may hold TFX's ``{SPAN}`` placeholder
  (``events/span-{SPAN}.csv``); components/ingestion/spans.py selects the
  spans to read. ``users.path`` / ``items.path`` may hold it too: each span's
  interactions then join that span's own tables; without it one table serves
  every span.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
from typing import Dict, Iterator, List, Optional, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from common import features
from components.ingestion import custom_config
from components.ingestion import files
from components.ingestion import spans
from components.ingestion.base import (GENRE_ALIASES, INT64_MAX, INT64_MIN,
                                       BadRow, BadRowTracker, IngestionError,
                                       Row, Source, check_int64, parse_float,
                                       parse_id, parse_int)

_UNIT_SECONDS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000,
                 "iso": 1}  # iso: numbers are seconds
# A user log may also spell gender as 1/0 or true/false (1 = male).
_GENDERS = dict(features.GENDER_CODES, **{"1": 1, "true": 1, "0": 0, "false": 0})
_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
            ".pq": "parquet"}


def load_config(path: str) -> dict:
  """The checked data config as a plain dict (every key, defaults filled).

  `custom_config.read_config` gives the typed model; this dict form serves
  callers that look keys up (pipeline.is_implicit).
  """
  return custom_config.read_config(path).model_dump()


def _resolve(config_path: str, path: str) -> str:
  if os.path.isabs(path) or "://" in path:
    return path
  return os.path.join(os.path.dirname(config_path), path)


def span_pattern(config_path: str) -> str:
  """The interactions path when it holds ``{SPAN}`` (resolved), else ""."""
  config = custom_config.read_config(config_path)
  path = _resolve(config_path, config.interactions.path)
  for key, section in (("users", config.users), ("items", config.items)):
    if (section is not None and spans.has_span(section.path)
        and not spans.has_span(path)):
      raise IngestionError(
          f"data_config {config_path}: {key}.path has {{SPAN}} but "
          f"interactions.path ({path}) does not; spans are defined by the "
          f"interactions file")
  return path if spans.has_span(path) else ""


# ---------------------------------------------------------------------------
# Tables.
def _arrow_kind(arrow_type) -> str:
  if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
    return "number"
  if pa.types.is_decimal(arrow_type):
    return "number"
  if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
    return "time"
  if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
    return "text"
  return str(arrow_type)


class _Table:
  """A CSV or Parquet file, streamed as (row number, {column: value})."""

  def __init__(self, config_path: str, section: custom_config.Table,
               what: str, span: Optional[int] = None):
    self.path = _resolve(config_path, section.path)
    if spans.has_span(self.path):
      if span is None:
        raise IngestionError(
            f"data_config {config_path}: {what} path {self.path} has {{SPAN}}; "
            f"read it through a span selection (source pattern) instead")
      self.path = spans.fill(self.path, span)
    self.display = self.path
    fmt = section.format or _FORMATS.get(
        os.path.splitext(self.path)[1].lower())
    if fmt is None:
      raise IngestionError(f"data_config {config_path}: cannot tell the "
                           f"format of {what} file {self.path}; set "
                           f"format: csv or parquet")
    self.format = fmt
    self.unit = "line" if fmt == "csv" else "row"
    default_sep = "\t" if self.path.lower().endswith(".tsv") else ","
    self.delimiter = section.delimiter or default_sep
    self.encoding = section.encoding or files.UTF_8
    if not files.exists(self.path):
      raise IngestionError(f"{what} file {self.path} does not exist "
                           f"(paths are relative to {config_path})")

  def rows(self, columns: List[str],
           expected: Optional[Dict[str, Tuple[str, Tuple[str, ...]]]] = None
           ) -> Iterator[Tuple[int, Optional[Dict[str, object]]]]:
    """Yields (line or row number, values of `columns`; None: bad width).

    expected: column -> (what it holds, the Arrow kinds allowed: "number",
    "time", "text"), checked against a Parquet file's schema.
    """
    columns = list(dict.fromkeys(columns))
    if self.format == "csv":
      for line, values in files.csv_rows(
          lambda: files.open_binary(self.path), self.display, columns,
          self.delimiter, self.encoding):
        yield line, None if values is None else dict(zip(columns, values))
    else:
      yield from self._parquet_rows(columns, expected or {})

  def _parquet_rows(self, columns, expected):
    with files.open_binary(self.path) as f:
      try:
        parquet = pq.ParquetFile(f)
      except Exception as e:  # pylint: disable=broad-except
        raise IngestionError(
            f"{self.display} is not a readable Parquet file "
            f"({type(e).__name__}: {str(e).strip()[:200]}); set format: csv "
            f"if it is a CSV file") from None
      schema = parquet.schema_arrow
      missing = [c for c in columns if c not in schema.names]
      if missing:
        raise IngestionError(
            f"{self.display} has no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(schema.names)})")
      for column, (what, kinds) in expected.items():
        arrow_type = schema.field(column).type
        if _arrow_kind(arrow_type) not in kinds:
          raise IngestionError(
              f"{self.display}: column {column!r} ({what}) has the Arrow type "
              f"{arrow_type}; expected {_describe_kinds(kinds)}. Convert the "
              f"column before writing the file (e.g. pandas.to_numeric)")
      number = 0
      batches = parquet.iter_batches(batch_size=65536, columns=columns)
      while True:
        try:
          batch = next(batches, None)
        except Exception as e:  # pylint: disable=broad-except  (corrupt pages)
          raise IngestionError(
              f"{self.display} row {number + 1} onwards cannot be read "
              f"({type(e).__name__}: {str(e).strip()[:200]})") from None
        if batch is None:
          return
        values = []
        for column in columns:
          try:
            values.append(batch.column(column).to_pylist())
          except Exception as e:  # pylint: disable=broad-except
            raise IngestionError(
                f"{self.display} rows {number + 1}-{number + batch.num_rows}, "
                f"column {column!r}: a value cannot be converted "
                f"({type(e).__name__}: {str(e).strip()[:200]})") from None
        for row in zip(*values):
          number += 1
          yield number, dict(zip(columns, row))


def _describe_kinds(kinds) -> str:
  names = {"number": "a number (integer or floating point)",
           "time": "a timestamp or date", "text": "ISO-8601 text"}
  return " or ".join(names[k] for k in kinds)


# ---------------------------------------------------------------------------
# Values.
def _missing(value: object) -> bool:
  if value is None:
    return True
  if isinstance(value, float) and value != value:  # NaN
    return True
  return isinstance(value, str) and not value.strip()


def _convert_user_feature(name: str, column: str, value: object) -> object:
  """A user feature value in the contract's encoding (None: missing)."""
  if _missing(value):
    return None
  what = name if name == column else f"{name} ({column})"
  if name == features.USER_GENDER:
    if isinstance(value, float) and not value.is_integer():
      raise BadRow(f"{what} {value!r} is not one of M/F, male/female, 1/0")
    key = str(int(value) if isinstance(value, (bool, float)) else value)
    gender = _GENDERS.get(key.strip().lower())
    if gender is None:
      raise BadRow(f"{what} {value!r} is not one of M/F, male/female, 1/0")
    return gender
  if name == features.USER_OCCUPATION_LABEL:
    if isinstance(value, str) and value.strip() in features.OCCUPATION_LABEL_ID:
      return features.OCCUPATION_LABEL_ID[value.strip()]
    label = parse_int(value, what)
    if not 0 <= label < len(features.OCCUPATION_LABELS):
      raise BadRow(f"{what} {value!r} is neither an occupation label nor an "
                   f"id 0..{len(features.OCCUPATION_LABELS) - 1}")
    return label
  dtype = features.FEATURES[name].dtype
  if dtype == features.FLOAT:
    return parse_float(value, what)
  if dtype == features.INT64:
    return parse_int(value, what)
  return parse_id(value, what)


def _timestamp(value: object, unit: str, what: str = "timestamp") -> int:
  """Seconds since the epoch (an int64) of one timestamp value."""
  if _missing(value):
    raise BadRow(f"{what} is missing")
  if isinstance(value, datetime.datetime):
    if value.tzinfo is None:
      value = value.replace(tzinfo=datetime.timezone.utc)
    return check_int64(int(value.timestamp()), what)
  if isinstance(value, datetime.date):
    return int(datetime.datetime(value.year, value.month, value.day,
                                 tzinfo=datetime.timezone.utc).timestamp())
  if unit == "iso" and isinstance(value, str):
    text = value.strip().replace("Z", "+00:00")
    try:
      parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
      raise BadRow(f"{what} {value!r} is not an ISO-8601 time") from None
    return _timestamp(parsed, unit, what)
  divisor = _UNIT_SECONDS[unit]
  if isinstance(value, bool):
    raise BadRow(f"{what} {value!r} is not a number")
  if isinstance(value, int):
    seconds = value // divisor
  else:
    text = value if isinstance(value, float) else str(value).strip()
    try:  # integers exactly (ns timestamps exceed a float's precision)
      seconds = int(text) // divisor
    except ValueError:
      try:
        number = float(text)
      except ValueError:
        raise BadRow(f"{what} {text!r} is not a number") from None
      if not math.isfinite(number):
        raise BadRow(f"{what} {value!r} is not a finite number")
      seconds = int(number // divisor)
  if not INT64_MIN <= seconds <= INT64_MAX:
    raise BadRow(f"{what} {value} is out of the int64 range of seconds "
                 f"since 1970 a tf.Example holds")
  return seconds


# ---------------------------------------------------------------------------
# The source.
class CustomSource(Source):
  """Interactions of a data_config; see the module docstring."""

  family = "custom"

  def __init__(self, config_path: str,
               tracker: Optional[BadRowTracker] = None,
               span: Optional[int] = None):
    name = f"data_config:{config_path}"
    super().__init__(name if span is None else f"{name} span {span}", tracker)
    self.config_path = config_path
    self.span = span  # fills {SPAN} in the table paths (spans.py)
    config = custom_config.read_config(config_path)
    self.config = config
    self.implicit = config.implicit
    self.duplicates = config.duplicates
    inter = config.interactions
    self.table = _Table(config_path, inter, "interactions", span)
    cols = inter.columns
    self.columns = {k: v for k, v in cols.model_dump().items()
                    if v and not (k == "rating" and self.implicit)}
    self.timestamp_unit = inter.timestamp_unit
    self.has_timestamp = "timestamp" in self.columns
    self.user_features = dict(inter.user_features)
    self.users_section = config.users
    self.items_section = config.items
    self.movies: Optional[Dict[str, Row]] = None
    self.users: Dict[str, Row] = {}
    self.seen: Dict[str, None] = {}
    self.items_file = ""  # the items file read (its {SPAN} filled), for errors

  # -- users and items ------------------------------------------------------
  def prepare(self) -> None:
    if self.movies is not None:
      return
    self.movies = {}
    if self.users_section:
      self._load_users()
    if self.items_section:
      self._load_items()

  def _load_users(self) -> None:
    section = self.users_section
    table = _Table(self.config_path, section, "users", self.span)
    id_column = section.id
    mapping = dict(section.features)

    def user(values) -> None:
      if values is None:
        raise BadRow("the number of values differs from the header's")
      user_id = parse_id(values[id_column], f"user id ({id_column})")
      if user_id in self.users:
        raise BadRow(f"user id {user_id!r} appears twice")
      self.users[user_id] = {
          name: _convert_user_feature(name, column, values[column])
          for name, column in mapping.items()}

    for _ in self._rows(table.display,
                        table.rows([id_column] + list(mapping.values())),
                        user, table.unit):
      pass

  def _load_items(self) -> None:
    section = self.items_section
    table = _Table(self.config_path, section, "items", self.span)
    self.items_file = table.display
    separator = section.genre_separator
    policy = section.unknown_genres
    by_lower = {n.lower(): i for i, n in enumerate(features.GENRE_NAMES)}
    for alias, target in GENRE_ALIASES.items():
      by_lower.setdefault(alias.lower(), features.GENRE_ID[target])
    for alias, target in section.genre_aliases.items():
      by_lower[alias.strip().lower()] = features.GENRE_ID[target]
    unknown_genres: Dict[str, int] = {}
    item_col = section.columns.item
    title_col = section.columns.title
    genres_col = section.columns.genres

    def item(values) -> None:
      if values is None:
        raise BadRow("the number of values differs from the header's")
      item_id = parse_id(values[item_col], f"item id ({item_col})")
      if item_id in self.movies:
        raise BadRow(f"item id {item_id!r} appears twice")
      title = item_id
      if title_col and not _missing(values[title_col]):
        title = str(values[title_col])
      row: Row = {"movie_id": item_id, "movie_title": title}
      if genres_col:
        raw = values[genres_col]
        names = [] if _missing(raw) else (
            list(raw) if isinstance(raw, (list, tuple)) else
            str(raw).split(separator))
        ids = []
        for name in (str(n).strip() for n in names):
          if not name:
            continue
          gid = by_lower.get(name.lower())
          if gid is None:
            unknown_genres[name] = unknown_genres.get(name, 0) + 1
          elif gid not in ids:
            ids.append(gid)
        row["movie_genres"] = ids
      self.movies[item_id] = row

    columns = [c for c in (item_col, title_col, genres_col) if c]
    for _ in self._rows(table.display, table.rows(columns), item, table.unit):
      pass
    if unknown_genres:
      listing = ", ".join(f"{n!r} ({c} items)" for n, c in
                          sorted(unknown_genres.items())[:30])
      if policy == "error":
        raise IngestionError(
            f"{table.display}: genre names not in the contract's genre list "
            f"{features.GENRE_NAMES}: {listing}. Map them with "
            f"items.genre_aliases or set items.unknown_genres: drop")
      logging.warning("Dropped genre names not in the contract's list: %s",
                      listing)

  # -- interactions ---------------------------------------------------------
  def _expected_types(self):
    """Arrow kinds of the rating and timestamp columns (Parquet only)."""
    expected = {}
    if "rating" in self.columns:
      expected[self.columns["rating"]] = ("rating", ("number",))
    if self.has_timestamp:
      kinds = ("number", "time") + (
          ("text",) if self.timestamp_unit == "iso" else ())
      expected[self.columns["timestamp"]] = (
          f"timestamp, unit {self.timestamp_unit}", kinds)
    return expected

  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    if part is not None:
      raise IngestionError(f"{self.name} has no part {part!r}")
    self.prepare()
    cols = self.columns
    catalogue = self.movies if self.items_section else None
    items_file = self.items_file
    user_what = f"user id ({cols['user']})"
    item_what = f"item id ({cols['item']})"
    rating_what = f"rating ({cols.get('rating')})"
    timestamp_what = f"timestamp ({cols.get('timestamp')})"

    def interaction(values) -> Row:
      if values is None:
        raise BadRow("the number of values differs from the header's")
      user_id = parse_id(values[cols["user"]], user_what)
      item_id = parse_id(values[cols["item"]], item_what)
      row: Row = {"user_id": user_id}
      if catalogue is not None:
        movie = catalogue.get(item_id)
        if movie is None:
          raise BadRow(f"item id {item_id!r} is not in {items_file}")
        row.update(movie)
      else:
        row.update(movie_id=item_id, movie_title=item_id)
      if not self.implicit:
        row["user_rating"] = parse_float(values[cols["rating"]], rating_what)
      if self.has_timestamp:
        row["timestamp"] = _timestamp(values[cols["timestamp"]],
                                      self.timestamp_unit, timestamp_what)
      row.update(self.users.get(user_id, {}))
      for name, column in self.user_features.items():
        row[name] = _convert_user_feature(name, column, values[column])
      if catalogue is None:
        self.seen.setdefault(item_id)
      return row

    columns = list(cols.values()) + list(self.user_features.values())
    yield from self._rows(self.table.display,
                          self.table.rows(columns, self._expected_types()),
                          interaction, self.table.unit)

  def catalogue(self) -> Iterator[Row]:
    """Items of the items file, or else the items seen by ratings()."""
    self.prepare()
    if self.items_section:
      yield from self.movies.values()
    else:
      for item_id in self.seen:
        yield {"movie_id": item_id, "movie_title": item_id}
