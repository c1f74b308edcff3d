"""A TFX Tuner that also takes the raw examples and the movie catalogue.

Each trial of trainer_modules/tuning.py trains with the stage's run_fn and
scores the EXPORTED model the way its evaluator does: through its serving
signatures, which take raw tf.Examples. The stock Tuner only gets the
transformed examples, so `CatalogueTuner` is the stock Tuner with two more
(optional) inputs, as components/catalogue_trainer.py does for the Trainer:

* `raw_examples`: the ingested examples (train/eval splits) → the FnArgs
  given to tuner_fn get `raw_train_files` / `raw_eval_files` (file patterns
  of the same splits as train_args / eval_args) and
  `custom_config["raw_examples_uri"]`;
* `catalogue` (retrieval: every movie, rated or not) → `fn_args.catalogue_uri`
  and `custom_config["catalogue_uri"]`, exactly as CatalogueTrainer sets them
  for the retrieval run_fn.

The outputs are the stock Tuner's (`best_hyperparameters`, a KerasTuner
HyperParameters config, and `tuner_results`), so a Trainer takes
`hyperparameters=tuner.outputs["best_hyperparameters"]` as usual.

Usage:
  CatalogueTuner(examples=transform.outputs["transformed_examples"],
                 transform_graph=transform.outputs["transform_graph"],
                 raw_examples=example_gen.outputs["examples"],
                 catalogue=example_gen.outputs["catalogue"],
                 tuner_fn="trainer_modules.tuning.retrieval_tuner_fn",
                 custom_config=..., max_trials=8)
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import common  # noqa: F401  pylint: disable=unused-import
from tfx import types
from tfx.components import Tuner
from tfx.components.trainer import fn_args_utils
from tfx.components.tuner import executor as tuner_executor
from tfx.components.util import udf_utils
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.proto import trainer_pb2
from tfx.proto import tuner_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils
from tfx.utils import json_utils
from tfx.utils import proto_utils

from components import catalogue_trainer

RAW_EXAMPLES_KEY = "raw_examples"
# custom_config key: trials of the search (read by trainer_modules/tuning.py).
MAX_TRIALS_KEY = "tuner_max_trials"
RAW_EXAMPLES_URI = "raw_examples_uri"
CATALOGUE_KEY = catalogue_trainer.CATALOGUE_KEY
CATALOGUE_URI = catalogue_trainer.CATALOGUE_URI


class CatalogueTunerSpec(standard_component_specs.TunerSpec):
  """TunerSpec plus the optional `raw_examples` and `catalogue` inputs."""

  INPUTS = dict(standard_component_specs.TunerSpec.INPUTS)
  INPUTS[RAW_EXAMPLES_KEY] = ChannelParameter(type=standard_artifacts.Examples,
                                              optional=True)
  INPUTS[CATALOGUE_KEY] = ChannelParameter(type=standard_artifacts.Examples,
                                           optional=True)


def _split_patterns(artifacts: List[types.Artifact], splits) -> List[str]:
  return [io_utils.all_files_pattern(uri) for split in splits
          for uri in artifact_utils.get_split_uris(artifacts, split)]


def fn_args_for(input_dict: Dict[str, List[types.Artifact]],
                exec_properties: Dict[str, Any],
                working_dir: str) -> fn_args_utils.FnArgs:
  """The stock Tuner's FnArgs plus the raw example files and the catalogue."""
  fn_args = fn_args_utils.get_common_fn_args(input_dict, exec_properties,
                                             working_dir)
  custom_config = dict(fn_args.custom_config or {})
  raw = input_dict.get(RAW_EXAMPLES_KEY)
  fn_args.raw_train_files, fn_args.raw_eval_files = [], []
  if raw:
    train_args, eval_args = trainer_pb2.TrainArgs(), trainer_pb2.EvalArgs()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.TRAIN_ARGS_KEY], train_args)
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.EVAL_ARGS_KEY], eval_args)
    fn_args.raw_train_files = _split_patterns(raw, train_args.splits or ["train"])
    fn_args.raw_eval_files = _split_patterns(raw, eval_args.splits or ["eval"])
    custom_config[RAW_EXAMPLES_URI] = artifact_utils.get_single_uri(raw)
  fn_args.catalogue_uri = None
  if input_dict.get(CATALOGUE_KEY):
    fn_args.catalogue_uri = catalogue_trainer.catalogue_uri(input_dict[CATALOGUE_KEY])
    custom_config[CATALOGUE_URI] = fn_args.catalogue_uri
  fn_args.custom_config = custom_config
  return fn_args


class CatalogueTunerExecutor(tuner_executor.Executor):
  """The stock Tuner executor, with fn_args_for()'s FnArgs."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    if tuner_executor.get_tune_args(exec_properties):
      raise ValueError("TuneArgs (parallel trials) is not supported by "
                       "CatalogueTuner: trials run one after the other.")
    fn_args = fn_args_for(input_dict, exec_properties, self._get_tmp_dir())
    # As tfx.components.tuner.executor.search(), with these FnArgs.
    result = udf_utils.get_fn(exec_properties, "tuner_fn")(fn_args)
    tuner = result.tuner
    tuner.search_space_summary()
    tuner.search(**result.fit_kwargs)
    tuner.results_summary()
    tuner_executor.write_best_hyperparameters(tuner, output_dict)


class CatalogueTuner(Tuner):
  """The stock Tuner with `raw_examples` / `catalogue` inputs (see above)."""

  SPEC_CLASS = CatalogueTunerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(CatalogueTunerExecutor)

  def __init__(  # pylint: disable=super-init-not-called
      self,
      examples: types.BaseChannel,
      tuner_fn: str,
      transform_graph: Optional[types.BaseChannel] = None,
      raw_examples: Optional[types.BaseChannel] = None,
      catalogue: Optional[types.BaseChannel] = None,
      schema: Optional[types.BaseChannel] = None,
      train_args: Optional[trainer_pb2.TrainArgs] = None,
      eval_args: Optional[trainer_pb2.EvalArgs] = None,
      tune_args: Optional[tuner_pb2.TuneArgs] = None,
      custom_config: Optional[Dict[str, Any]] = None,
      max_trials: Optional[int] = None):
    """As the stock Tuner; max_trials (when set) goes to custom_config[MAX_TRIALS_KEY]."""
    if not tuner_fn:
      raise ValueError("CatalogueTuner needs 'tuner_fn' (an import path).")
    if max_trials is not None:
      if int(max_trials) < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials}")
      custom_config = dict(custom_config or {}, **{MAX_TRIALS_KEY: int(max_trials)})
    spec = CatalogueTunerSpec(
        examples=examples,
        schema=schema,
        transform_graph=transform_graph,
        raw_examples=raw_examples,
        catalogue=catalogue,
        tuner_fn=tuner_fn,
        train_args=train_args or trainer_pb2.TrainArgs(),
        eval_args=eval_args or trainer_pb2.EvalArgs(),
        tune_args=tune_args,
        best_hyperparameters=types.Channel(type=standard_artifacts.HyperParameters),
        tuner_results=types.Channel(type=standard_artifacts.TunerResults),
        custom_config=json_utils.dumps(custom_config))
    # Tuner.__init__ hard-codes TunerSpec; build the component directly.
    base_component.BaseComponent.__init__(self, spec=spec)
