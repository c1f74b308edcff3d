"""Bad values name their file, line (row) and column; none slip through."""
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from components.ingestion import ingest
from components.ingestion import sources
from components.ingestion.base import BadRowTracker, IngestionError
from tests import test_ingestion_helpers as helpers

BEYOND_INT64 = "99999999999999999999"


def _config(tmp_path, events, **interactions):
  config = {"interactions": dict({
      "path": events,
      "columns": {"user": "uid", "item": "sku", "rating": "stars",
                  "timestamp": "when"}}, **interactions)}
  path = tmp_path / "data.yaml"
  path.write_text(yaml.safe_dump(config))
  return str(path)


def _read(config, max_bad=0.0):
  tracker = BadRowTracker(max_bad)
  return list(sources.open_source("", config, tracker).ratings()), tracker


def _events(**columns):
  frame = pd.DataFrame({"uid": ["a", "b", "c"], "sku": ["x", "y", "z"],
                        "stars": [4.0, 3.5, 5.0],
                        "when": [1600000000, 1600000100, 1600000200]})
  return frame.assign(**columns)


# -- Parquet column types ----------------------------------------------------
def test_parquet_string_rating_is_an_error_naming_file_column_and_type(
    tmp_path):
  _events(stars=["4", "3.5", "5"]).to_parquet(tmp_path / "events.parquet")
  with pytest.raises(IngestionError) as e:
    _read(_config(tmp_path, "events.parquet"))
  assert (f"{tmp_path}/events.parquet: column 'stars' (rating) has the Arrow "
          f"type string; expected a number (integer or floating point)"
          in str(e.value))


def test_parquet_timestamp_types(tmp_path):
  _events(when=["1600000000", "1600000100", "1600000200"]).to_parquet(
      tmp_path / "events.parquet")
  with pytest.raises(IngestionError) as e:
    _read(_config(tmp_path, "events.parquet"))
  assert ("events.parquet: column 'when' (timestamp, unit s) has the Arrow "
          "type string; expected a number (integer or floating point) or a "
          "timestamp or date") in str(e.value)
  # ISO-8601 text is what unit iso expects.
  _events(when=["2020-09-13T12:26:40Z"] * 3).to_parquet(
      tmp_path / "iso.parquet")
  rows, _ = _read(_config(tmp_path, "iso.parquet", timestamp_unit="iso"))
  assert rows[0]["timestamp"] == 1600000000
  # A timestamp column, and integers in ns (beyond a float's precision).
  _events(when=pd.to_datetime([1600000000] * 3, unit="s")).to_parquet(
      tmp_path / "ts.parquet")
  assert _read(_config(tmp_path, "ts.parquet"))[0][0]["timestamp"] == (
      1600000000)
  _events(when=[1600000000999999999] * 3).to_parquet(tmp_path / "ns.parquet")
  rows, _ = _read(_config(tmp_path, "ns.parquet", timestamp_unit="ns"))
  assert rows[0]["timestamp"] == 1600000000


def test_parquet_value_python_cannot_hold_names_rows_and_column(tmp_path):
  table = pa.table({"uid": ["a", "b"], "sku": ["x", "y"],
                    "stars": [4.0, 3.0],
                    "when": pa.array([0, 400_000_000_000],
                                     type=pa.timestamp("s"))})  # year 14645
  pq.write_table(table, tmp_path / "events.parquet")
  with pytest.raises(IngestionError, match=r"events.parquet rows 1-2, column "
                     r"'when': a value cannot be converted"):
    _read(_config(tmp_path, "events.parquet"))


def test_csv_renamed_parquet_names_the_file(tmp_path):
  _events().to_csv(tmp_path / "events.parquet", index=False)
  with pytest.raises(IngestionError) as e:
    _read(_config(tmp_path, "events.parquet"))
  assert f"{tmp_path}/events.parquet is not a readable Parquet file" in str(
      e.value)
  assert "set format: csv" in str(e.value)
  # Which is the fix: the file reads as CSV.
  rows, _ = _read(_config(tmp_path, "events.parquet", format="csv"))
  assert len(rows) == 3


def test_parquet_bytes_that_are_not_utf8_are_a_bad_row(tmp_path):
  table = pa.table({"uid": pa.array([b"a", b"\xff"], pa.binary()),
                    "sku": ["x", "y"], "stars": [4.0, 3.0],
                    "when": [1600000000, 1600000100]})
  pq.write_table(table, tmp_path / "events.parquet")
  with pytest.raises(IngestionError, match=r"events.parquet row 2: user id "
                     r"\(uid\) b'\\xff' is not UTF-8 text"):
    _read(_config(tmp_path, "events.parquet"))


# -- numbers beyond what a tf.Example holds ----------------------------------
def test_timestamp_beyond_int64_in_u_data(ml100k_dir, tmp_path):
  helpers.replace_line(os.path.join(ml100k_dir, "u.data"), 4,
                       f"3\t5\t4\t{BEYOND_INT64}")
  with pytest.raises(IngestionError) as e:
    list(sources.open_source(ml100k_dir).ratings())
  assert (f"u.data line 4: timestamp {BEYOND_INT64} is out of the int64 "
          f"range") in str(e.value)
  # With bad rows allowed it is skipped, not a crash of the writer.
  summary = ingest.ingest(ml100k_dir, max_bad_row_fraction=0.01,
                          examples_dir=str(tmp_path / "e"),
                          catalogue_dir=str(tmp_path / "c"))
  assert summary.num_bad_rows == 1
  assert sum(summary.num_examples.values()) == 1499


@pytest.mark.parametrize("when, unit, message", [
    (BEYOND_INT64, "s", f"timestamp (when) {BEYOND_INT64} is out of the "
     f"int64 range"),
    ("1e300", "s", "timestamp (when) 1e300 is out of the int64 range"),
    ("inf", "ms", "timestamp (when) 'inf' is not a finite number"),
    ("soon", "s", "timestamp (when) 'soon' is not a number"),
    ("99999-01-01", "iso", "timestamp (when) '99999-01-01' is not an "
     "ISO-8601 time"),
])
def test_custom_csv_timestamps(tmp_path, when, unit, message):
  first = "2020-09-13T12:26:40Z" if unit == "iso" else "1600000000"
  (tmp_path / "events.csv").write_text(
      f"uid,sku,stars,when\na,x,4,{first}\nb,y,3,{when}\n")
  with pytest.raises(IngestionError) as e:
    _read(_config(tmp_path, "events.csv", timestamp_unit=unit))
  assert f"events.csv line 3: {message}" in str(e.value)


def test_ratings_beyond_float32(tmp_path):
  (tmp_path / "events.csv").write_text(
      "uid,sku,stars,when\na,x,4,1600000000\nb,y,1e39,1600000100\n")
  with pytest.raises(IngestionError, match=r"events.csv line 3: rating "
                     r"\(stars\) '1e39' is out of the float32 range"):
    _read(_config(tmp_path, "events.csv"))
  path = helpers.write_current(str(tmp_path / "ml-25m"))
  helpers.replace_line(os.path.join(path, "ratings.csv"), 2,
                       "1,1,4e40,1112486027")
  with pytest.raises(IngestionError, match=r"ratings.csv line 2: rating "
                     r"'4e40' is out of the float32 range"):
    list(sources.open_source(path).ratings())


def test_custom_csv_in_a_wrong_encoding_names_file_and_line(tmp_path):
  (tmp_path / "events.csv").write_bytes(
      "uid,sku,stars,when\na,x,4,1600000000\nJos\u00e9,y,3,1600000100\n"
      .encode("latin-1"))
  with pytest.raises(IngestionError) as e:
    _read(_config(tmp_path, "events.csv"))
  assert "events.csv line 3: b'Jos\\xe9,y,3,1600000100' is not utf-8" in str(
      e.value)
  rows, _ = _read(_config(tmp_path, "events.csv", encoding="latin-1"))
  assert rows[1]["user_id"] == "Jos\u00e9"


def test_user_feature_errors_name_feature_and_column(tmp_path):
  _events().to_csv(tmp_path / "events.csv", index=False)
  (tmp_path / "users.csv").write_text("id,age\na,34\nb,old\n")
  config = yaml.safe_load(open(_config(tmp_path, "events.csv")))
  config["users"] = {"path": "users.csv", "id": "id",
                     "features": {"raw_user_age": "age"}}
  (tmp_path / "data.yaml").write_text(yaml.safe_dump(config))
  with pytest.raises(IngestionError, match=r"users.csv line 3: raw_user_age "
                     r"\(age\) 'old' is not a number"):
    _read(str(tmp_path / "data.yaml"))


def test_a_folder_as_data_config_names_it(tmp_path):
  with pytest.raises(IngestionError) as e:
    sources.open_source("", str(tmp_path))
  assert str(e.value).startswith(f"{tmp_path}: the file cannot be read")
