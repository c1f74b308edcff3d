"""A TFX Trainer that also takes the movie catalogue as a real input channel.

The retrieval trainer must index EVERY movie (rated or not), which is the
`catalogue` output of ingestion (an Examples artifact with split
`catalogue`). Passing a channel through `custom_config` does not work: under
LocalDagRunner such channels arrive empty (tfx#5885). So `CatalogueTrainer`
is the stock Trainer with one more input, `catalogue`, and its executor puts
the catalogue artifact's URI into the FnArgs given to run_fn:

* `fn_args.catalogue_uri`: the artifact URI (files under
  `<uri>/Split-catalogue/`);
* `fn_args.custom_config["catalogue_uri"]`: the same, for run_fns that only
  look at custom_config.

Usage:
  CatalogueTrainer(examples=transform.outputs["transformed_examples"],
                   transform_graph=transform.outputs["transform_graph"],
                   catalogue=ingestion.outputs["catalogue"],
                   run_fn="trainer_modules.retrieval.run_fn", ...)
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import common  # noqa: F401  pylint: disable=unused-import
from tfx import types
from tfx.components import Trainer
from tfx.components.trainer import executor as trainer_executor
from tfx.components.trainer import fn_args_utils
from tfx.components.util import udf_utils
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from common import catalogue as catalogue_lib

CATALOGUE_KEY = "catalogue"
CATALOGUE_SPLIT = catalogue_lib.CATALOGUE_SPLIT
CATALOGUE_URI = "catalogue_uri"


class CatalogueTrainerSpec(standard_component_specs.TrainerSpec):
  """TrainerSpec plus the `catalogue` Examples input."""

  INPUTS = dict(standard_component_specs.TrainerSpec.INPUTS)
  INPUTS[CATALOGUE_KEY] = ChannelParameter(type=standard_artifacts.Examples)


def catalogue_uri(artifacts: List[types.Artifact]) -> str:
  """The URI of the (single) catalogue artifact."""
  return artifact_utils.get_single_uri(artifacts)


class CatalogueExecutor(trainer_executor.GenericExecutor):
  """GenericExecutor that hands the catalogue artifact's URI to run_fn."""

  def _GetFnArgs(self, input_dict: Dict[str, List[types.Artifact]],
                 output_dict: Dict[str, List[types.Artifact]],
                 exec_properties: Dict[str, Any]) -> fn_args_utils.FnArgs:
    fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
    uri = catalogue_uri(input_dict[CATALOGUE_KEY])
    fn_args.catalogue_uri = uri
    custom_config = dict(fn_args.custom_config or {})
    custom_config[CATALOGUE_URI] = uri
    fn_args.custom_config = custom_config
    return fn_args


class CatalogueTrainer(Trainer):
  """The stock Trainer with a `catalogue` input (see the module docstring)."""

  SPEC_CLASS = CatalogueTrainerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(CatalogueExecutor)

  def __init__(  # pylint: disable=super-init-not-called
      self,
      examples: types.BaseChannel,
      catalogue: types.BaseChannel,
      transform_graph: Optional[types.BaseChannel] = None,
      schema: Optional[types.BaseChannel] = None,
      base_model: Optional[types.BaseChannel] = None,
      hyperparameters: Optional[types.BaseChannel] = None,
      module_file: Optional[Union[str, data_types.RuntimeParameter]] = None,
      run_fn: Optional[Union[str, data_types.RuntimeParameter]] = None,
      train_args: Optional[Union[trainer_pb2.TrainArgs,
                                 data_types.RuntimeParameter]] = None,
      eval_args: Optional[Union[trainer_pb2.EvalArgs,
                                data_types.RuntimeParameter]] = None,
      custom_config: Optional[Union[Dict[str, Any],
                                    data_types.RuntimeParameter]] = None):
    if [bool(module_file), bool(run_fn)].count(True) != 1:
      raise ValueError("Exactly one of 'module_file', or 'run_fn' must be supplied.")
    if examples is None or catalogue is None:
      raise ValueError("CatalogueTrainer needs both 'examples' and 'catalogue'.")
    spec = CatalogueTrainerSpec(
        examples=examples,
        catalogue=catalogue,
        transform_graph=transform_graph,
        schema=schema,
        base_model=base_model,
        hyperparameters=hyperparameters,
        train_args=train_args or trainer_pb2.TrainArgs(),
        eval_args=eval_args or trainer_pb2.EvalArgs(),
        module_file=module_file,
        run_fn=run_fn,
        custom_config=(custom_config
                       if isinstance(custom_config, data_types.RuntimeParameter)
                       else json_utils.dumps(custom_config)),
        model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun))
    # Trainer.__init__ hard-codes TrainerSpec; build the component directly.
    base_component.BaseComponent.__init__(self, spec=spec)
    if module_file and udf_utils.should_package_user_modules():
      # As Trainer does: the packaged module replaces module_file.
      udf_utils.add_user_module_dependency(
          self, standard_component_specs.MODULE_FILE_KEY,
          standard_component_specs.MODULE_PATH_KEY)
