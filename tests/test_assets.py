"""The serving tables' seen-movies layout (common/assets.py): no TensorFlow."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common import assets


def test_written_table_is_memory_mapped_and_looked_up_by_user(tmp_path):
  assets.SeenTable.from_lists(
      {"10": [5, 1, 5], "2": [0], "ä": [3], "empty": []}).write(str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(assets.SEEN_FILES)
  table = assets.SeenTable.load(str(tmp_path))
  assert isinstance(table.users, np.memmap) and isinstance(table.movies, np.memmap)
  assert table.movies.dtype == np.int32
  assert list(table.user_ids()) == ["10", "2", "empty", "ä"]  # UTF-8 bytes order
  assert table.get("10").tolist() == [1, 5]  # distinct, ascending
  assert table.get("2").tolist() == [0]
  assert table.get("ä").tolist() == [3]
  assert table.get("empty").tolist() == [] and "empty" in table
  for unknown in ("1", "20", "", "100000000000", "zz"):
    assert table.get(unknown) is None and unknown not in table
  assert len(table) == 4


def test_an_id_longer_than_every_stored_one_is_unknown(tmp_path):
  # Fixed-width "S2" would truncate "10x" to "10", a stored user.
  table = assets.SeenTable.from_lists({"10": [1], "7": [2]})
  assert table.get("10x") is None


def test_empty_and_missing_tables(tmp_path):
  assert len(assets.SeenTable.load(str(tmp_path))) == 0
  assets.SeenTable.from_lists({}).write(str(tmp_path))
  table = assets.SeenTable.load(str(tmp_path))
  assert len(table) == 0 and table.get("1") is None


def test_legacy_jsonl_is_read_with_catalogue_positions(tmp_path):
  rows = [{"user_id": "1", "movie_ids": ["b", "gone", "a"]},
          {"user_id": "2", "movie_ids": []}]
  (tmp_path / assets.LEGACY_SEEN_FILE).write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  table = assets.SeenTable.load(str(tmp_path), catalogue_ids=["a", "b", "c"])
  assert table.get("1").tolist() == [0, 1]  # "gone" is not in the catalogue
  assert table.get("2").tolist() == []
  # The .npy table wins over a stale legacy file.
  assets.SeenTable.from_lists({"9": [2]}).write(str(tmp_path))
  assert list(assets.SeenTable.load(str(tmp_path), ["a"]).user_ids()) == ["9"]


def test_a_torn_table_is_refused_with_its_sizes(tmp_path):
  assets.SeenTable.from_lists({"1": [0, 1], "2": [2]}).write(str(tmp_path))
  np.save(tmp_path / assets.SEEN_MOVIES_FILE, np.arange(2, dtype=np.int32))
  with pytest.raises(ValueError, match="torn: 2 users, 3 offsets .* 2 movies"):
    assets.SeenTable.load(str(tmp_path))
