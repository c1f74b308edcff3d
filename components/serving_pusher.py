"""ServingPusher: TFX's Pusher, made atomic, recording what is actually served.

Two failures of the stock filesystem Pusher in a retraining loop:

* it copies the model straight into `<base>/<version>/`, so a kill during
  the copy leaves a torn version folder that serving may pick up as the
  newest;
* the next run's baseline (what the evaluators compare against and the
  trainers warm-start from) is the latest *blessed* model. When a run is
  killed after its evaluator blessed a model but before the push finished,
  every later run compares against a model that was never served: a worse
  candidate can pass, a better one can fail, and nothing repairs the serving
  folder.

This component keeps the Pusher's inputs, parameters, `pushed_model` output
and blessing check (it subclasses TFX's executor), and changes two things:

1. The copy goes through `common.versions.publish`: into a hidden folder
   beside the versions, VERSION.json (every file with its size) written
   last, then one rename to the version number. A version is there whole or
   not at all; leftovers of a killed push are removed by the next push.
2. A second output, `served_blessing`: a ModelBlessing that says blessed
   only when the model was pushed (tagged `blessing_stage=<stage>_served`,
   `components.blessing_stage.served_stage`). The stage's baseline resolver
   reads it (pipeline/retrieval_branch.py, ranking_branch.py), so the
   baseline is the model actually served. After a kill during a push the
   next run resolves the same baseline as the killed run, its trainer and
   evaluators are served from the TFX cache, and only this Pusher — whose
   execution never completed — runs again and finishes the push.

A push that was renamed into place but not recorded in ML Metadata (a kill
between the two) is found by its source model URI in VERSION.json and
recorded, not pushed twice.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import channel
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils

from common import versions
from components import blessing_stage

SERVED_BLESSING_KEY = "served_blessing"
BLESSING_STAGE_KEY = "blessing_stage"
# Hidden push folders older than this are leftovers of a killed push (a
# live push of another runner writing to the same folder is younger).
STALE_PUSH_SECONDS = 6 * 3600


class ServingPusherSpec(standard_component_specs.PusherSpec):
  """PusherSpec plus the stage and the served-blessing output."""
  PARAMETERS = {
      **standard_component_specs.PusherSpec.PARAMETERS,
      BLESSING_STAGE_KEY: component_spec.ExecutionParameter(type=str),
  }
  OUTPUTS = {
      **standard_component_specs.PusherSpec.OUTPUTS,
      SERVED_BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing),
  }


class Executor(pusher_executor.Executor):
  """Pushes a blessed model as a whole new version (module docstring)."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    pushed = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    served = artifact_utils.get_single_instance(output_dict[SERVED_BLESSING_KEY])
    model = artifact_utils.get_single_instance(
        input_dict[standard_component_specs.MODEL_KEY])
    stage = exec_properties[BLESSING_STAGE_KEY]
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(pushed)
      blessing_stage.write_blessing(
          served, model, False, "not pushed: the model was not blessed",
          blessing_stage.served_stage(stage))
      return
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
    if destination.WhichOneof("destination") != "filesystem":
      raise ValueError("ServingPusher pushes to a filesystem destination only")
    model_dir = destination.filesystem.base_directory
    path, version = push(self.GetModelPath(input_dict), model_dir, stage, model.uri)
    self._MarkPushed(pushed, pushed_destination=path, pushed_version=str(version))
    blessing_stage.write_blessing(
        served, model, True, f"served as {stage} version {version}",
        blessing_stage.served_stage(stage))
    _name_model_as_the_evaluator_did(served, input_dict)


def _name_model_as_the_evaluator_did(served: types.Artifact,
                                     input_dict: Dict[str, List[types.Artifact]]
                                     ) -> None:
  """Copies current_model_id from the evaluator's blessing, as it was written.

  Locally it is the Model's MLMD id (what write_blessing set already). On
  KFP v2 TFX's container entrypoint rewrites it to the Model's runtime name
  ("artifacts/12", which the compiled model query matches) only for outputs
  named "blessing" of Evaluator subclasses, so a Pusher's own output would
  keep a hashed number no query finds: the evaluator's value is the right one.
  """
  key = evaluator_constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY
  blessing = artifact_utils.get_single_instance(
      input_dict[standard_component_specs.MODEL_BLESSING_KEY])
  if not blessing.has_custom_property(key):
    return
  value = blessing.get_custom_property(key)
  if isinstance(value, str):
    served.set_string_custom_property(key, value)
  elif isinstance(value, (int, float)) and float(value).is_integer():
    served.set_int_custom_property(key, int(value))


def push(model_path: str, model_dir: str, model_name: str, source_uri: str,
         clock=None) -> tuple:
  """Publishes model_path as a new version of model_dir; (path, version).

  Reuses a version already published from source_uri (see module doc).
  """
  if versions.is_local(model_dir):
    stale = [p for p in _hidden_push_dirs(model_dir)
             if _age_seconds(p, clock) > STALE_PUSH_SECONDS]
    for p in stale:
      logging.warning("Removing %s: left by a push that was killed", p)
      io_utils.delete_dir(p)
    existing = versions.find_published(model_dir, model_name, source_uri)
    if existing is not None:
      logging.info("%s version %d already holds %s (pushed by an interrupted "
                   "run): recording it, not pushing again", model_name, existing,
                   source_uri)
      return os.path.join(model_dir, str(existing)), existing
  version = versions.next_version(model_dir, **({"clock": clock} if clock else {}))
  path = versions.publish(model_path, model_dir, version, model_name,
                          source=source_uri, copy_dir=io_utils.copy_dir)
  logging.info("Pushed %s version %d to %s", model_name, version, path)
  return path, version


def _hidden_push_dirs(model_dir: str) -> List[str]:
  try:
    names = os.listdir(model_dir)
  except OSError:
    return []
  return [os.path.join(model_dir, n) for n in names
          if n.startswith(versions.PUSHING_PREFIX)]


def _age_seconds(path: str, clock=None) -> float:
  now = clock() if clock else datetime.datetime.now().timestamp()
  try:
    return now - os.path.getmtime(path)
  except OSError:
    return 0.0


class ServingPusher(base_component.BaseComponent):
  """Pushes a blessed model atomically and records the served model.

  Inputs and outputs as tfx.components.Pusher (model, model_blessing →
  pushed_model) plus `served_blessing` (module docstring).
  """
  SPEC_CLASS = ServingPusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
               model_dir: str, stage: str,
               custom_config: Optional[Dict[str, Any]] = None):
    """model_dir: `<serving_dir>/<stage>`; versions go to `<model_dir>/<n>`.

    stage: "retrieval" or "ranking" (common.versions.MODELS).
    """
    spec = ServingPusherSpec(
        model=model,
        model_blessing=model_blessing,
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(
                base_directory=model_dir)),
        custom_config=custom_config,
        blessing_stage=stage,
        pushed_model=channel.Channel(type=standard_artifacts.PushedModel),
        served_blessing=channel.Channel(type=standard_artifacts.ModelBlessing))
    super().__init__(spec=spec)
