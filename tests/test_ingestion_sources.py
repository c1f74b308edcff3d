"""Readers of components/ingestion (plain Python, no TFX run)."""
import os

import pandas as pd
import pytest
import yaml

from common import features
from components.ingestion import custom_source
from components.ingestion import grouplens
from components.ingestion import sources
from components.ingestion import tfds_source
from components.ingestion.base import BadRowTracker, IngestionError
from tests import synthetic_data
from tests import test_ingestion_helpers as helpers

REAL_ML100K = "/work/shared/datasets/ml-100k"


def _ratings(path, max_bad=0.0, part=None, **kwargs):
  tracker = BadRowTracker(max_bad)
  src = sources.open_source(path, tracker=tracker, **kwargs)
  rows = list(src.ratings(part))
  return src, rows, tracker


def _tfds_encoded(ex):
  """A movielens_parsing example in the contract's encodings."""
  out = {"user_id": ex["user_id"], "movie_id": ex["movie_id"],
         "movie_title": ex["movie_title"],
         "movie_genres": [features.GENRE_ID[g] for g in ex["movie_genres"]],
         "user_rating": float(ex["user_rating"]),
         "timestamp": int(ex["timestamp"])}
  if "user_gender" in ex:
    out.update(
        user_gender=int(ex["user_gender"]),
        bucketized_user_age=float(ex["bucketized_user_age"]),
        user_occupation_label=features.OCCUPATION_LABEL_ID[
            ex["user_occupation_label"]],
        user_occupation_text=ex["user_occupation_text"],
        user_zip_code=ex["user_zip_code"])
  if "raw_user_age" in ex:
    out["raw_user_age"] = float(ex["raw_user_age"])
  return out


# ---------------------------------------------------------------------------
# GroupLens formats.
def test_ml100k_folder_matches_tfds_parsing(ml100k_dir):
  from tensorflow_datasets.structured import movielens_parsing
  src, rows, _ = _ratings(ml100k_dir)
  assert src.family == "100k"
  ref = [_tfds_encoded(ex) for _, ex in
         movielens_parsing.parse_100k_ratings_data(ml100k_dir)]
  assert rows == ref
  assert len(rows) == 60 * 25
  first = rows[0]
  u, m, r, t = synthetic_data.make_ratings()["ratings"][0]
  assert (first["user_id"], first["movie_id"], first["user_rating"],
          first["timestamp"]) == (str(u), str(m), float(r), t)
  # u.user line of user u: age 15 + (u-1)*7 % 50, gender M for odd index.
  age = 15 + ((u - 1) * 7) % 50
  assert first["raw_user_age"] == age
  assert first["bucketized_user_age"] == grouplens.bucketize_age(age)
  assert first["user_gender"] == (1 if (u - 1) % 2 else 0)
  occupation = synthetic_data.ML100K_OCCUPATIONS[
      (u - 1) % len(synthetic_data.ML100K_OCCUPATIONS)]
  assert first["user_occupation_text"] == occupation
  assert first["user_occupation_label"] == features.OCCUPATION_LABEL_ID[
      grouplens.ML100K_OCCUPATIONS[occupation]]


def test_ml100k_catalogue_has_unrated_movies_and_latin1(ml100k_dir):
  src = sources.open_source(ml100k_dir)
  movies = list(src.catalogue())
  assert len(movies) == 123  # 120 rated + 3 never rated
  by_id = {m["movie_id"]: m for m in movies}
  assert by_id["1"]["movie_title"].startswith("Caf\u00e9 ")
  assert by_id["123"]["movie_genres"] == [features.GENRE_ID["Drama"]]
  # Movie 2 has genre column 2 (Adventure) in the synthetic data.
  assert by_id["2"]["movie_genres"] == synthetic_data.tfds_genre_ids(2)
  # Movie 1 (index 0) is also a drama (m % 7 == 0).
  assert by_id["1"]["movie_genres"] == sorted(
      synthetic_data.tfds_genre_ids(1) + [features.GENRE_ID["Drama"]])
  rated = {r["movie_id"] for r in src.ratings()}
  assert {"121", "122", "123"} - rated == {"121", "122", "123"}


def test_ml100k_zip_with_top_folder(ml100k_dir, tmp_path):
  zip_path = helpers.zip_folder(ml100k_dir, str(tmp_path / "ml-100k.zip"),
                                top="ml-100k")
  _, folder_rows, _ = _ratings(ml100k_dir)
  src, zip_rows, _ = _ratings(zip_path)
  assert zip_rows == folder_rows
  assert len(list(src.catalogue())) == 123
  assert sources.detect_source_family(zip_path) == "100k"
  # A zip without a top folder works as well.
  flat = helpers.zip_folder(ml100k_dir, str(tmp_path / "flat.zip"))
  assert _ratings(flat)[1] == folder_rows


def test_ml100k_fold_parts(ml100k_dir):
  written = helpers.write_ml100k_fold(ml100k_dir, "u1")
  src = sources.open_source(ml100k_dir)
  base = list(src.ratings("u1.base"))
  test = list(src.ratings("u1.test"))
  assert len(base) == len(written["base"]) == 1200
  assert len(test) == len(written["test"]) == 300
  u, m, _, t = written["test"][0].split("\t")
  assert (test[0]["user_id"], test[0]["movie_id"], test[0]["timestamp"]) == (
      u, m, int(t))
  assert "raw_user_age" in test[0]  # joined with u.user like u.data rows


def test_ml1m_dat(tmp_path):
  from tensorflow_datasets.structured import movielens_parsing
  path = helpers.write_ml1m(str(tmp_path / "ml-1m"))
  src, rows, _ = _ratings(path)
  assert src.family == "1m" and sources.detect_source_family(path) == "1m"
  assert rows == [_tfds_encoded(ex) for _, ex in
                  movielens_parsing.parse_1m_ratings_data(path)]
  first = rows[0]
  assert first["user_occupation_text"] == "K-12 student"
  assert first["user_occupation_label"] == features.OCCUPATION_LABEL_ID[
      "student"]
  assert first["user_gender"] == 0 and first["bucketized_user_age"] == 1.0
  assert "raw_user_age" not in first
  assert first["movie_genres"] == [features.GENRE_ID[g] for g in
                                   ("Animation", "Children", "Comedy")]
  assert rows[2]["user_gender"] == 1 and rows[2]["bucketized_user_age"] == 56.0
  catalogue = {m["movie_id"]: m for m in src.catalogue()}
  assert len(catalogue) == 4 and catalogue["3"]["movie_title"] == (
      "Caf\u00e9 Noir (1996)")
  assert catalogue["4"]["movie_genres"] == [features.GENRE_ID["Drama"],
                                            features.GENRE_ID["War"]]


def test_ml10m_style_dat_without_users(tmp_path):
  path = helpers.write_ml1m(str(tmp_path / "ml-10m"))
  os.remove(os.path.join(path, "users.dat"))
  src, rows, _ = _ratings(path)
  assert src.family == "current" == sources.detect_source_family(path)
  assert "user_gender" not in rows[0] and len(rows) == 8


def test_current_csv(tmp_path):
  from tensorflow_datasets.structured import movielens_parsing
  path = helpers.write_current(str(tmp_path / "ml-25m"))
  src, rows, _ = _ratings(path)
  assert src.family == "current" == sources.detect_source_family(path)
  assert rows == [_tfds_encoded(ex) for _, ex in
                  movielens_parsing.parse_current_ratings_data(path)]
  assert rows[0]["user_rating"] == 3.5 and rows[0]["timestamp"] == 1112486027
  assert rows[1]["movie_title"] == "Good, the Bad and the Ugly, The (1966)"
  assert rows[2]["movie_genres"] == [features.GENRE_ID["Sci-Fi"],
                                     features.GENRE_ID["IMAX"]]
  assert set(rows[0]) == {"user_id", "movie_id", "movie_title",
                          "movie_genres", "user_rating", "timestamp"}
  catalogue = {m["movie_id"]: m for m in src.catalogue()}
  assert catalogue["4"]["movie_genres"] == [
      features.GENRE_ID["(no genres listed)"]]
  # Zipped with a top folder as GroupLens ships it.
  zip_path = helpers.zip_folder(path, str(tmp_path / "ml-25m.zip"), "ml-25m")
  assert _ratings(zip_path)[1] == rows


def test_detect_source_family(ml100k_dir, tmp_path):
  assert sources.detect_source_family("tfds:movielens/100k-ratings") == "100k"
  assert sources.detect_source_family("tfds:movielens/1m-ratings") == "1m"
  for config in ("20m-ratings", "25m-ratings", "latest-small-ratings"):
    assert sources.detect_source_family(f"tfds:movielens/{config}") == (
        "current")
  assert sources.detect_source_family("", "whatever.yaml") == "custom"
  assert sources.detect_source_family(ml100k_dir) == "100k"
  # A folder holding the data one level down (e.g. an unzipped archive).
  assert sources.detect_source_family(os.path.dirname(ml100k_dir)) == "100k"
  with pytest.raises(IngestionError, match="tfds:movielens/100k-ratings"):
    sources.detect_source_family("tfds:movielens/100k-movies")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(IngestionError, match="holds no GroupLens"):
    sources.detect_source_family(str(empty))
  with pytest.raises(IngestionError, match="neither a folder"):
    sources.detect_source_family(str(tmp_path / "nope"))


# ---------------------------------------------------------------------------
# Bad rows.
def test_bad_rating_names_file_and_line(ml100k_dir):
  helpers.replace_line(os.path.join(ml100k_dir, "u.data"), 17,
                       "3\t5\tabc\t874724710")
  with pytest.raises(IngestionError) as e:
    _ratings(ml100k_dir)
  assert "u.data line 17: rating 'abc' is not a number" in str(e.value)


@pytest.mark.parametrize("line, message", [
    ("3\t5\t4", "u.data line 4: expected 4 fields separated by '\\t'"),
    ("\t5\t4\t874724710", "u.data line 4: user id is empty"),
    ("3\t9999\t4\t874724710", "u.data line 4: movie id '9999' is not in u.item"),
    ("999\t5\t4\t874724710", "u.data line 4: user id '999' is not in u.user"),
    ("3\t5\t4\tyesterday", "u.data line 4: timestamp 'yesterday' is not an "
     "integer"),
])
def test_bad_rating_kinds(ml100k_dir, line, message):
  helpers.replace_line(os.path.join(ml100k_dir, "u.data"), 4, line)
  with pytest.raises(IngestionError) as e:
    _ratings(ml100k_dir)
  assert message in str(e.value)


def test_bad_rows_in_csv_and_movies(tmp_path):
  path = helpers.write_current(str(tmp_path / "ml-20m"))
  helpers.replace_line(os.path.join(path, "ratings.csv"), 3, "1,2")
  with pytest.raises(IngestionError, match=r"ratings.csv line 3: the number of"):
    _ratings(path)
  path = helpers.write_current(str(tmp_path / "ml-20m-b"))
  helpers.replace_line(os.path.join(path, "movies.csv"), 2,
                       "1,Toy Story (1995),Cartoon")
  with pytest.raises(IngestionError,
                     match=r"movies.csv line 2: genre 'Cartoon' is not one"):
    _ratings(path)
  path = helpers.write_ml1m(str(tmp_path / "ml-1m"))
  helpers.replace_line(os.path.join(path, "users.dat"), 2,
                       "2::X::56::16::70072")
  with pytest.raises(IngestionError,
                     match=r"users.dat line 2: gender 'X' is not M or F"):
    _ratings(path)


def test_skip_bad_rows_up_to_fraction(ml100k_dir):
  data = os.path.join(ml100k_dir, "u.data")
  for line in (5, 50, 500):
    helpers.replace_line(data, line, "1\t1\tbad\t1")
  src, rows, tracker = _ratings(ml100k_dir, max_bad=0.01)
  assert len(rows) == 1500 - 3
  assert tracker.bad == 3
  assert tracker.rows == 1500 + 123 + 60  # u.data + u.item + u.user lines
  assert tracker.problems[0].endswith("u.data line 5: rating 'bad' is not a "
                                      "number")
  tracker.check()  # 3 / 1683 < 1 %
  strict = BadRowTracker(0.001)
  src = sources.open_source(ml100k_dir, tracker=strict)
  list(src.ratings())
  with pytest.raises(IngestionError, match=r"3 of 1683 rows \(0.18%\) could "
                     r"not be read, more than max_bad_row_fraction=0.001"):
    strict.check()


# ---------------------------------------------------------------------------
# Custom data (data_config).
def _write_config(tmp_path, config, name="data.yaml"):
  path = tmp_path / name
  path.write_text(yaml.safe_dump(config))
  return str(path)


def _custom_files(tmp_path):
  events = pd.DataFrame({
      "uid": ["alice", "bob", "alice", "carol", "bob"],
      "sku": ["b1", "b2", "b2", "b3", "b1"],
      "stars": [4.5, 2.0, 3.0, 5.0, 1.0],
      "when": [1600000000, 1600000100, 1600000200, 1600000300, 1600000400],
      "sex": ["F", "M", "f", "", "male"],
  })
  items = pd.DataFrame({
      "sku": ["b1", "b2", "b3", "b4"],
      "name": ["Dune", "Emma", "Solaris", "Unread"],
      "tags": ["Science Fiction|Adventure", "romance", "Sci-Fi|Drama", ""],
  })
  users = pd.DataFrame({"id": ["alice", "bob"], "age": [34, 51],
                        "job": ["writer", "lawyer"]})
  return events, items, users


def _custom_config(events_path, items_path=None, users_path=None, **extra):
  config = {"interactions": {
      "path": events_path,
      "columns": {"user": "uid", "item": "sku", "rating": "stars",
                  "timestamp": "when"},
      "user_features": {"user_gender": "sex"}}}
  if items_path:
    config["items"] = {"path": items_path,
                       "columns": {"item": "sku", "title": "name",
                                   "genres": "tags"},
                       "genre_aliases": {"Science Fiction": "Sci-Fi"}}
  if users_path:
    config["users"] = {"path": users_path, "id": "id",
                       "features": {"raw_user_age": "age",
                                    "user_occupation_label": "job"}}
  config.update(extra)
  return config


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_custom_log_with_items_and_users(tmp_path, fmt):
  events, items, users = _custom_files(tmp_path)
  data = tmp_path / "data"
  data.mkdir()
  for name, frame in (("events", events), ("items", items), ("users", users)):
    if fmt == "csv":
      frame.to_csv(data / f"{name}.csv", index=False)
    else:
      frame.to_parquet(data / f"{name}.parquet", index=False)
  config = _write_config(tmp_path, _custom_config(
      f"data/events.{fmt}", f"data/items.{fmt}", f"data/users.{fmt}"))
  assert sources.detect_source_family("", config) == "custom"
  src = sources.open_source("", config)
  rows = list(src.ratings())
  assert src.family == "custom" and not src.implicit
  assert len(rows) == 5
  assert rows[0] == {
      "user_id": "alice", "movie_id": "b1", "movie_title": "Dune",
      "movie_genres": [features.GENRE_ID["Sci-Fi"],
                       features.GENRE_ID["Adventure"]],
      "user_rating": 4.5, "timestamp": 1600000000, "user_gender": 0,
      "raw_user_age": 34.0, "user_occupation_label":
          features.OCCUPATION_LABEL_ID["writer"]}
  assert rows[1]["movie_genres"] == [features.GENRE_ID["Romance"]]
  assert rows[2]["user_gender"] == 0 and rows[4]["user_gender"] == 1
  assert rows[3]["user_gender"] is None  # empty: feature left out
  assert "raw_user_age" not in rows[3]   # carol has no users row
  catalogue = {m["movie_id"]: m for m in src.catalogue()}
  assert sorted(catalogue) == ["b1", "b2", "b3", "b4"]  # b4 never rated
  assert catalogue["b4"]["movie_genres"] == []


def test_custom_implicit_without_catalogue(tmp_path):
  (tmp_path / "log.csv").write_text(
      "u;i;t\nu1;x;2021-01-01T00:00:00Z\nu2;y;2021-01-02T00:00:00\n"
      "u1;y;2021-01-03T12:00:00+00:00\n")
  config = _write_config(tmp_path, {
      "implicit": True,
      "interactions": {"path": "log.csv", "delimiter": ";",
                       "timestamp_unit": "iso",
                       "columns": {"user": "u", "item": "i",
                                   "timestamp": "t"}}})
  src = sources.open_source("", config)
  rows = list(src.ratings())
  assert src.implicit
  assert rows[0] == {"user_id": "u1", "movie_id": "x", "movie_title": "x",
                     "timestamp": 1609459200}
  assert rows[1]["timestamp"] == 1609459200 + 86400
  assert rows[2]["timestamp"] == 1609459200 + 2 * 86400 + 12 * 3600
  assert list(src.catalogue()) == [{"movie_id": "x", "movie_title": "x"},
                                   {"movie_id": "y", "movie_title": "y"}]


def test_custom_unknown_genres_error_or_drop(tmp_path):
  events, items, _ = _custom_files(tmp_path)
  events.to_csv(tmp_path / "events.csv", index=False)
  items.assign(tags=["Space Opera|Action", "Romance", "Poetry", ""]).to_csv(
      tmp_path / "items.csv", index=False)
  config = _custom_config("events.csv", "items.csv")
  with pytest.raises(IngestionError) as e:
    list(sources.open_source("", _write_config(tmp_path, config)).ratings())
  assert "'Poetry' (1 items), 'Space Opera' (1 items)" in str(e.value)
  assert "genre_aliases" in str(e.value)
  config["items"]["unknown_genres"] = "drop"
  src = sources.open_source("", _write_config(tmp_path, config))
  catalogue = {m["movie_id"]: m for m in src.catalogue()}
  assert catalogue["b1"]["movie_genres"] == [features.GENRE_ID["Action"]]
  assert catalogue["b3"]["movie_genres"] == []


def test_custom_bad_rows_and_config_errors(tmp_path):
  events, items, _ = _custom_files(tmp_path)
  events.loc[2, "stars"] = "lots"
  events.loc[3, "sku"] = "zzz"
  events.to_csv(tmp_path / "events.csv", index=False)
  items.to_csv(tmp_path / "items.csv", index=False)
  config = _write_config(tmp_path, _custom_config("events.csv", "items.csv"))
  with pytest.raises(IngestionError,
                     match=r"events.csv line 4: rating \(stars\) 'lots' is "
                     r"not a number"):
    list(sources.open_source("", config).ratings())
  tracker = BadRowTracker(0.5)
  rows = list(sources.open_source("", config, tracker).ratings())
  assert len(rows) == 3 and tracker.bad == 2
  assert "events.csv line 5: item id 'zzz' is not in" in tracker.problems[1]
  # Parquet rows are numbered as rows.
  events.assign(stars=[1.0, 2.0, None, 3.0, 4.0]).to_parquet(
      tmp_path / "events.parquet")
  config = _write_config(tmp_path, _custom_config("events.parquet"))
  with pytest.raises(IngestionError, match=r"events.parquet row 3: rating"):
    list(sources.open_source("", config).ratings())
  # Config mistakes are named.
  bad = _custom_config("events.csv")
  bad["interactions"]["colums"] = {}
  with pytest.raises(IngestionError, match="unknown key.*interactions.colums"):
    sources.open_source("", _write_config(tmp_path, bad))
  bad = _custom_config("events.csv")
  del bad["interactions"]["columns"]["rating"]
  with pytest.raises(IngestionError, match="columns.rating is missing"):
    sources.open_source("", _write_config(tmp_path, bad))
  bad = _custom_config("events.csv")
  bad["interactions"]["columns"]["user"] = "nobody"
  with pytest.raises(IngestionError, match="has no column 'nobody'"):
    list(sources.open_source("", _write_config(tmp_path, bad)).ratings())
  bad = _custom_config("events.csv")
  bad["interactions"]["user_features"] = {"user_mood": "sex"}
  with pytest.raises(IngestionError, match="user_mood is not a user feature"):
    sources.open_source("", _write_config(tmp_path, bad))
  with pytest.raises(IngestionError, match="not both"):
    sources.open_source("tfds:movielens/100k-ratings", config)


def test_example_config_is_valid():
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples",
                      "data_config.example.yaml")
  config = custom_source.load_config(path)
  assert config["interactions"]["columns"]["user"]


# ---------------------------------------------------------------------------
# TFDS.
@pytest.fixture
def no_probe(monkeypatch):
  monkeypatch.setattr(tfds_source, "check_download_reachable", lambda url: None)


@pytest.mark.parametrize("config, family", [("100k-ratings", "100k"),
                                            ("25m-ratings", "current")])
def test_tfds_source_with_mock_data(tmp_path, no_probe, config, family):
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=7, data_dir=str(tmp_path)):
    src = sources.open_source(f"tfds:movielens/{config}")
    rows = list(src.ratings())
    movies = list(src.catalogue())
  assert src.family == family and len(rows) == 7 and len(movies) == 7
  row = rows[0]
  assert isinstance(row["user_id"], str) and isinstance(row["movie_id"], str)
  assert isinstance(row["user_rating"], float)
  assert isinstance(row["timestamp"], int)
  assert all(isinstance(g, int) and 0 <= g < len(features.GENRE_NAMES)
             for r in rows for g in r["movie_genres"])
  if family == "100k":
    assert row["user_gender"] in (0, 1)  # bool converted to int
    assert 0 <= row["user_occupation_label"] < len(features.OCCUPATION_LABELS)
    assert isinstance(row["raw_user_age"], float)
  else:
    assert "user_gender" not in row
  assert set(movies[0]) == set(features.CATALOGUE_FEATURES)
  features.to_tf_example(row)  # the contract accepts every value


def test_tfds_offline_error_fails_fast(tmp_path, monkeypatch):
  def unreachable(url):
    raise OSError("[Errno -2] Name or service not known")
  monkeypatch.setattr(tfds_source, "check_download_reachable", unreachable)
  src = sources.open_source("tfds:movielens/100k-ratings",
                            tfds_data_dir=str(tmp_path))
  with pytest.raises(IngestionError) as e:
    list(src.ratings())
  message = str(e.value)
  assert "movielens/100k-ratings" in message and "offline" in message
  assert "--data ../shared/datasets/ml-100k" in message
  assert "Traceback" not in message and "\n" not in message


def test_tfds_download_failure_is_reported(tmp_path, no_probe, monkeypatch):
  import tensorflow_datasets as tfds

  def fail(*args, **kwargs):
    raise ConnectionError("Failed to establish a new connection")
  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      fail)
  src = sources.open_source("tfds:movielens/1m-ratings",
                            tfds_data_dir=str(tmp_path))
  with pytest.raises(IngestionError, match=r"ConnectionError: Failed to "
                     r"establish.*--data ../shared/datasets/ml-100k"):
    list(src.ratings())


# ---------------------------------------------------------------------------
# The real data set, when present (never copied into the repository).
@pytest.mark.skipif(not os.path.isdir(REAL_ML100K), reason="no real ml-100k")
def test_real_ml100k():
  src, rows, _ = _ratings(REAL_ML100K)
  assert len(rows) == 100000
  assert len({r["user_id"] for r in rows}) == 943
  assert len(list(src.catalogue())) == 1682
  assert len(list(src.ratings("u1.test"))) == 20000
