"""Tuner (trainer_modules/tuning.py, components/catalogue_tuner.py).

A 2-trial search per stage through CatalogueTuner's executor Do() with real
artifacts on the tiny Transform fixture, then that stage's Trainer executor
given the best_hyperparameters artifact: the values must be what the Trainer
trained with (retrieval: the export's manifest config; ranking: the
embedding width of the SavedModel's variables). Plus the search space,
configs.hyperparameter_values() and create_pipeline(tune=...) wiring.
"""
import json
import os
import types as pytypes

import pytest
import tensorflow as tf
from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_executor
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts
from tfx.utils import json_utils
from tfx.utils import proto_utils

from components import catalogue_trainer
from components import catalogue_tuner
from pipeline import pipeline as pipeline_lib
from tests import synthetic_data
from trainer_modules import configs
from trainer_modules import retrieval
from trainer_modules import retrieval_export
from trainer_modules import tuning

TRAIN_STEPS = 20  # per trial and for the final training (overrides epochs)
RETRIEVAL_CONFIG = {"batch_size": 256, "verbose": 0, "seed": 1, "embedding_dim": 16}
RANKING_CONFIG = {"batch_size": 64, "seed": 1, "embedding_dim": 16}
# Widths the defaults never use, so the final model shows where its came from.
RETRIEVAL_SPACE = {"embedding_dim": [8, 24], "learning_rate": [0.003, 0.03],
                   "epochs": None, "temperature": None}
RANKING_SPACE = {"embedding_dim": [8, 12], "learning_rate": [0.001, 0.01],
                 "l2": None, "epochs": None, "dropout": None}


def _artifact(cls, uri, splits=None):
  a = cls()
  a.uri = uri
  if splits is not None:
    a.split_names = json.dumps(splits)
  return a


def _root(pattern):
  """Examples artifact URI of a '<uri>/Split-x/*' pattern."""
  return os.path.dirname(os.path.dirname(pattern))


def _common_inputs(tiny):
  return {
      "examples": [_artifact(standard_artifacts.Examples,
                             _root(tiny["train_pattern"]), ["train", "eval"])],
      "transform_graph": [_artifact(standard_artifacts.TransformGraph,
                                    tiny["tft_dir"])],
  }


def _props(fn_key, fn, config):
  return {
      "train_args": proto_utils.proto_to_json(
          trainer_pb2.TrainArgs(num_steps=TRAIN_STEPS)),
      "eval_args": proto_utils.proto_to_json(trainer_pb2.EvalArgs()),
      fn_key: fn,
      "custom_config": json_utils.dumps(config),
  }


def _search(tiny, out_dir, tuner_fn, config, catalogue: bool):
  """CatalogueTuner's executor on the tiny data: its two output dirs."""
  inputs = _common_inputs(tiny)
  inputs["raw_examples"] = [_artifact(standard_artifacts.Examples,
                                      _root(tiny["raw_train_pattern"]),
                                      ["train", "eval"])]
  if catalogue:
    inputs["catalogue"] = [_artifact(standard_artifacts.Examples,
                                     _root(tiny["catalogue_pattern"]), ["catalogue"])]
  outputs = {
      "best_hyperparameters": [_artifact(standard_artifacts.HyperParameters,
                                         os.path.join(out_dir, "best_hp"))],
      "tuner_results": [_artifact(standard_artifacts.TunerResults,
                                  os.path.join(out_dir, "results"))],
  }
  for a in outputs.values():
    os.makedirs(a[0].uri)
  context = base_executor.BaseExecutor.Context(
      tmp_dir=os.path.join(out_dir, "tmp"), unique_id="1")
  catalogue_tuner.CatalogueTunerExecutor(context).Do(
      inputs, outputs, _props("tuner_fn", tuner_fn, config))
  best = json.load(open(os.path.join(outputs["best_hyperparameters"][0].uri,
                                     "best_hyperparameters.txt")))
  results = json.load(open(os.path.join(outputs["tuner_results"][0].uri,
                                        "tuner_results.json")))
  return {"best_artifact": outputs["best_hyperparameters"], "best": best,
          "results": results, "working_dir": context.get_tmp_path()}


def _train(tiny, out_dir, executor, run_fn, config, hyperparameters, catalogue):
  inputs = _common_inputs(tiny)
  inputs["hyperparameters"] = hyperparameters
  if catalogue:
    inputs["catalogue"] = [_artifact(standard_artifacts.Examples,
                                     _root(tiny["catalogue_pattern"]), ["catalogue"])]
  outputs = {
      "model": [_artifact(standard_artifacts.Model, os.path.join(out_dir, "model"))],
      "model_run": [_artifact(standard_artifacts.ModelRun,
                              os.path.join(out_dir, "model_run"))],
  }
  executor.Do(inputs, outputs, _props("run_fn", run_fn, config))
  return os.path.join(outputs["model"][0].uri, "Format-Serving")


def _check_search(search, space, objective_range):
  """Two completed trials, in the space, and the best is the highest score."""
  results = search["results"]
  assert len(results) == 2
  for r in results:
    lo, hi = objective_range
    assert lo < r["score"] <= hi
    for key, choices in space.items():
      if choices is not None:
        assert r[key] in choices
  # Not the same configuration twice.
  assert len({tuple(sorted((k, r[k]) for k in space if space[k])) for r in results}) == 2
  best = max(results, key=lambda r: r["score"])
  values = search["best"]["values"]
  assert {k: values[k] for k in values} == {k: best[k] for k in values}
  # Trials' exports are deleted; KerasTuner state is under the working dir.
  assert os.path.isdir(os.path.join(search["working_dir"], "keras_tuner"))
  assert not os.listdir(os.path.join(search["working_dir"], "trials"))
  return values


@pytest.mark.slow
def test_retrieval_search_and_best_values_reach_the_trainer(tiny_transformed,
                                                            tmp_path):
  config = dict(RETRIEVAL_CONFIG, tuner_max_trials=2,
                tuner_search_space=RETRIEVAL_SPACE)
  search = _search(tiny_transformed, str(tmp_path / "tune"),
                   "trainer_modules.tuning.retrieval_tuner_fn", config, catalogue=True)
  values = _check_search(search, RETRIEVAL_SPACE, (0.0, 1.0))
  assert set(values) == {"embedding_dim", "learning_rate"}

  serving = _train(tiny_transformed, str(tmp_path / "train"),
                   catalogue_trainer.CatalogueExecutor(),
                   "trainer_modules.retrieval.run_fn", RETRIEVAL_CONFIG,
                   search["best_artifact"], catalogue=True)
  manifest = json.load(open(os.path.join(serving, "assets.extra",
                                         retrieval_export.MANIFEST_FILE)))
  # The tuned values win over custom_config's embedding_dim 16.
  for key, value in values.items():
    assert manifest["config"][key] == value
  # ... and the export still has the signatures the evaluator needs.
  loaded = tf.saved_model.load(serving)
  assert {"query_embedding", "candidate_embedding"} <= set(loaded.signatures)


@pytest.mark.slow
def test_ranking_search_and_best_values_reach_the_trainer(tiny_transformed,
                                                          tmp_path):
  config = dict(RANKING_CONFIG, tuner_max_trials=2, tuner_search_space=RANKING_SPACE)
  search = _search(tiny_transformed, str(tmp_path / "tune"),
                   "trainer_modules.tuning.ranking_tuner_fn", config, catalogue=False)
  values = _check_search(search, RANKING_SPACE, (-5.0, 0.0))  # -RMSE
  assert set(values) == {"embedding_dim", "learning_rate"}

  serving = _train(tiny_transformed, str(tmp_path / "train"),
                   trainer_executor.GenericExecutor(),
                   "trainer_modules.ranking.run_fn", RANKING_CONFIG,
                   search["best_artifact"], catalogue=False)
  # The exported variables, by checkpoint name (the export has no Keras
  # metadata: model_parts.save_signatures).
  shapes = tf.train.load_checkpoint(
      os.path.join(serving, "variables", "variables")).get_variable_to_shape_map()
  widths = {shape[-1] for name, shape in shapes.items()
            if name.startswith("model/user_encoder/") and "embeddings" in name
            and "OPTIMIZER" not in name and len(shape) == 2}
  assert widths
  # The id embeddings have the tuned width, not custom_config's 16.
  assert values["embedding_dim"] in widths
  assert RANKING_CONFIG["embedding_dim"] not in widths
  # The objective is the -RMSE of serving_default on the raw eval split.
  score = tuning.ranking_objective(serving, [tiny_transformed["raw_eval_pattern"]])
  assert -2.0 < score < 0.0


# --------------------------------------------------------------------------
# Pieces.

def test_search_space_merges_overrides_and_rejects_unknown_keys():
  hps = tuning.search_space(
      "retrieval",
      {"embedding_dim": [32, 64], "learning_rate": {"min": 1e-3, "max": 1e-1,
                                                     "sampling": "log"},
       "epochs": {"min": 2, "max": 4}},
      overrides={"epochs": None, "l2": 0.5})
  by_name = {h.name: h for h in hps.space}
  assert set(by_name) == {"embedding_dim", "learning_rate", "l2"}
  assert list(by_name["embedding_dim"].values) == [32, 64]
  assert by_name["learning_rate"].sampling == "log"
  assert type(by_name["l2"]).__name__ == "Fixed" and by_name["l2"].value == 0.5
  ints = tuning.search_space("ranking", {"epochs": {"min": 2, "max": 4}})
  assert type(ints.space[0]).__name__ == "Int"
  # A key that is not a hyperparameter used to be skipped with a warning.
  with pytest.raises(configs.ConfigError,
                     match="^retrieval config: tuner_search_space: embeding_dim: "
                     "unknown key; did you mean embedding_dim\\? allowed: .*epochs"):
    tuning.search_space("retrieval", tuning.RETRIEVAL_SEARCH_SPACE,
                        {"embeding_dim": [8, 16]})
  for not_searchable in ("gone", "warm_start", "tuner_max_trials"):
    with pytest.raises(configs.ConfigError, match=f"{not_searchable}: unknown key"):
      tuning.search_space("ranking", {"epochs": [1, 2], not_searchable: [1]})
  with pytest.raises(configs.ConfigError, match="dropout choice should be less than 1"):
    tuning.search_space("ranking", {"dropout": [0.1, 1.0]})
  with pytest.raises(configs.ConfigError, match="empty search space"):
    tuning.search_space("ranking", {"epochs": [1, 2]}, {"epochs": None})


def test_default_search_spaces_fit_the_trainers():
  for kind, space in (("retrieval", tuning.RETRIEVAL_SEARCH_SPACE),
                      ("ranking", tuning.RANKING_SEARCH_SPACE)):
    names = {h.name for h in tuning.search_space(kind, space).space}
    assert {"learning_rate", "epochs", "embedding_dim"} <= names


def test_hyperparameter_values_and_retrieval_config():
  config = {"space": [{"class_name": "Choice", "config": {
      "name": "embedding_dim", "default": 8, "values": [8, 24], "ordered": True,
      "conditions": []}}], "values": {"embedding_dim": 24}}
  fn_args = pytypes.SimpleNamespace(custom_config={"embedding_dim": 16, "epochs": 2},
                                    hyperparameters=config)
  assert configs.hyperparameter_values(fn_args) == {"embedding_dim": 24}
  cfg = retrieval.get_config(fn_args)
  assert cfg["embedding_dim"] == 24 and cfg["epochs"] == 2  # custom_config < tuned
  fn_args.hyperparameters = json.dumps({"epochs": 7})  # plain values, as JSON
  assert configs.hyperparameter_values(fn_args) == {"epochs": 7}
  for empty in (None, {}):
    fn_args.hyperparameters = empty
    assert configs.hyperparameter_values(fn_args) == {}
  assert configs.hyperparameter_values(pytypes.SimpleNamespace()) == {}
  assert retrieval.get_config(fn_args)["embedding_dim"] == 16


def test_trial_fn_args_copy():
  fn_args = pytypes.SimpleNamespace(
      custom_config={"epochs": 3, "tuner_max_trials": 2, "tuner_search_space": {}},
      catalogue_uri="/cat", base_model="/blessed", hyperparameters={"values": {}},
      serving_model_dir=None, model_run_dir=None, working_dir="/w")
  args = tuning.trial_fn_args(fn_args, {"epochs": 5, "l2": 0.1}, "/w/trials/00")
  assert args.custom_config == {"epochs": 5, "l2": 0.1}
  assert args.catalogue_uri == "/cat"
  assert args.base_model is None and args.hyperparameters is None
  assert args.serving_model_dir == "/w/trials/00/serving_model"
  assert args.model_run_dir == "/w/trials/00/model_run"
  assert fn_args.custom_config["epochs"] == 3 and fn_args.base_model == "/blessed"


def test_catalogue_tuner_component():
  examples = types.Channel(type=standard_artifacts.Examples)
  tuner = catalogue_tuner.CatalogueTuner(
      examples=examples, raw_examples=examples,
      catalogue=types.Channel(type=standard_artifacts.Examples),
      transform_graph=types.Channel(type=standard_artifacts.TransformGraph),
      tuner_fn="trainer_modules.tuning.retrieval_tuner_fn",
      custom_config={"epochs": 3}, max_trials=3)
  assert {"raw_examples", "catalogue", "examples"} <= set(tuner.inputs)
  assert set(tuner.outputs) == {"best_hyperparameters", "tuner_results"}
  assert json.loads(tuner.exec_properties["custom_config"]) == {
      "epochs": 3, "tuner_max_trials": 3}
  with pytest.raises(ValueError):
    catalogue_tuner.CatalogueTuner(examples=examples, tuner_fn="x.y", max_trials=0)


def test_create_pipeline_tune_wires_a_tuner_into_each_trainer(tmp_path):
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  args = ("t", str(tmp_path / "root"), data, str(tmp_path / "serving"))
  off = {c.id: c for c in pipeline_lib.create_pipeline(*args).components}
  assert not [i for i in off if "Tuner" in i]
  assert "hyperparameters" not in off["RetrievalTrainer"].inputs
  assert "hyperparameters" not in off["RankingTrainer"].inputs

  on = {c.id: c for c in pipeline_lib.create_pipeline(
      *args, tune=True, tune_trials=3).components}
  for stage in ("Retrieval", "Ranking"):
    tuner, trainer = on[f"{stage}Tuner"], on[f"{stage}Trainer"]
    assert trainer.inputs["hyperparameters"] is tuner.outputs["best_hyperparameters"]
    assert json.loads(tuner.exec_properties["custom_config"])["tuner_max_trials"] == 3
    assert tuner.inputs["raw_examples"] is on["MovieLensExampleGen"].outputs["examples"]
  assert "catalogue" in on["RetrievalTuner"].inputs
  assert on["RetrievalTuner"].exec_properties["tuner_fn"].endswith("retrieval_tuner_fn")
  assert on["RankingTuner"].exec_properties["tuner_fn"].endswith("ranking_tuner_fn")


def test_runner_flags():
  import kubeflow_runner  # pylint: disable=g-import-not-at-top
  import local_runner  # pylint: disable=g-import-not-at-top
  args = local_runner.parse_args(["--tune", "--tune-trials", "3"])
  assert args.tune and args.tune_trials == 3
  args = local_runner.parse_args([])
  assert not args.tune and args.tune_trials is None
  args = kubeflow_runner.parse_args(["--pipeline-root", "/r", "--tune"])
  assert args.tune and args.tune_trials is None
  with pytest.raises(SystemExit):
    local_runner.parse_args(["--tune-trials", "0"])
