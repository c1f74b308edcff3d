"""A damaged model version must not take serving down.

serving/version_picker.py skips versions that are incomplete
(common.versions.why_incomplete: VERSION.json's sizes) or do not load, for the
newest good one, at start and on hot reload, and remembers the bad ones.
Fast tests drive VersionPicker with fake loaders; the slow ones damage copies
of the tiny real models (the session fixture `models` of tests/conftest.py,
trained once per test process) in each way a push has been seen broken: no
variables/, a truncated variables.data, a 0-byte saved_model.pb, a cut
assets.extra/catalogue.jsonl; each with VERSION.json (found without loading)
and without it (a version pushed before VERSION.json: found by loading).
"""
import json
import logging
import os
import shutil
import time

import pytest

from common import assets
from common import versions
from serving import errors
from serving import version_picker
from tests.test_serving import _push

VARIABLES_DATA = os.path.join("variables", "variables.data-00000-of-00001")
CATALOGUE = os.path.join(assets.ASSETS_EXTRA, assets.CATALOGUE_FILE)


def _truncate(path, size):
  with open(path, "r+b") as f:
    f.truncate(size)


DAMAGES = {
    "no_variables": lambda d: shutil.rmtree(os.path.join(d, "variables")),
    "truncated_variables": lambda d: _truncate(os.path.join(d, VARIABLES_DATA), 10),
    "empty_saved_model": lambda d: _truncate(os.path.join(d, "saved_model.pb"), 0),
    "truncated_catalogue": lambda d: _truncate(
        os.path.join(d, CATALOGUE), os.path.getsize(os.path.join(d, CATALOGUE)) // 2),
}
# What health() says about each damage, with VERSION.json / without it.
REASONS = {
    ("no_variables", True): "variables/variables.data-00000-of-00001 is missing",
    ("no_variables", False): "does not load (",
    ("truncated_variables", True):
        "variables/variables.data-00000-of-00001 has 10 bytes, VERSION.json says",
    ("truncated_variables", False): "does not load (",
    ("empty_saved_model", True): "saved_model.pb has 0 bytes, VERSION.json says",
    ("empty_saved_model", False): "saved_model.pb is empty",
    ("truncated_catalogue", True): "assets.extra/catalogue.jsonl has ",
    ("truncated_catalogue", False): "does not load (ValueError: "
                                    "assets.extra/catalogue.jsonl line ",
}
NO_RELOAD = dict(check_interval=float("inf"), background_reload=False)


# --------------------------------------------------------------------------
# VersionPicker with fake versions and loaders (no TensorFlow).

def _fake_version(model_dir, version, payload="weights", version_file=True):
  d = os.path.join(str(model_dir), str(version))
  os.makedirs(os.path.join(d, "variables"))
  with open(os.path.join(d, "saved_model.pb"), "w") as f:
    f.write("graph")
  with open(os.path.join(d, "variables", "data"), "w") as f:
    f.write(payload)
  if version_file:
    versions.write_version_file(d, os.path.basename(str(model_dir)))
  return d


def test_picker_skips_incomplete_and_unloadable_versions_for_the_newest_good(
    tmp_path, caplog):
  ranking = tmp_path / "ranking"
  for v in (1, 2, 3, 4):
    _fake_version(ranking, v, payload="bad" if v == 3 else "good")
  _truncate(os.path.join(str(ranking), "4", "variables", "data"), 1)
  loads = []

  def load(path):
    loads.append(os.path.basename(path))
    with open(os.path.join(path, "variables", "data")) as f:
      if f.read() != "good":
        raise ValueError(f"cannot parse {path}/variables/data")
    return "model " + os.path.basename(path)

  picker = version_picker.VersionPicker(str(tmp_path), "ranking")
  assert picker.on_disk() == [4, 3, 2, 1]
  with caplog.at_level(logging.WARNING, logger="serving.version_picker"):
    version, loaded, skips = picker.pick(None, load)
  assert (version, loaded) == (2, "model 2")
  assert loads == ["3", "2"]  # 4 is incomplete: never loaded
  assert [str(s) for s in skips] == [
      "ranking version 4 skipped: variables/data has 1 bytes, VERSION.json says 4",
      "ranking version 3 skipped: does not load (ValueError: cannot parse "
      "variables/data)"]
  assert str(tmp_path) not in " ".join(str(s) for s in skips)
  warned = [r.getMessage() for r in caplog.records]
  assert warned == [str(s) for s in skips]
  # Next check: the loaded version is kept, the bad one is not loaded again
  # and not warned about again.
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="serving.version_picker"):
    version, loaded, skips = picker.pick(2, load)
  assert (version, loaded, len(skips)) == (2, version_picker.KEEP, 2)
  assert loads == ["3", "2"] and not caplog.records
  # Rewritten (fixed) in place: loaded again.
  with open(os.path.join(str(ranking), "3", "variables", "data"), "w") as f:
    f.write("good")
  versions.write_version_file(os.path.join(str(ranking), "3"), "ranking")
  version, loaded, skips = picker.pick(2, load)
  assert (version, loaded) == (3, "model 3") and loads[-1] == "3"
  assert [s.version for s in skips] == [4]


def test_picker_with_nothing_usable_and_pinned_versions(tmp_path):
  picker = version_picker.VersionPicker(str(tmp_path), "retrieval")
  assert picker.pick(None, lambda p: p) == (None, None, [])
  _fake_version(tmp_path / "retrieval", 5)
  os.remove(os.path.join(str(tmp_path), "retrieval", "5", "saved_model.pb"))
  version, loaded, skips = picker.pick(None, lambda p: p)
  assert version is None and loaded is None
  assert str(skips[0]) == "retrieval version 5 skipped: saved_model.pb is missing"
  with pytest.raises(errors.RecommenderError, match=r"Pinned retrieval version 5 "
                     r"under .* is not usable: saved_model.pb is missing"):
    picker.load_pinned(5, lambda p: p)
  with pytest.raises(errors.RecommenderError,
                     match=r"Pinned retrieval version 7 not found .*\[5\]"):
    picker.load_pinned(7, lambda p: p)


def test_describe_error_cuts_the_servers_paths(tmp_path):
  vdir = str(tmp_path / "retrieval" / "9")
  text = version_picker.describe_error(OSError(
      f"Unable to open {vdir}/variables/variables.index: see /usr/lib/x/y.so\n"
      "second line"), vdir)
  assert text == ("does not load (OSError: Unable to open variables/variables.index: "
                  "see y.so)")
  assert "/" + "usr" not in text and str(tmp_path) not in text
  assert len(version_picker.describe_error(ValueError("x" * 5000), vdir)) <= 300


def test_check_servable_without_loading(tmp_path):
  from serving import http  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.RecommenderError, match="No complete retrieval model"):
    http.check_servable(str(tmp_path))
  _fake_version(tmp_path / "retrieval", 3)
  d4 = _fake_version(tmp_path / "retrieval", 4)
  _truncate(os.path.join(d4, "saved_model.pb"), 0)
  http.check_servable(str(tmp_path))  # version 3 is complete
  with pytest.raises(errors.RecommenderError,
                     match="retrieval version 4 skipped: saved_model.pb has 0 bytes"):
    http.check_servable(str(tmp_path), version=4)
  with pytest.raises(errors.RecommenderError, match="Pinned retrieval version 8 not found"):
    http.check_servable(str(tmp_path), version=8)


# --------------------------------------------------------------------------
# The Recommender over damaged real versions.

def _good(models, serving, version=1):
  _push(models, serving, "retrieval", version)
  _push(models, serving, "ranking", version)


def _damaged(models, serving, model, version, damage, version_file):
  d = _push(models, serving, model, version, version_file=version_file)
  DAMAGES[damage](d)
  return d


def _assert_degraded(health, model, version, reason, root):
  assert health["status"] == "degraded", health
  assert health["models"][model]["skipped"][str(version)].startswith(reason), health
  assert health["last_reload_error"].startswith(
      f"{model} version {version} skipped: {reason}"), health
  assert str(root) not in json.dumps(health)


@pytest.mark.slow
@pytest.mark.parametrize("version_file", [True, False], ids=["VERSION.json", "legacy"])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_newest_retrieval_is_skipped_at_start(models, tmp_path, damage,
                                                      version_file, caplog):
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  serving = tmp_path / "serving"
  _good(models, serving)
  _damaged(models, serving, "retrieval", 2, damage, version_file)
  with caplog.at_level(logging.WARNING, logger="serving"):
    rec = rec_lib.Recommender(str(serving), **NO_RELOAD)
  res = rec.recommend("1", k=3)
  assert res["model_versions"] == {"retrieval": 1, "ranking": 1} and res["ranked"]
  _assert_degraded(rec.health(), "retrieval", 2, REASONS[damage, version_file],
                   tmp_path)
  assert any("retrieval version 2 skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("version_file", [True, False], ids=["VERSION.json", "legacy"])
@pytest.mark.parametrize("damage", ["no_variables", "truncated_variables",
                                    "empty_saved_model"])
def test_damaged_newest_ranking_is_skipped_at_start(models, tmp_path, damage,
                                                    version_file):
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  serving = tmp_path / "serving"
  _good(models, serving)
  _damaged(models, serving, "ranking", 2, damage, version_file)
  rec = rec_lib.Recommender(str(serving), **NO_RELOAD)
  res = rec.recommend("1", k=3)
  assert res["model_versions"] == {"retrieval": 1, "ranking": 1} and res["ranked"]
  _assert_degraded(rec.health(), "ranking", 2, REASONS[damage, version_file],
                   tmp_path)


@pytest.mark.slow
def test_bad_version_on_reload_keeps_the_loaded_models_and_is_not_retried(
    models, tmp_path, monkeypatch):
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  serving = tmp_path / "serving"
  _good(models, serving)
  rec = rec_lib.Recommender(str(serving), check_interval=0, background_reload=False)
  assert rec.health()["status"] == "ok" and rec.health()["last_reload_error"] is None
  loads = []
  real_load = rec_lib.tf.saved_model.load
  monkeypatch.setattr(rec_lib.tf.saved_model, "load",
                      lambda path, *a, **kw: loads.append(path) or real_load(path, *a, **kw))
  # Pushed before VERSION.json, so only loading shows the damage.
  _damaged(models, serving, "retrieval", 2, "truncated_variables", False)
  _damaged(models, serving, "ranking", 2, "no_variables", False)
  for _ in range(3):
    res = rec.recommend("1", k=3)
    assert res["model_versions"] == {"retrieval": 1, "ranking": 1}
  assert len(loads) == 2, loads  # each bad version was tried once
  health = rec.health()
  _assert_degraded(health, "retrieval", 2, "does not load (", tmp_path)
  assert health["models"]["ranking"]["skipped"]["2"].startswith("does not load (")
  assert health["model_versions"] == {"retrieval": 1, "ranking": 1}
  # A VERSION.json-complete good version above them is picked up: ok again.
  _push(models, serving, "ranking", 3)
  res = rec.recommend("1", k=3)
  assert res["model_versions"] == {"retrieval": 1, "ranking": 3}
  assert rec.health()["models"]["ranking"]["skipped"] == {}
  assert rec.health()["status"] == "degraded"  # retrieval 2 is still bad
  _push(models, serving, "retrieval", 3)
  assert rec.recommend("1", k=3)["model_versions"] == {"retrieval": 3, "ranking": 3}
  assert rec.health()["status"] == "ok" and rec.health()["last_reload_error"] is None


@pytest.mark.slow
def test_background_reload_of_a_damaged_version(models, tmp_path):
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  serving = tmp_path / "serving"
  _good(models, serving)
  rec = rec_lib.Recommender(str(serving), check_interval=0.1)
  try:
    _damaged(models, serving, "retrieval", 2, "truncated_catalogue", False)
    deadline = time.time() + 60
    while rec.health()["status"] == "ok":
      assert time.time() < deadline, "the damaged version was not noticed"
      assert rec.recommend("1", k=2)["model_versions"]["retrieval"] == 1
      time.sleep(0.1)
    assert rec.recommend("1", k=2)["model_versions"]["retrieval"] == 1
    _assert_degraded(rec.health(), "retrieval", 2, REASONS["truncated_catalogue", False],
                     tmp_path)
  finally:
    rec.close()


@pytest.mark.slow
def test_pinned_damaged_or_missing_and_nothing_usable_are_one_sentence(models, tmp_path):
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  serving = tmp_path / "serving"
  _good(models, serving)
  _damaged(models, serving, "retrieval", 2, "empty_saved_model", True)
  with pytest.raises(errors.RecommenderError) as e:
    rec_lib.Recommender(str(serving), version=2, **NO_RELOAD)
  assert str(e.value).startswith("Pinned retrieval version 2 under ")
  assert str(e.value).endswith("is not usable: saved_model.pb has 0 bytes, "
                               f"VERSION.json says "
                               f"{os.path.getsize(os.path.join(models['retrieval'], 'saved_model.pb'))}")
  assert "\n" not in str(e.value)
  with pytest.raises(errors.RecommenderError, match="Pinned retrieval version 7 not found"):
    rec_lib.Recommender(str(serving), version=7, **NO_RELOAD)
  pinned = rec_lib.Recommender(str(serving), version=1, **NO_RELOAD)
  assert pinned.recommend("1", k=2)["model_versions"] == {"retrieval": 1, "ranking": 1}
  # Only damaged versions: no usable retrieval model.
  only_bad = tmp_path / "only_bad"
  _damaged(models, only_bad, "retrieval", 1, "no_variables", False)
  _damaged(models, only_bad, "retrieval", 2, "truncated_variables", True)
  with pytest.raises(errors.RecommenderError) as e:
    rec_lib.Recommender(str(only_bad), **NO_RELOAD)
  message = str(e.value)
  assert message.startswith("No usable retrieval model under ")
  assert "retrieval version 2 skipped: variables/" in message
  assert "retrieval version 1 skipped: does not load" in message


@pytest.mark.slow
def test_allow_empty_answers_unavailable_until_a_good_version_arrives(models, tmp_path):
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  serving = tmp_path / "serving"
  _damaged(models, serving, "retrieval", 1, "empty_saved_model", True)
  rec = rec_lib.Recommender(str(serving), allow_empty=True, check_interval=0,
                            background_reload=False)
  health = rec.health()
  assert health["status"] == "unavailable" and health["model_versions"] == {
      "retrieval": None, "ranking": None}
  assert "retrieval version 1 skipped: saved_model.pb has 0 bytes" in (
      health["last_reload_error"])
  assert str(tmp_path) not in json.dumps(health)
  with pytest.raises(errors.RecommenderError, match="no usable model loaded yet"):
    rec.recommend("1")
  _push(models, serving, "retrieval", 2)
  rec.poll()
  assert rec.health()["status"] == "ok"
  res = rec.recommend("1", k=2)
  assert res["model_versions"] == {"retrieval": 2, "ranking": None}
  assert res["message"] == "no ranking model pushed: items are in retrieval order"


@pytest.mark.slow
def test_only_damaged_ranking_versions_serve_the_retrieval_order(models, tmp_path):
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  serving = tmp_path / "serving"
  _push(models, serving, "retrieval", 1)
  _damaged(models, serving, "ranking", 1, "truncated_variables", True)
  rec = rec_lib.Recommender(str(serving), **NO_RELOAD)
  res = rec.recommend("1", k=3)
  assert res["model_versions"] == {"retrieval": 1, "ranking": None}
  assert not res["ranked"] and "no usable ranking model" in res["message"]
  _assert_degraded(rec.health(), "ranking", 1, REASONS["truncated_variables", True],
                   tmp_path)


@pytest.mark.slow
def test_healthz_reports_the_skipped_version(models, tmp_path):
  from fastapi.testclient import TestClient  # pylint: disable=g-import-not-at-top
  from serving import http  # pylint: disable=g-import-not-at-top
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  serving = tmp_path / "serving"
  _good(models, serving)
  rec = rec_lib.Recommender(str(serving), check_interval=0, background_reload=False)
  with TestClient(http.create_app(rec)) as client:
    ok = client.get("/healthz")
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    assert "serving_dir" not in ok.json()
    _damaged(models, serving, "retrieval", 2, "truncated_variables", True)
    health = client.get("/healthz")  # polls: notices version 2
    assert health.status_code == 200
    _assert_degraded(health.json(), "retrieval", 2,
                     REASONS["truncated_variables", True], tmp_path)
    r = client.get("/recommend", params={"user_id": "1", "k": 2})
    assert r.status_code == 200 and r.json()["model_versions"]["retrieval"] == 1
