"""common/versions.py: completeness, atomic publishing, leftovers."""
import json
import os

import pytest

from common import versions


def _model(root, files=None):
  """A fake SavedModel folder with the given {relative path: bytes}."""
  files = files or {"saved_model.pb": b"graph" * 10,
                    "variables/variables.index": b"index",
                    "variables/variables.data-00000-of-00001": b"w" * 2000,
                    "assets.extra/manifest.json": b"{}",
                    "assets.extra/catalogue.jsonl": b'{"movie_id": "1"}\n' * 50}
  for rel, data in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)
  return root


def test_publish_makes_a_complete_version_with_every_file_listed(tmp_path):
  src = _model(str(tmp_path / "src"))
  model_dir = str(tmp_path / "serving" / "retrieval")
  path = versions.publish(src, model_dir, 7, versions.RETRIEVAL, source="uri://m1")
  assert path == os.path.join(model_dir, "7")
  info = versions.read_version_file(path)
  assert info["source"] == "uri://m1" and info["model"] == "retrieval"
  assert info["files"]["variables/variables.data-00000-of-00001"] == 2000
  assert versions.VERSION_FILE not in info["files"]
  assert versions.version_dirs(model_dir) == ([7], [])
  assert os.listdir(model_dir) == ["7"]  # no hidden staging folder left


@pytest.mark.parametrize("damage, reason", [
    (lambda d: open(os.path.join(d, "variables", "variables.data-00000-of-00001"),
                    "r+b").truncate(10), "has 10 bytes"),
    (lambda d: open(os.path.join(d, "saved_model.pb"), "wb").close(), "saved_model.pb has 0"),
    (lambda d: os.remove(os.path.join(d, "assets.extra", "catalogue.jsonl")), "missing"),
    (lambda d: open(os.path.join(d, versions.VERSION_FILE), "w").write("{tor"), "unreadable"),
])
def test_a_damaged_version_is_incomplete_with_its_reason(tmp_path, damage, reason):
  model_dir = str(tmp_path / "retrieval")
  versions.publish(_model(str(tmp_path / "src")), model_dir, 1, versions.RETRIEVAL)
  versions.publish(_model(str(tmp_path / "src")), model_dir, 2, versions.RETRIEVAL)
  damage(os.path.join(model_dir, "2"))
  why = versions.why_incomplete(versions.RETRIEVAL, os.path.join(model_dir, "2"))
  assert why and reason in why
  assert str(tmp_path) not in why  # relative: safe to show to a client
  assert versions.version_dirs(model_dir) == ([1], [2])
  assert versions.complete_versions(str(tmp_path), versions.RETRIEVAL) == [1]


def test_versions_pushed_before_version_json_follow_the_older_rule(tmp_path):
  ranking = str(tmp_path / "ranking")
  _model(os.path.join(ranking, "1"))
  _model(os.path.join(ranking, "2"), {"saved_model.pb": b""})
  _model(os.path.join(ranking, "3"), {"variables/variables.index": b"x"})
  assert versions.version_dirs(ranking) == ([1], [2, 3])
  retrieval = str(tmp_path / "retrieval")
  _model(os.path.join(retrieval, "1"))
  _model(os.path.join(retrieval, "2"), {"saved_model.pb": b"graph"})  # no manifest
  assert versions.version_dirs(retrieval) == ([1], [2])


def test_a_kill_between_copy_and_rename_leaves_no_version(tmp_path, monkeypatch):
  src = _model(str(tmp_path / "src"))
  model_dir = str(tmp_path / "ranking")
  versions.publish(src, model_dir, 1, versions.RANKING)

  def killed(*_):
    raise KeyboardInterrupt("kill")
  monkeypatch.setattr(versions.os, "rename", killed)
  with pytest.raises(KeyboardInterrupt):
    versions.publish(src, model_dir, 2, versions.RANKING)
  monkeypatch.undo()
  # Only a hidden staging folder: readers see version 1 alone.
  assert versions.version_dirs(model_dir) == ([1], [])
  [hidden] = [n for n in os.listdir(model_dir) if not n.isdigit()]
  assert hidden.startswith(versions.PUSHING_PREFIX)
  assert versions.remove_leftovers(model_dir) == [os.path.join(model_dir, hidden)]
  assert os.listdir(model_dir) == ["1"]


def test_publish_never_overwrites_a_version(tmp_path):
  src = _model(str(tmp_path / "src"))
  model_dir = str(tmp_path / "ranking")
  versions.publish(src, model_dir, 5, versions.RANKING)
  with pytest.raises(versions.VersionError, match="version 5 exists already"):
    versions.publish(src, model_dir, 5, versions.RANKING)


def test_find_published_only_matches_the_newest_complete_version(tmp_path):
  src = _model(str(tmp_path / "src"))
  model_dir = str(tmp_path / "ranking")
  versions.publish(src, model_dir, 1, versions.RANKING, source="m1")
  assert versions.find_published(model_dir, versions.RANKING, "m1") == 1
  assert versions.find_published(model_dir, versions.RANKING, "m2") is None
  versions.publish(src, model_dir, 2, versions.RANKING, source="m2")
  assert versions.find_published(model_dir, versions.RANKING, "m1") is None
  assert versions.find_published(model_dir, versions.RANKING, "") is None


def test_next_version_follows_the_clock_and_never_reuses_a_number(tmp_path):
  model_dir = str(tmp_path / "ranking")
  assert versions.next_version(model_dir, clock=lambda: 100.5) == 100
  os.makedirs(os.path.join(model_dir, "100"))
  os.makedirs(os.path.join(model_dir, ".pushing-300-1"))
  assert versions.next_version(model_dir, clock=lambda: 100.0) == 101
  assert versions.next_version(model_dir, clock=lambda: 500.0) == 500


def test_version_file_lists_sizes_as_json(tmp_path):
  d = _model(str(tmp_path / "v"), {"a/b.txt": b"12345"})
  versions.write_version_file(d, versions.RANKING, "src")
  with open(os.path.join(d, versions.VERSION_FILE)) as f:
    assert json.load(f)["files"] == {"a/b.txt": 5}
  assert not [n for n in os.listdir(d) if n.endswith(".tmp")]


def test_on_an_object_store_the_files_go_in_place_and_version_json_last(tmp_path):
  """No atomic folder rename on gs:// or s3:// (here TF's ram://): the copy
  goes to the version itself and VERSION.json, written after it, lists it."""
  from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
  from tfx.utils import io_utils  # pylint: disable=g-import-not-at-top
  src = _model(str(tmp_path / "src"))
  path = versions.publish(src, "ram://serving/ranking", 3, versions.RANKING,
                          source="m", copy_dir=io_utils.copy_dir)
  assert path == "ram://serving/ranking/3"
  with fileio.open(path + "/" + versions.VERSION_FILE) as f:
    info = json.loads(f.read())
  assert info["files"]["variables/variables.data-00000-of-00001"] == 2000
  assert info["source"] == "m" and len(info["files"]) == 5
