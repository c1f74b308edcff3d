"""Id arrays and lookups (common/ids.py): no TensorFlow."""
from __future__ import annotations

import numpy as np
import pytest

from common import ids


def test_bytes_and_str_ids_compare_equal():
  keys = np.asarray([b"m10", b"m2", "ä".encode("utf-8")], object)  # as tf gives them
  got = ids.positions(keys, ["m2", "ä", "m1", "m10", "m100", ""])
  assert got.tolist() == [1, 2, -1, 0, -1, -1]
  assert ids.positions([], ["a"]).tolist() == [-1]
  assert ids.positions(["a"], []).tolist() == []


def test_ids_are_fixed_width_bytes():
  assert ids.as_ids([7, 42]).tolist() == [b"7", b"42"]
  assert ids.as_ids(np.asarray(["x", "yy"])).dtype == np.dtype("S2")
  assert ids.as_ids([]).dtype.kind == "S"


def test_duplicates_are_refused_with_counts():
  with pytest.raises(ValueError, match="catalogue must be distinct ids .3 given, 2"):
    ids.require_distinct(ids.as_ids(["a", "b", "a"]), "catalogue")
