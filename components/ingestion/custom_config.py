"""The data config of a user's own data: a strict, typed pydantic model.

`read_config(path)` reads a YAML or JSON file into a `DataConfig` and fails
with one `IngestionError` naming the file and every problem in it:

* an unknown key names itself, its section and the keys allowed there
  ("unknown key interactions.colums (in interactions; allowed: columns,
  delimiter, ...)"); a key given twice is an error too (YAML would keep the
  last one silently);
* a wrong type is an error, never coerced: ``implicit: "false"`` (a quoted
  string, which Python would call true) must be a boolean true or false;
* choices (format, timestamp_unit, unknown_genres, duplicates) must be one of
  their values; delimiters are one character, encodings ones Python knows,
  genre_aliases targets contract genre names, user feature names contract
  user features.

Names (paths, columns) may be written as bare numbers (YAML reads a column
``2021`` as an integer); they are taken as text. A key set to null (or left
empty) counts as absent. The keys and their meaning are documented in
components/ingestion/custom_source.py and examples/data_config.example.yaml.
"""
from __future__ import annotations

import codecs
import typing
from typing import Annotated, Dict, List, Literal, Optional

import pydantic
import yaml
from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from common import features
from components.ingestion import files
from components.ingestion.base import DUPLICATE_POLICIES, IngestionError

TIMESTAMP_UNITS = ("s", "ms", "us", "ns", "iso")
USER_FEATURE_NAMES = [n for n in features.USER_FEATURES
                      if n != features.USER_ID]


def _name_as_text(value):
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  return value


def _one_character(value: str) -> str:
  if len(value) != 1:
    raise PydanticCustomError(
        "one_character", f"must be exactly one character, got {value!r}")
  return value


def _known_encoding(value: str) -> str:
  try:
    codecs.lookup(value)
  except LookupError:
    raise PydanticCustomError(
        "encoding", f"{value!r} is not a text encoding Python knows (e.g. "
        f"utf-8, latin-1, cp1252)") from None
  return value


def _user_feature(value: str) -> str:
  if value not in USER_FEATURE_NAMES:
    raise PydanticCustomError(
        "user_feature", f"is not a user feature of the contract (known: "
        f"{', '.join(USER_FEATURE_NAMES)})")
  return value


def _contract_genre(value: str) -> str:
  if value not in features.GENRE_ID:
    raise PydanticCustomError(
        "genre", f"{value!r} is not a contract genre name "
        f"({', '.join(features.GENRE_NAMES)})")
  return value


Name = Annotated[str, BeforeValidator(_name_as_text), Field(min_length=1)]
Delimiter = Annotated[str, AfterValidator(_one_character)]
Encoding = Annotated[str, AfterValidator(_known_encoding)]
UserFeature = Annotated[str, AfterValidator(_user_feature)]
GenreName = Annotated[str, AfterValidator(_contract_genre)]


class _Section(pydantic.BaseModel):
  """Strict: no unknown keys, no type coercion, immutable."""

  model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

  @pydantic.model_validator(mode="before")
  @classmethod
  def _null_is_absent(cls, data):
    if isinstance(data, dict):
      return {k: v for k, v in data.items()
              if v is not None or k not in cls.model_fields}
    return data


class Table(_Section):
  """A CSV or Parquet file."""

  path: Name
  format: Optional[Literal["csv", "parquet"]] = None  # None: by extension
  delimiter: Optional[Delimiter] = None  # csv only; None: "," ("\t": .tsv)
  encoding: Optional[Encoding] = None  # csv only; None: utf-8


class InteractionColumns(_Section):
  user: Name
  item: Name
  rating: Optional[Name] = None  # required unless implicit
  timestamp: Optional[Name] = None


class Interactions(Table):
  columns: InteractionColumns
  timestamp_unit: Literal[TIMESTAMP_UNITS] = "s"
  user_features: Dict[UserFeature, Name] = {}  # contract name -> column


class Users(Table):
  id: Name
  features: Dict[UserFeature, Name] = {}  # contract name -> column


class ItemColumns(_Section):
  item: Name
  title: Optional[Name] = None
  genres: Optional[Name] = None


class Items(Table):
  columns: ItemColumns
  genre_separator: Annotated[str, Field(min_length=1)] = "|"
  genre_aliases: Dict[Name, GenreName] = {}  # your name -> contract name
  unknown_genres: Literal["error", "drop"] = "error"


class DataConfig(_Section):
  """A whole data config (see custom_source.py for what each key does)."""

  interactions: Interactions
  implicit: bool = False
  users: Optional[Users] = None
  items: Optional[Items] = None
  duplicates: Literal[DUPLICATE_POLICIES] = "keep_newest"

  @pydantic.model_validator(mode="after")
  def _rating_unless_implicit(self):
    if not self.implicit and not self.interactions.columns.rating:
      raise PydanticCustomError(
          "rating_missing",
          "interactions.columns.rating is missing (or set implicit: true)")
    return self


# ---------------------------------------------------------------------------
# Reading.
class _UniqueKeyLoader(yaml.SafeLoader):
  """SafeLoader refusing a key given twice in one mapping."""

  def construct_mapping(self, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
      key = self.construct_object(key_node, deep=deep)
      if key in seen:
        raise yaml.constructor.ConstructorError(
            None, None, f"key {key!r} appears twice in one mapping",
            key_node.start_mark)
      seen.add(key)
    return super().construct_mapping(node, deep=deep)


def _section_fields(loc: List[str]) -> List[str]:
  """The keys allowed in the section at `loc` ([] = the top level)."""
  model = DataConfig
  for part in loc:
    annotation = model.model_fields[part].annotation
    candidates = typing.get_args(annotation) or (annotation,)
    model = next(c for c in candidates if isinstance(c, type)
                 and issubclass(c, pydantic.BaseModel))
  return sorted(model.model_fields)


def _show(value) -> str:
  if isinstance(value, str):
    return f"the string {value!r}"
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (int, float)):
    return f"the number {value!r}"
  if isinstance(value, dict):
    return "a mapping"
  if isinstance(value, list):
    return f"the list {value!r}"
  return repr(value)


def _describe(error) -> str:
  """One pydantic error as a sentence naming the key and what was expected."""
  loc = [str(p) for p in error["loc"] if p != "[key]"]
  where = ".".join(loc)
  kind, got = error["type"], error.get("input")
  if kind == "extra_forbidden":
    section = ".".join(loc[:-1])
    try:
      allowed = ", ".join(_section_fields(loc[:-1]))
    except (KeyError, StopIteration):
      allowed = "?"
    return (f"unknown key {where} (in {section or 'the top level'}; "
            f"allowed: {allowed})")
  if kind == "missing":
    return f"{where} is missing"
  if kind == "bool_type":
    return (f"{where} must be a boolean true or false (without quotes), got "
            f"{_show(got)}")
  if kind == "string_type":
    return f"{where} must be text, got {_show(got)}"
  if kind in ("model_type", "dict_type", "model_attributes_type"):
    return f"{where or 'the file'} must be a mapping of keys to values, got {_show(got)}"
  if kind == "literal_error":
    return (f"{where} must be one of {error['ctx']['expected']}, got "
            f"{_show(got)}")
  if kind in ("string_too_short", "too_short"):
    return f"{where} must not be empty"
  if kind in ("one_character", "encoding", "user_feature", "genre"):
    return f"{where} {error['msg']}"
  if kind == "rating_missing":
    return error["msg"]
  return f"{where}: {error['msg']} (got {_show(got)})"


def parse_config(raw: object, path: str) -> DataConfig:
  """A DataConfig from the loaded YAML/JSON of `path` (for messages)."""
  if not isinstance(raw, dict):
    raise IngestionError(f"data_config {path} must be a mapping with an "
                         f"'interactions' key, not {_show(raw)}")
  try:
    return DataConfig.model_validate(raw)
  except pydantic.ValidationError as e:
    problems = [_describe(error) for error in e.errors()]
    raise IngestionError(f"data_config {path}: " + "; ".join(problems)
                         ) from None


def read_config(path: str) -> DataConfig:
  """Reads and checks a data config file (YAML or JSON)."""
  if not files.exists(path):
    raise IngestionError(f"data_config {path} does not exist")
  data = files.read_bytes(path)
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise IngestionError(f"data_config {path} is not UTF-8 text (byte "
                         f"{e.start})") from None
  try:
    raw = yaml.load(text, Loader=_UniqueKeyLoader)  # nosec: a SafeLoader
  except yaml.YAMLError as e:
    raise IngestionError(f"data_config {path} is not valid YAML/JSON: "
                         f"{' '.join(str(e).split())}") from None
  return parse_config(raw, path)
