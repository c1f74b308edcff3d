"""Pytest set-up: every test goes through `common` (TF_USE_LEGACY_KERAS=1)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import

import pytest  # noqa: E402  pylint: disable=g-import-not-at-top

from tests import synthetic_data  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.fixture
def ml100k_dir(tmp_path):
  """A small GroupLens-format ml-100k folder with planted structure."""
  path = tmp_path / "ml-100k"
  synthetic_data.write_ml100k(str(path))
  return str(path)


@pytest.fixture(scope="session")
def tiny_transformed(tmp_path_factory):
  """A real Transform output on planted data (see tests/tft_fixture.py)."""
  from tests import tft_fixture  # pylint: disable=g-import-not-at-top
  return tft_fixture.build(str(tmp_path_factory.mktemp("tft")))
