"""A user's own interaction log, described by a YAML (or JSON) data_config.

Example (also in examples/data_config.example.yaml); paths are relative to
the config file:

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
* A user of the log missing from the users table gets no user features.
* Spans: ``interactions.path`` may hold TFX's ``{SPAN}`` placeholder
  (``events/span-{SPAN}.csv``); components/ingestion/spans.py selects the
  spans to read. ``users.path`` / ``items.path`` may hold it too: each span's
  interactions then join that span's own tables; without it one table serves
  every span.
"""
from __future__ import annotations

import csv
import datetime
import logging
import os
from typing import Dict, Iterator, List, Optional, Tuple

from common import features
from components.ingestion import sources
from components.ingestion.sources import (BadRow, BadRowTracker,
                                          IngestionError, Row)

_TOP_KEYS = {"interactions", "implicit", "users", "items"}
_TABLE_KEYS = {"path", "format", "delimiter", "encoding"}
_INTERACTION_KEYS = _TABLE_KEYS | {"columns", "timestamp_unit",
                                   "user_features"}
_USERS_KEYS = _TABLE_KEYS | {"id", "features"}
_ITEMS_KEYS = _TABLE_KEYS | {"columns", "genre_separator", "genre_aliases",
                             "unknown_genres"}
_UNIT_SECONDS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_USER_FEATURE_NAMES = [n for n in features.USER_FEATURES
                       if n != features.USER_ID]
_GENDERS = {"m": 1, "male": 1, "1": 1, "true": 1,
            "f": 0, "female": 0, "0": 0, "false": 0}


def load_config(path: str) -> dict:
  """Reads and checks a data_config file (YAML or JSON)."""
  import yaml  # pylint: disable=g-import-not-at-top
  if not sources._exists(path):  # pylint: disable=protected-access
    raise IngestionError(f"data_config {path} does not exist")
  with sources._open_binary(path) as f:  # pylint: disable=protected-access
    try:
      config = yaml.safe_load(f.read().decode("utf-8"))
    except yaml.YAMLError as e:
      raise IngestionError(f"data_config {path} is not valid YAML/JSON: "
                           f"{e}") from None
  if not isinstance(config, dict):
    raise IngestionError(f"data_config {path} must be a mapping with an "
                         f"'interactions' key")
  _check_keys(config, _TOP_KEYS, path, "")
  if "interactions" not in config:
    raise IngestionError(f"data_config {path}: 'interactions' is missing")
  _check_keys(config["interactions"], _INTERACTION_KEYS, path,
              "interactions.")
  for key, allowed in (("users", _USERS_KEYS), ("items", _ITEMS_KEYS)):
    if config.get(key) is not None:
      _check_keys(config[key], allowed, path, key + ".")
  return config


def _check_keys(section, allowed, path, prefix) -> None:
  if not isinstance(section, dict):
    raise IngestionError(f"data_config {path}: {prefix.rstrip('.')} must be "
                         f"a mapping")
  unknown = sorted(set(section) - set(allowed))
  if unknown:
    raise IngestionError(
        f"data_config {path}: unknown key(s) "
        f"{', '.join(prefix + k for k in unknown)} "
        f"(allowed: {', '.join(prefix + k for k in sorted(allowed))})")
  if "path" in allowed and not section.get("path"):
    raise IngestionError(f"data_config {path}: {prefix}path is missing")


def _resolve(config_path: str, path: str) -> str:
  if os.path.isabs(path) or "://" in path:
    return path
  return os.path.join(os.path.dirname(config_path), path)


def span_pattern(config_path: str) -> str:
  """The interactions path when it holds ``{SPAN}`` (resolved), else ""."""
  from components.ingestion import spans  # pylint: disable=g-import-not-at-top
  config = load_config(config_path)
  path = _resolve(config_path, str(config["interactions"]["path"]))
  for key in ("users", "items"):
    section = config.get(key) or {}
    if spans.has_span(str(section.get("path", ""))) and not spans.has_span(path):
      raise IngestionError(
          f"data_config {config_path}: {key}.path has {{SPAN}} but "
          f"interactions.path ({path}) does not; spans are defined by the "
          f"interactions file")
  return path if spans.has_span(path) else ""


class _Table:
  """A CSV or Parquet file, streamed as (row number, {column: value})."""

  def __init__(self, config_path: str, section: dict, what: str,
               span: Optional[int] = None):
    from components.ingestion import spans  # pylint: disable=g-import-not-at-top
    self.path = _resolve(config_path, str(section["path"]))
    if spans.has_span(self.path):
      if span is None:
        raise IngestionError(
            f"data_config {config_path}: {what} path {self.path} has {{SPAN}}; "
            f"read it through a span selection (source pattern) instead")
      self.path = spans.fill(self.path, span)
    self.display = self.path
    fmt = section.get("format")
    if not fmt:
      ext = os.path.splitext(self.path)[1].lower()
      fmt = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
             ".pq": "parquet"}.get(ext)
      if fmt is None:
        raise IngestionError(f"data_config {config_path}: cannot tell the "
                             f"format of {what} file {self.path}; set "
                             f"format: csv or parquet")
    if fmt not in ("csv", "parquet"):
      raise IngestionError(f"data_config {config_path}: {what} format "
                           f"{fmt!r} is not csv or parquet")
    self.format = fmt
    self.unit = "line" if fmt == "csv" else "row"
    default_sep = "\t" if self.path.lower().endswith(".tsv") else ","
    self.delimiter = section.get("delimiter") or default_sep
    self.encoding = section.get("encoding") or "utf-8"
    if not sources._exists(self.path):  # pylint: disable=protected-access
      raise IngestionError(f"{what} file {self.path} does not exist "
                           f"(paths are relative to {config_path})")

  def rows(self, columns: List[str]
           ) -> Iterator[Tuple[int, Optional[Dict[str, object]]]]:
    """Yields (line or row number, values of `columns`; None: bad width)."""
    if self.format == "csv":
      yield from self._csv_rows(columns)
    else:
      yield from self._parquet_rows(columns)

  def _missing(self, header: List[str], columns: List[str]) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
      raise IngestionError(
          f"{self.display} has no column {', '.join(map(repr, missing))} "
          f"(columns: {', '.join(header)})")

  def _csv_rows(self, columns):
    with sources._open_binary(self.path) as raw:  # pylint: disable=protected-access
      import io  # pylint: disable=g-import-not-at-top
      text = io.TextIOWrapper(raw, encoding=self.encoding, newline="")
      reader = csv.reader(text, delimiter=self.delimiter)
      header = next(reader, None)
      if header is None:
        return
      header = [h.strip() for h in header]
      self._missing(header, columns)
      index = {c: header.index(c) for c in columns}
      for values in reader:
        if not values or values == [""]:
          continue
        if len(values) != len(header):
          yield reader.line_num, None
          continue
        yield reader.line_num, {c: values[i] for c, i in index.items()}

  def _parquet_rows(self, columns):
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    with sources._open_binary(self.path) as f:  # pylint: disable=protected-access
      parquet = pq.ParquetFile(f)
      self._missing(parquet.schema_arrow.names, columns)
      number = 0
      for batch in parquet.iter_batches(batch_size=65536,
                                        columns=list(dict.fromkeys(columns))):
        for values in batch.to_pylist():
          number += 1
          yield number, values


def _missing(value: object) -> bool:
  if value is None:
    return True
  if isinstance(value, float) and value != value:  # NaN
    return True
  return isinstance(value, str) and not value.strip()


def _convert_user_feature(name: str, value: object) -> object:
  """A user feature value in the contract's encoding (None: missing)."""
  if _missing(value):
    return None
  if name == features.USER_GENDER:
    key = str(int(value) if isinstance(value, (bool, float)) else value)
    gender = _GENDERS.get(key.strip().lower())
    if gender is None:
      raise BadRow(f"{name} {value!r} is not one of M/F, male/female, 1/0")
    return gender
  if name == features.USER_OCCUPATION_LABEL:
    if isinstance(value, str) and value.strip() in features.OCCUPATION_LABEL_ID:
      return features.OCCUPATION_LABEL_ID[value.strip()]
    label = sources.parse_int(value, name)
    if not 0 <= label < len(features.OCCUPATION_LABELS):
      raise BadRow(f"{name} {value!r} is neither an occupation label nor an "
                   f"id 0..{len(features.OCCUPATION_LABELS) - 1}")
    return label
  dtype = features.FEATURES[name].dtype
  if dtype == features.FLOAT:
    return sources.parse_float(value, name)
  if dtype == features.INT64:
    return sources.parse_int(value, name)
  return sources.parse_id(value, name)


def _timestamp(value: object, unit: str) -> int:
  if _missing(value):
    raise BadRow("timestamp is missing")
  if isinstance(value, datetime.datetime):
    if value.tzinfo is None:
      value = value.replace(tzinfo=datetime.timezone.utc)
    return int(value.timestamp())
  if isinstance(value, datetime.date):
    return int(datetime.datetime(value.year, value.month, value.day,
                                 tzinfo=datetime.timezone.utc).timestamp())
  if unit == "iso" and isinstance(value, str):
    text = value.strip().replace("Z", "+00:00")
    try:
      parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
      raise BadRow(f"timestamp {value!r} is not an ISO-8601 time") from None
    return _timestamp(parsed, unit)
  number = sources.parse_float(value, "timestamp")
  return int(number // _UNIT_SECONDS.get(unit, 1))  # iso: numbers are seconds


class CustomSource(sources.Source):
  """Interactions of a data_config; see the module docstring."""

  family = "custom"

  def __init__(self, config_path: str,
               tracker: Optional[BadRowTracker] = None,
               span: Optional[int] = None):
    name = f"data_config:{config_path}"
    super().__init__(name if span is None else f"{name} span {span}", tracker)
    self.config_path = config_path
    self.span = span  # fills {SPAN} in the table paths (spans.py)
    config = load_config(config_path)
    self.implicit = bool(config.get("implicit", False))
    inter = config["interactions"]
    self.table = _Table(config_path, inter, "interactions", span)
    cols = inter.get("columns") or {}
    if not isinstance(cols, dict):
      raise IngestionError(f"data_config {config_path}: interactions.columns "
                           f"must be a mapping")
    unknown = set(cols) - {"user", "item", "rating", "timestamp"}
    if unknown:
      raise IngestionError(
          f"data_config {config_path}: unknown interactions.columns key(s) "
          f"{', '.join(sorted(unknown))} (allowed: user, item, rating, "
          f"timestamp)")
    for key in ("user", "item") + (() if self.implicit else ("rating",)):
      if not cols.get(key):
        hint = " (or set implicit: true)" if key == "rating" else ""
        raise IngestionError(f"data_config {config_path}: "
                             f"interactions.columns.{key} is missing{hint}")
    self.columns = {k: str(v) for k, v in cols.items()
                    if v and not (k == "rating" and self.implicit)}
    self.timestamp_unit = str(inter.get("timestamp_unit") or "s")
    if self.timestamp_unit not in list(_UNIT_SECONDS) + ["iso"]:
      raise IngestionError(f"data_config {config_path}: timestamp_unit "
                           f"{self.timestamp_unit!r} is not one of s, ms, us, "
                           f"ns, iso")
    self.has_timestamp = "timestamp" in self.columns
    self.user_features = self._feature_map(inter.get("user_features"),
                                           "interactions.user_features")
    self.users_section = config.get("users")
    self.items_section = config.get("items")
    self.movies: Optional[Dict[str, Row]] = None
    self.users: Dict[str, Row] = {}
    self.seen: Dict[str, None] = {}
    self.items_file = ""  # the items file read (its {SPAN} filled), for errors

  def _feature_map(self, mapping, where) -> Dict[str, str]:
    if not mapping:
      return {}
    if not isinstance(mapping, dict):
      raise IngestionError(f"data_config {self.config_path}: {where} must map "
                           f"contract feature names to columns")
    unknown = [n for n in mapping if n not in _USER_FEATURE_NAMES]
    if unknown:
      raise IngestionError(
          f"data_config {self.config_path}: {where}: {', '.join(unknown)} "
          f"is not a user feature of the contract (known: "
          f"{', '.join(_USER_FEATURE_NAMES)})")
    return {str(k): str(v) for k, v in mapping.items()}

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
    id_column = section.get("id")
    if not id_column:
      raise IngestionError(f"data_config {self.config_path}: users.id (the "
                           f"user id column) is missing")
    mapping = self._feature_map(section.get("features"), "users.features")

    def user(values) -> None:
      if values is None:
        raise BadRow("the number of values differs from the header's")
      user_id = sources.parse_id(values[id_column], f"user id ({id_column})")
      if user_id in self.users:
        raise BadRow(f"user id {user_id!r} appears twice")
      self.users[user_id] = {
          name: _convert_user_feature(name, values[column])
          for name, column in mapping.items()}

    for _ in self._rows(table.display,
                        table.rows([id_column] + list(mapping.values())),
                        user, table.unit):
      pass

  def _load_items(self) -> None:
    section = self.items_section
    table = _Table(self.config_path, section, "items", self.span)
    self.items_file = table.display
    cols = section.get("columns") or {}
    unknown = set(cols) - {"item", "title", "genres"}
    if unknown or not cols.get("item"):
      raise IngestionError(
          f"data_config {self.config_path}: items.columns needs item (and "
          f"optionally title, genres); unknown: {sorted(unknown)}")
    separator = section.get("genre_separator") or "|"
    aliases = {str(k).strip().lower(): str(v)
               for k, v in (section.get("genre_aliases") or {}).items()}
    policy = section.get("unknown_genres") or "error"
    if policy not in ("error", "drop"):
      raise IngestionError(f"data_config {self.config_path}: unknown_genres "
                           f"must be error or drop, not {policy!r}")
    by_lower = {n.lower(): i for i, n in enumerate(features.GENRE_NAMES)}
    for alias, target in sources.GENRE_ALIASES.items():
      by_lower.setdefault(alias.lower(), features.GENRE_ID[target])
    for alias, target in aliases.items():
      if target not in features.GENRE_ID:
        raise IngestionError(
            f"data_config {self.config_path}: genre_aliases maps {alias!r} to "
            f"{target!r}, which is not one of {features.GENRE_NAMES}")
      by_lower[alias] = features.GENRE_ID[target]
    unknown_genres: Dict[str, int] = {}
    item_col, title_col, genres_col = (cols.get("item"), cols.get("title"),
                                       cols.get("genres"))

    def item(values) -> None:
      if values is None:
        raise BadRow("the number of values differs from the header's")
      item_id = sources.parse_id(values[item_col], f"item id ({item_col})")
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
  def ratings(self, part: Optional[str] = None) -> Iterator[Row]:
    if part is not None:
      raise IngestionError(f"{self.name} has no part {part!r}")
    self.prepare()
    cols = self.columns
    catalogue = self.movies if self.items_section else None
    items_file = self.items_file

    def interaction(values) -> Row:
      if values is None:
        raise BadRow("the number of values differs from the header's")
      user_id = sources.parse_id(values[cols["user"]],
                                 f"user id ({cols['user']})")
      item_id = sources.parse_id(values[cols["item"]],
                                 f"item id ({cols['item']})")
      row: Row = {"user_id": user_id}
      if catalogue is not None:
        movie = catalogue.get(item_id)
        if movie is None:
          raise BadRow(f"item id {item_id!r} is not in {items_file}")
        row.update(movie)
      else:
        row.update(movie_id=item_id, movie_title=item_id)
      if not self.implicit:
        row["user_rating"] = sources.parse_float(values[cols["rating"]],
                                                 f"rating ({cols['rating']})")
      if self.has_timestamp:
        row["timestamp"] = _timestamp(values[cols["timestamp"]],
                                      self.timestamp_unit)
      row.update(self.users.get(user_id, {}))
      for name, column in self.user_features.items():
        row[name] = _convert_user_feature(name, values[column])
      if catalogue is None:
        self.seen.setdefault(item_id)
      return row

    columns = list(dict.fromkeys(list(cols.values())
                                 + list(self.user_features.values())))
    yield from self._rows(self.table.display, self.table.rows(columns),
                          interaction, self.table.unit)

  def catalogue(self) -> Iterator[Row]:
    """Items of the items file, or else the items seen by ratings()."""
    self.prepare()
    if self.items_section:
      yield from self.movies.values()
    else:
      for item_id in self.seen:
        yield {"movie_id": item_id, "movie_title": item_id}
