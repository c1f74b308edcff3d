"""The strict data config model (components/ingestion/custom_config.py)."""
import json
import os

import pytest
import yaml

from components.ingestion import custom_config
from components.ingestion import custom_source
from components.ingestion.base import IngestionError

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples",
                       "data_config.example.yaml")


def _config(**extra):
  config = {"interactions": {
      "path": "events.csv",
      "columns": {"user": "uid", "item": "sku", "rating": "stars",
                  "timestamp": "when"}}}
  config.update(extra)
  return config


def _write(tmp_path, config, name="data.yaml"):
  path = tmp_path / name
  path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
  return str(path)


def _error(tmp_path, config) -> str:
  path = _write(tmp_path, config)
  with pytest.raises(IngestionError) as e:
    custom_config.read_config(path)
  message = str(e.value)
  assert message.startswith(f"data_config {path}"), message  # names the file
  assert "\n" not in message and "pydantic" not in message
  return message


def test_example_config_is_valid_and_typed():
  config = custom_config.read_config(EXAMPLE)
  assert config.implicit is False and config.duplicates == "keep_newest"
  assert config.interactions.columns.rating == "stars"
  assert config.interactions.user_features == {"user_gender": "gender"}
  assert config.items.genre_aliases == {"Science Fiction": "Sci-Fi",
                                        "Kids": "Children"}
  as_dict = custom_source.load_config(EXAMPLE)  # pipeline.is_implicit's view
  assert as_dict["implicit"] is False
  assert as_dict["interactions"]["columns"]["user"] == "user_id"


def test_defaults_nulls_and_json(tmp_path):
  config = custom_config.read_config(_write(tmp_path, _config(
      implicit=None, users=None,
      items={"path": "items.csv", "columns": {"item": "sku"},
             "genre_separator": None})))
  assert config.implicit is False and config.users is None
  assert config.items.genre_separator == "|"  # null = absent: the default
  assert config.interactions.timestamp_unit == "s"
  path = tmp_path / "data.json"
  path.write_text(json.dumps(_config(implicit=True, duplicates="error")))
  config = custom_config.read_config(str(path))
  assert config.implicit is True and config.duplicates == "error"
  # A column named by a bare number (YAML reads 2021 as an integer).
  config = custom_config.read_config(_write(
      tmp_path, "interactions:\n  path: e.csv\n  columns: {user: 1, item: 2, "
      "rating: 2021}\n"))
  assert config.interactions.columns.rating == "2021"


@pytest.mark.parametrize("value", ["false", "no", "0", 0, 1])
def test_implicit_must_be_a_boolean(tmp_path, value):
  message = _error(tmp_path, _config(implicit=value))
  assert "implicit must be a boolean true or false" in message
  assert repr(value) in message


def test_unknown_keys_name_the_key_the_section_and_the_allowed_keys(tmp_path):
  config = _config()
  config["interactions"]["colums"] = {"user": "u"}
  message = _error(tmp_path, config)
  assert ("unknown key interactions.colums (in interactions; allowed: "
          "columns, delimiter, encoding, format, path, timestamp_unit, "
          "user_features)") in message
  message = _error(tmp_path, _config(implict=True))
  assert "unknown key implict (in the top level; allowed: duplicates, " \
         "implicit, interactions, items, users)" in message
  config = _config(items={"path": "i.csv", "columns": {"item": "sku",
                                                       "name": "title"}})
  message = _error(tmp_path, config)
  assert ("unknown key items.columns.name (in items.columns; allowed: genres, "
          "item, title)") in message


def test_every_problem_is_named(tmp_path):
  config = _config(duplicates="newest", implicit="yes")
  config["interactions"].update(format="xlsx", delimiter=";;",
                                encoding="utf-9", timestamp_unit="days",
                                user_features={"user_mood": "m"})
  message = _error(tmp_path, config)
  for part in (
      "duplicates must be one of 'keep_newest' or 'error', got the string "
      "'newest'",
      "implicit must be a boolean true or false (without quotes), got the "
      "string 'yes'",
      "interactions.format must be one of 'csv' or 'parquet'",
      "interactions.delimiter must be exactly one character, got ';;'",
      "interactions.encoding 'utf-9' is not a text encoding",
      "interactions.timestamp_unit must be one of 's', 'ms', 'us', 'ns' or "
      "'iso', got the string 'days'",
      "interactions.user_features.user_mood is not a user feature of the "
      "contract"):
    assert part in message, (part, message)


def test_types_and_required_keys(tmp_path):
  assert "interactions is missing" in _error(tmp_path, {"implicit": True})
  config = _config()
  del config["interactions"]["columns"]["rating"]
  assert ("interactions.columns.rating is missing (or set implicit: true)"
          in _error(tmp_path, config))
  config = _config()
  config["interactions"]["columns"] = ["uid", "sku"]
  assert ("interactions.columns must be a mapping of keys to values, got the "
          "list ['uid', 'sku']") in _error(tmp_path, config)
  config = _config()
  config["interactions"]["path"] = ""
  assert "interactions.path must not be empty" in _error(tmp_path, config)
  config = _config()
  config["interactions"]["columns"]["user"] = True
  assert "interactions.columns.user must be text, got true" in _error(
      tmp_path, config)
  config = _config(items={"path": "i.csv", "columns": {"item": "sku"},
                          "genre_aliases": {"Space": "Space Opera"}})
  assert ("items.genre_aliases.Space 'Space Opera' is not a contract genre "
          "name") in _error(tmp_path, config)
  assert "must be a mapping with an 'interactions' key, not the list" in (
      _error(tmp_path, "- a\n- b\n"))


def test_yaml_problems(tmp_path):
  message = _error(tmp_path, "interactions:\n  path: a.csv\n  path: b.csv\n")
  assert "key 'path' appears twice" in message and "line 3" in message
  assert "is not valid YAML/JSON" in _error(tmp_path, "interactions: [\n")
  with pytest.raises(IngestionError, match="nope.yaml does not exist"):
    custom_config.read_config(str(tmp_path / "nope.yaml"))
