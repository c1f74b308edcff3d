"""ServingPusher: atomic pushes and the served blessing the resolvers read."""
import json
import os

import pytest
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from common import versions
from components import blessing_stage
from components import serving_pusher


def _artifact(cls, uri, id_):
  a = cls()
  a.uri = uri
  a.id = id_
  os.makedirs(uri, exist_ok=True)
  return a


def _inputs(tmp_path, blessed=True, name="m1"):
  model = _artifact(standard_artifacts.Model, str(tmp_path / name), 11)
  serving = os.path.join(model.uri, "Format-Serving")
  os.makedirs(os.path.join(serving, "variables"))
  with open(os.path.join(serving, "saved_model.pb"), "wb") as f:
    f.write(b"graph" * 20)
  with open(os.path.join(serving, "variables", "variables.index"), "wb") as f:
    f.write(b"index")
  blessing = _artifact(standard_artifacts.ModelBlessing, str(tmp_path / f"b-{name}"), 12)
  blessing.set_int_custom_property("blessed", 1 if blessed else 0)
  return {"model": [model], "model_blessing": [blessing]}


def _run(tmp_path, inputs, model_dir):
  pushed = _artifact(standard_artifacts.PushedModel, str(tmp_path / "pushed"), 21)
  served = _artifact(standard_artifacts.ModelBlessing, str(tmp_path / "served"), 22)
  props = {
      "push_destination": proto_utils.proto_to_json(pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=model_dir))),
      "custom_config": json.dumps(None),
      "blessing_stage": versions.RANKING,
  }
  serving_pusher.Executor().Do(inputs, {"pushed_model": [pushed],
                                        "served_blessing": [served]}, props)
  return pushed, served


def test_a_blessed_model_is_pushed_whole_and_recorded_as_served(tmp_path):
  model_dir = str(tmp_path / "serving" / "ranking")
  inputs = _inputs(tmp_path)
  pushed, served = _run(tmp_path, inputs, model_dir)
  [version] = versions.version_dirs(model_dir)[0]
  assert pushed.get_int_custom_property("pushed") == 1
  assert pushed.get_string_custom_property("pushed_version") == str(version)
  info = versions.read_version_file(os.path.join(model_dir, str(version)))
  assert info["source"] == inputs["model"][0].uri
  assert blessing_stage.is_blessed(served)
  assert served.get_string_custom_property("blessing_stage") == "ranking_served"
  assert served.get_int_custom_property("current_model_id") == 11


def test_an_unblessed_model_is_not_pushed_and_not_served(tmp_path):
  model_dir = str(tmp_path / "serving" / "ranking")
  pushed, served = _run(tmp_path, _inputs(tmp_path, blessed=False), model_dir)
  assert pushed.get_int_custom_property("pushed") == 0
  assert not blessing_stage.is_blessed(served)
  assert not os.path.exists(model_dir)


def test_a_push_killed_before_its_rename_is_redone_by_the_next_run(tmp_path, monkeypatch):
  model_dir = str(tmp_path / "serving" / "ranking")
  inputs = _inputs(tmp_path)
  real_rename = os.rename

  def killed(*_):
    raise KeyboardInterrupt("kill -9")
  monkeypatch.setattr(versions.os, "rename", killed)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, inputs, model_dir)
  monkeypatch.setattr(versions.os, "rename", real_rename)
  assert versions.version_dirs(model_dir) == ([], [])  # nothing torn is visible
  _, served = _run(tmp_path, inputs, model_dir)
  assert len(versions.version_dirs(model_dir)[0]) == 1
  assert blessing_stage.is_blessed(served)


def test_a_push_renamed_but_not_recorded_is_recorded_not_pushed_again(tmp_path):
  model_dir = str(tmp_path / "serving" / "ranking")
  inputs = _inputs(tmp_path)
  first, _ = _run(tmp_path, inputs, model_dir)
  # The run died after the rename: MLMD never saw `first`; the rerun finds it.
  again, _ = _run(tmp_path, inputs, model_dir)
  assert len(versions.version_dirs(model_dir)[0]) == 1
  assert (again.get_string_custom_property("pushed_version")
          == first.get_string_custom_property("pushed_version"))
  # A different model is a new version.
  other, _ = _run(tmp_path, _inputs(tmp_path, name="m2"), model_dir)
  assert other.get_string_custom_property("pushed_version") != (
      first.get_string_custom_property("pushed_version"))
  assert len(versions.version_dirs(model_dir)[0]) == 2


def test_stale_hidden_push_folders_are_removed(tmp_path):
  model_dir = str(tmp_path / "ranking")
  old = os.path.join(model_dir, versions.PUSHING_PREFIX + "5-1")
  young = os.path.join(model_dir, versions.PUSHING_PREFIX + "6-2")
  os.makedirs(old)
  os.makedirs(young)
  os.utime(old, (0, 0))
  src = _inputs(tmp_path)["model"][0].uri + "/Format-Serving"
  serving_pusher.push(src, model_dir, versions.RANKING, "m")
  names = os.listdir(model_dir)
  assert os.path.basename(old) not in names  # a killed push, hours ago
  assert os.path.basename(young) in names    # maybe another runner's live push


def test_the_served_blessing_names_the_model_as_the_evaluators_blessing_does(tmp_path):
  """On KFP v2 an evaluator's current_model_id is the Model's runtime name
  (a string the compiled model query matches); the served blessing copies it."""
  inputs = _inputs(tmp_path)
  inputs["model_blessing"][0].set_string_custom_property("current_model_id",
                                                         "artifacts/12")
  _, served = _run(tmp_path, inputs, str(tmp_path / "serving" / "ranking"))
  assert served.get_string_custom_property("current_model_id") == "artifacts/12"

