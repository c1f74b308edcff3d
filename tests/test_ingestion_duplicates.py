"""Duplicate (user, movie) ratings: found, reported, newest kept or an error."""
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import yaml

from components.ingestion import duplicates
from components.ingestion import ingest
from components.ingestion.base import IngestionError
from tests import test_ingestion_helpers as helpers


def _written(base_dir, split):
  """(user, movie) -> (rating or None, timestamp) of one written split."""
  out = {}
  paths = ingest.split_files(base_dir, split)
  for record in tf.data.TFRecordDataset(paths, compression_type="GZIP"):
    f = tf.train.Example.FromString(record.numpy()).features.feature
    key = (f["user_id"].bytes_list.value[0].decode(),
           f["movie_id"].bytes_list.value[0].decode())
    assert key not in out, f"{key} written twice"
    rating = (f["user_rating"].float_list.value[0]
              if f["user_rating"].float_list.value else None)
    timestamps = f["timestamp"].int64_list.value
    out[key] = (rating, timestamps[0] if timestamps else None)
  return out


def _ingest(tmp_path, **kwargs):
  out = tmp_path / "out"
  summary = ingest.ingest(examples_dir=str(out / "e"),
                          catalogue_dir=str(out / "c"), **kwargs)
  rows = {**_written(str(out / "e"), "train"),
          **_written(str(out / "e"), "eval")}
  return summary, rows


def _log_with_duplicates(tmp_path, num_pairs=1000, num_duplicates=500):
  """events.csv: num_pairs pairs, num_duplicates of them rated again.

  Returns the path and (user, movie) -> (newest rating, its timestamp).
  Every second re-rating is older than the first rating (a late delivery of
  old data), the others newer; the ratings contradict each other.
  """
  rng = np.random.default_rng(0)
  lines, newest = [], {}
  for i in range(num_pairs):
    pair = (f"u{i % 97}", f"m{i}")
    ts = 1_600_000_000 + int(rng.integers(0, 10**6))
    lines.append((pair, 1.0, ts))
    newest[pair] = (1.0, ts)
  for i in range(num_duplicates):
    pair, _, ts = lines[i * 2]
    ts2 = ts + 3600 if i % 2 else ts - 3600
    lines.append((pair, 5.0, ts2))
    if ts2 > ts:
      newest[pair] = (5.0, ts2)
  order = rng.permutation(len(lines))
  with open(tmp_path / "events.csv", "w") as f:
    f.write("user,item,stars,ts\n")
    for k in order:
      (user, movie), rating, ts = lines[k]
      f.write(f"{user},{movie},{rating},{ts}\n")
  return str(tmp_path / "events.csv"), newest


def _config(tmp_path, **extra):
  config = {"interactions": {"path": "events.csv", "columns": {
      "user": "user", "item": "item", "rating": "stars", "timestamp": "ts"}}}
  config.update(extra)
  path = tmp_path / "data.yaml"
  path.write_text(yaml.safe_dump(config))
  return str(path)


# -- finding -------------------------------------------------------------------
def _find(rows):
  keys = duplicates.PairKeys()
  for row in rows:
    keys.add(row)
  position = {"i": -1}

  def numbered():
    for i, row in enumerate(rows):
      position["i"] = i
      yield row
  return duplicates.find(numbered(), lambda: f"f line {position['i'] + 1}",
                         keys, keys.candidates())


def test_find_keeps_the_newest_then_the_later_row():
  rows = [{"user_id": "a", "movie_id": "1", "timestamp": 5},   # 0
          {"user_id": "a", "movie_id": "2", "timestamp": 1},   # 1
          {"user_id": "a", "movie_id": "1", "timestamp": 9},   # 2 newest
          {"user_id": "b", "movie_id": "1", "timestamp": 1},   # 3
          {"user_id": "a", "movie_id": "1", "timestamp": 7},   # 4
          {"user_id": "b", "movie_id": "1", "timestamp": 1}]   # 5 tie: later
  found = _find(rows)
  assert (found.rows, found.pairs) == (3, 2)
  assert found.drop.tolist() == [0, 3, 4]
  assert found.examples[0] == ("user 'a' movie '1': f line 1 (timestamp 5), "
                               "f line 3 (timestamp 9), f line 5 (timestamp 7)")
  assert _find(rows[:2]).rows == 0
  assert duplicates.PairKeys().candidates().size == 0


def test_hash_collisions_are_not_duplicates(monkeypatch):
  """Equal first hashes are only candidates: the second hash decides."""
  monkeypatch.setattr(duplicates, "hash", lambda pair: 42, raising=False)
  rows = [{"user_id": "a", "movie_id": str(m), "timestamp": 0}
          for m in (1, 2, 3, 2)]
  found = _find(rows)
  assert (found.rows, found.pairs, found.drop.tolist()) == (1, 1, [1])


def test_without_skips_the_dropped_indices():
  items = list("abcdef")
  assert list(duplicates.without(items, np.array([0, 2, 5]))) == list("bde")
  assert list(duplicates.without(items, np.empty(0, np.int64))) == items


# -- ingestion -------------------------------------------------------------------
@pytest.mark.parametrize("split", ["random", "time"])
def test_500_contradicting_duplicates_keep_the_newest(tmp_path, caplog, split):
  _, newest = _log_with_duplicates(tmp_path)
  with caplog.at_level(logging.WARNING):
    summary, rows = _ingest(tmp_path, data_config=_config(tmp_path),
                            split=split)
  assert summary.num_duplicates == 500
  assert rows == newest  # every pair once, with its newest rating
  warning = "\n".join(r.getMessage() for r in caplog.records
                      if r.levelno == logging.WARNING)
  assert "500 duplicate rating(s)" in warning
  assert "500 (user, movie) pair(s) rated more than once" in warning
  assert "events.csv line" in warning and "Kept the newest" in warning
  assert summary.num_bad_rows == 0
  if split == "time":  # the cut is a quantile of the kept ratings only
    cut = max(ts for (_, ts) in _written(str(tmp_path / "out" / "e"),
                                         "train").values())
    kept = sorted(ts for _, ts in newest.values())
    assert cut == kept[int(np.floor(0.8 * (len(kept) - 1)))]


def test_duplicates_error_stops_naming_count_and_lines(tmp_path):
  _log_with_duplicates(tmp_path, num_pairs=20, num_duplicates=4)
  with pytest.raises(IngestionError) as e:
    _ingest(tmp_path, data_config=_config(tmp_path, duplicates="error"))
  message = str(e.value)
  assert message.startswith("4 duplicate rating(s) in data_config:")
  assert re.search(r"4 \(user, movie\) pair\(s\) rated more than once, "
                   r"e\.g\. user 'u\d+' movie 'm\d+': ", message)
  assert f"{tmp_path}/events.csv line " in message
  assert "(rating 1, timestamp " in message and "(rating 5, timestamp " in (
      message)
  assert "duplicates: error" in message


def test_without_timestamps_the_later_row_wins(tmp_path):
  (tmp_path / "events.csv").write_text(
      "user,item,stars\na,x,1\nb,x,2\na,x,3\na,y,4\n")
  config = {"interactions": {"path": "events.csv", "columns": {
      "user": "user", "item": "item", "rating": "stars"}}}
  (tmp_path / "data.yaml").write_text(yaml.safe_dump(config))
  summary, rows = _ingest(tmp_path, data_config=str(tmp_path / "data.yaml"),
                          eval_fraction=0.5)
  assert summary.num_duplicates == 1
  assert rows == {("a", "x"): (3.0, None), ("b", "x"): (2.0, None),
                  ("a", "y"): (4.0, None)}


def test_grouplens_duplicates_use_the_default(ml100k_dir, tmp_path):
  data = os.path.join(ml100k_dir, "u.data")
  with open(data) as f:
    first = f.readline().split("\t")
  user, movie, _, ts = first
  with open(data, "a") as f:  # the first rating again, newer, and a bad row
    f.write(f"{user}\t{movie}\t1\t{int(ts) + 10}\n1\t1\tbad\t1\n")
  summary, rows = _ingest(tmp_path, source=ml100k_dir,
                          max_bad_row_fraction=0.01)
  assert summary.num_duplicates == 1 and summary.num_bad_rows == 1
  assert len(rows) == 1500
  assert rows[(user, movie)] == (1.0, int(ts) + 10)


def test_fold_split_duplicates_across_base_and_test(ml100k_dir, tmp_path):
  written = helpers.write_ml100k_fold(ml100k_dir, "u1")
  u, m, _, t = written["base"][0].strip().split("\t")
  with open(os.path.join(ml100k_dir, "u1.test"), "a") as f:
    f.write(f"{u}\t{m}\t2\t{int(t) - 5}\n")  # older: the base rating stays
  summary, rows = _ingest(tmp_path, source=ml100k_dir, split="u1")
  assert summary.num_duplicates == 1
  assert summary.num_examples == {"train": 1200, "eval": 300}
  assert rows[(u, m)][1] == int(t)
