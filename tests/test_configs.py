"""trainer_modules/configs.py: strict Transform / retrieval / ranking configs.

Fast: only the last test imports TensorFlow (to compare names the
TensorFlow modules define with the configs' choices).
"""
import argparse
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from pipeline import configs as pipeline_configs
from tests import synthetic_data
from trainer_modules import configs

# The defaults as they were before the configs became models (the trainers'
# and preprocessing's DEFAULT_CONFIG dicts): they must not have moved.
OLD_DEFAULTS = {
    "transform": {"num_timestamp_buckets": 1000, "min_user_count": 5,
                  "min_movie_count": 2, "min_word_count": 2,
                  "min_zip_prefix_count": 2},
    "retrieval": {
        "embedding_dim": 64, "side_dim": 16, "query_layers": [128, 64],
        "candidate_layers": [128, 64], "learning_rate": 0.005,
        "optimizer": "adam", "embedding_optimizer": "auto",
        "embedding_learning_rate": None, "epochs": 8,
        "max_train_examples": 8_000_000, "batch_size": 2048, "temperature": 0.2,
        "l2": 0.0, "normalize": True, "logq_correction": True,
        "remove_accidental_hits": True, "oov_rate": 0.05, "feature_dropout": 0.05,
        "use_timestamp": False, "history": True, "history_dropout": 0.2,
        "history_max_len": 200, "negatives": "auto",
        "full_softmax_max_movies": 5000, "mask_seen": True, "movie_bias": True,
        "seed": 42, "top_k": 100, "shuffle_buffer": 200_000,
        "cache_max_rows": 5_000_000, "warm_start": True,
        "distribution_strategy": "auto",
        "verbose": 0},  # was cfg.get("verbose", 0)
    "ranking": {
        "architecture": "dcn", "dcn_structure": "stacked", "num_cross_layers": 1,
        "cross_projection_dim": None, "layer_sizes": [256, 64],
        "embedding_dim": 32, "side_dim": 8, "include_context": False,
        "use_bias": True, "optimizer": "adam", "embedding_optimizer": "auto",
        "embedding_learning_rate": None, "learning_rate": 3e-3, "epochs": 5,
        "max_train_examples": 4_000_000, "batch_size": 1024, "l2": 0.03,
        "kernel_l2": 0.0, "dropout": 0.2, "oov_rate": 0.01,
        "engagement_weight": 1.0, "rating_weight": 0.2, "engagement_layers": [64],
        "engagement_negatives": "auto", "engagement_full_max_movies": 5000,
        "temperature": 1.0, "history": True, "history_dropout": 0.2,
        "history_max_len": 200, "item_item_max_movies": 0, "item_item_l2": 0.0,
        "ease_max_movies": 10_000, "ease_lambda": 500.0, "rating_blend": 0.0,
        "seed": 42, "validate_each_epoch": False, "warm_start": True,
        "distribution_strategy": "auto"},
}
# Keys the pipeline's components add to a trainer's custom_config, and the
# Tuner's own (components/catalogue_trainer.py, catalogue_tuner.py,
# trainer_modules/tuning.py); all None by default.
INJECTED = {"catalogue_uri": "gs://b/catalogue", "raw_examples_uri": "gs://b/raw",
            "tuner_max_trials": 3, "tuner_oracle": "random",
            "tuner_search_space": {"epochs": {"min": 1, "max": 3}, "l2": None}}


def test_defaults_are_the_old_defaults():
  for kind, old in OLD_DEFAULTS.items():
    new = configs.defaults(kind)
    assert {k: new[k] for k in old} == old
    assert {k: v for k, v in new.items() if k not in old} == (
        {} if kind == "transform" else dict.fromkeys(INJECTED))
    assert configs.validate(kind, {}) == configs.validate(kind, None) == new
    assert configs.keys(kind) == list(new)


def test_module_imports_no_tensorflow():
  code = ("import sys; from trainer_modules import configs; "
          "print(sorted(m for m in ('tensorflow', 'numpy', 'tfx', 'apache_beam') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(
                           os.path.abspath(__file__))))
  assert out.stdout.strip() == "[]"


def test_validate_fills_defaults_and_keeps_given_values():
  cfg = configs.validate("retrieval", {"embedding_dim": 32, "learning_rate": 1})
  assert cfg == dict(configs.defaults("retrieval"), embedding_dim=32, learning_rate=1.0)
  assert isinstance(cfg["learning_rate"], float)  # an int is a fine float
  # KerasTuner's numpy values and Python tuples are plain values; choices
  # that the code always lower-cased still may be given in any case.
  cfg = configs.validate("ranking", {"epochs": np.int64(3), "dropout": np.float32(0.5),
                                     "layer_sizes": (64, 16), "optimizer": "Adam",
                                     "distribution_strategy": " Mirrored"})
  assert (cfg["epochs"], cfg["dropout"], cfg["layer_sizes"]) == (3, 0.5, [64, 16])
  assert type(cfg["epochs"]) is int
  assert (cfg["optimizer"], cfg["distribution_strategy"]) == ("adam", "mirrored")


def test_misspelt_key_names_the_allowed_keys_and_a_suggestion():
  with pytest.raises(configs.ConfigError) as e:
    configs.validate("retrieval", {"embeding_dim": 8})
  msg = str(e.value)
  assert msg.startswith("retrieval config: embeding_dim: unknown key; did you mean "
                        "embedding_dim? allowed: ")
  assert "\n" not in msg
  allowed = msg.split("allowed: ")[1].split(", ")
  assert allowed == sorted(configs.defaults("retrieval"))
  # No close match: no suggestion, still the allowed keys.
  with pytest.raises(configs.ConfigError,
                     match=r"^transform config: zzz: unknown key; allowed: "
                     r"min_movie_count, "):
    configs.validate("transform", {"zzz": 1})
  # The old nested {"ranking": {...}} form is no longer read.
  with pytest.raises(configs.ConfigError, match="^ranking config: ranking: unknown key"):
    configs.validate("ranking", {"ranking": {"epochs": 3}})


@pytest.mark.parametrize("kind,bad,expected", [
    ("retrieval", {"epochs": -1}, "epochs should be greater than or equal to 0, got -1"),
    ("ranking", {"learning_rate": 0}, "learning_rate should be greater than 0, got 0"),
    ("ranking", {"embedding_dim": 0}, "embedding_dim should be greater than or equal to 1"),
    ("retrieval", {"oov_rate": 1.5}, "oov_rate should be less than or equal to 1"),
    ("ranking", {"dropout": 1.0}, "dropout should be less than 1, got 1.0"),
    ("retrieval", {"query_layers": [0, 64]},
     r"query_layers\[0\] should be greater than or equal to 1, got 0"),
    ("ranking", {"engagement_layers": []}, "engagement_layers: List should have at least 1"),
    ("transform", {"num_timestamp_buckets": 0}, "num_timestamp_buckets should be greater"),
    # Wrong types: not converted.
    ("ranking", {"epochs": "5"}, "epochs should be a valid integer, got '5'"),
    ("ranking", {"epochs": 2.5}, "epochs should be a valid integer, got 2.5"),
    ("ranking", {"epochs": True}, "epochs should be a valid integer, got True"),
    ("retrieval", {"epochs": None}, "epochs should be a valid integer, got None"),
    ("retrieval", {"normalize": "yes"}, "normalize should be a valid boolean"),
    ("retrieval", {"query_layers": 64}, "query_layers should be a valid list"),
    # Choices.
    ("retrieval", {"negatives": "sampled"},
     "negatives 'sampled': expected 'auto', 'full' or 'in_batch'$"),
    ("ranking", {"architecture": "transformer"}, "architecture 'transformer': expected 'dense' or 'dcn'"),
    ("ranking", {"distribution_strategy": "tpu"}, "distribution_strategy 'tpu': expected 'auto', 'one_device', "
     "'mirrored' or 'multi_worker_mirrored'"),
    ("retrieval", {"tuner_oracle": "grid"}, "tuner_oracle 'grid': expected 'bayesian' or 'random'"),
    ("ranking", {"tuner_max_trials": 0}, "tuner_max_trials should be greater than or equal to 1"),
    # Across keys.
    ("retrieval", {"query_layers": [64, 32]},
     r"query_layers and candidate_layers must end with the same output size: "
     r"\[64, 32\] vs \[128, 64\]"),
    ("ranking", {"rating_weight": 0, "engagement_weight": 0.0},
     "rating_weight and engagement_weight are both 0: the ranking model needs a task"),
])
def test_bad_values_name_the_key_and_what_was_expected(kind, bad, expected):
  with pytest.raises(configs.ConfigError, match=f"^{kind} config: {expected}") as e:
    configs.validate(kind, bad)
  assert "\n" not in str(e.value)
  assert isinstance(e.value, ValueError)


def test_several_problems_one_line_each():
  with pytest.raises(configs.ConfigError) as e:
    configs.validate("ranking", {"epochs": -1, "bogus": 1, "l2": "x"})
  lines = str(e.value).split("\n")
  assert len(lines) == 3 and all(l.startswith("ranking config: ") for l in lines)
  with pytest.raises(configs.ConfigError) as e:
    configs.validate("ranking", {f"bad{i}": i for i in range(9)})
  lines = str(e.value).split("\n")
  assert len(lines) == 6 and lines[-1] == "... and 4 more"


def test_not_a_mapping_and_unknown_kind():
  with pytest.raises(configs.ConfigError,
                     match="^ranking config: expected an object of keys and values, got list$"):
    configs.validate("ranking", [1, 2])
  with pytest.raises(configs.ConfigError, match="Unknown config kind 'trainer'"):
    configs.validate("trainer", {})


def test_parse_json_for_command_line_flags():
  # The object as given (the pipeline merges it over its own config).
  assert configs.parse_json("retrieval", '{"epochs": 3}') == {"epochs": 3}
  assert configs.parse_json("ranking", "{}") == {}
  for text, expected in (
      ("[1,2]", "^retrieval config: expected a JSON object such as "
                "'{\"epochs\": 3}', got list '\\[1,2\\]'$"),
      ("not json", "^retrieval config: not valid JSON \\(line 1 column 1\\): "
                   "'not json'; expected an object"),
      ('{"epochs": 3', "^retrieval config: not valid JSON \\(line 1 column 13\\)"),
      ('"epochs"', "^retrieval config: expected a JSON object .* got str"),
      ('{"epochs": -3}', "^retrieval config: epochs should be greater than or equal to 0")):
    with pytest.raises(configs.ConfigError, match=expected) as e:
      configs.parse_json("retrieval", text)
    assert "\n" not in str(e.value)


def test_flag_type_shows_the_message_in_argparse(capsys):
  parser = argparse.ArgumentParser(prog="runner")
  parser.add_argument("--retrieval-config", type=configs.flag_type("retrieval"),
                      default={})
  assert parser.parse_args(["--retrieval-config", '{"epochs": 2}']).retrieval_config == {
      "epochs": 2}
  with pytest.raises(SystemExit):
    parser.parse_args(["--retrieval-config", '{"embeding_dim": 8}'])
  err = capsys.readouterr().err
  assert ("runner: error: argument --retrieval-config: retrieval config: "
          "embeding_dim: unknown key; did you mean embedding_dim?") in err


def test_the_pipelines_configs_and_injected_keys_validate():
  """What create_pipeline hands the components, plus what they add."""
  configs.validate("transform", pipeline_configs.TRANSFORM_CONFIG)
  for kind, base, test_config in (
      ("retrieval", pipeline_configs.RETRIEVAL_CONFIG,
       synthetic_data.E2E_RETRIEVAL_CONFIG),
      ("ranking", pipeline_configs.RANKING_CONFIG, synthetic_data.E2E_RANKING_CONFIG)):
    cfg = configs.validate(kind, dict(base, **test_config, **INJECTED))
    assert {k: cfg[k] for k in INJECTED} == INJECTED
    # What the runners' --distribution-strategy and the tests' worse
    # retraining set.
    configs.validate(kind, dict(base, distribution_strategy="multi_worker_mirrored",
                                epochs=0, warm_start=False))


def test_tuner_search_space_is_checked_against_the_hyperparameters():
  ok = {"embedding_dim": [8, 24], "learning_rate": {"min": 1e-3, "max": 1e-1,
                                                    "sampling": "log", "step": None},
        "temperature": 0.5, "epochs": None}
  assert configs.validate("retrieval", {"tuner_search_space": ok})[
      "tuner_search_space"] == ok
  assert "epochs" in configs.searchable_keys("ranking")
  assert not set(configs.searchable_keys("ranking")) & (set(INJECTED) | {
      "warm_start", "distribution_strategy"})
  for space, expected in (
      ({"embeding_dim": [8]}, "embeding_dim: unknown key; did you mean embedding_dim\\? "
                              "allowed: batch_size, "),
      ({"catalogue_uri": ["x"]}, "catalogue_uri: unknown key"),
      ({"epochs": {"min": -1, "max": 3}}, "epochs min should be greater than or equal to 0"),
      ({"epochs": {"min": 1}}, "epochs: a range needs min and max"),
      ({"negatives": ["full", "sampled"]}, "negatives choice 'sampled': expected 'auto'"),
      ({"normalize": "yes"}, "normalize should be a valid boolean"),
      ({"epochs": []}, "epochs: an empty list of choices")):
    with pytest.raises(configs.ConfigError,
                       match=f"^retrieval config: tuner_search_space: {expected}"):
      configs.validate("retrieval", {"tuner_search_space": space})


def test_trainer_config_applies_the_tuned_values_last():
  hp = {"space": [], "values": {"embedding_dim": 24}}
  fn_args = types.SimpleNamespace(custom_config={"embedding_dim": 16, "epochs": 2},
                                  hyperparameters=json.dumps(hp))
  cfg = configs.trainer_config("ranking", fn_args)
  assert (cfg["embedding_dim"], cfg["epochs"]) == (24, 2)
  fn_args.hyperparameters = {"values": {"embeding_dim": 24}}  # checked too
  with pytest.raises(configs.ConfigError, match="did you mean embedding_dim"):
    configs.trainer_config("ranking", fn_args)
  fn_args.hyperparameters = [1]
  with pytest.raises(configs.ConfigError, match="hyperparameters must be"):
    configs.trainer_config("ranking", fn_args)
  assert configs.trainer_config(
      "retrieval", types.SimpleNamespace(custom_config=None)) == configs.defaults(
          "retrieval")


def test_choices_match_the_tensorflow_modules():
  """configs cannot import them (TensorFlow): the names must agree."""
  import typing  # pylint: disable=g-import-not-at-top
  from components import catalogue_trainer  # pylint: disable=g-import-not-at-top
  from components import catalogue_tuner  # pylint: disable=g-import-not-at-top
  from trainer_modules import ease  # pylint: disable=g-import-not-at-top
  from trainer_modules import optimizers  # pylint: disable=g-import-not-at-top
  from trainer_modules import ranking  # pylint: disable=g-import-not-at-top
  from trainer_modules import retrieval  # pylint: disable=g-import-not-at-top
  from trainer_modules import strategy  # pylint: disable=g-import-not-at-top
  from trainer_modules import tuning  # pylint: disable=g-import-not-at-top
  from trainer_modules import warm_start  # pylint: disable=g-import-not-at-top
  assert typing.get_args(configs.Optimizer) == optimizers.OPTIMIZERS
  assert typing.get_args(configs.EmbeddingOptimizer) == optimizers.EMBEDDING_OPTIMIZERS
  assert typing.get_args(configs.Strategy) == strategy.STRATEGIES
  assert configs.defaults("ranking")["ease_lambda"] == ease.DEFAULT_LAMBDA
  assert tuning.DEFAULT_ORACLE in typing.get_args(
      typing.get_args(configs.RetrievalConfig.model_fields["tuner_oracle"].annotation)[0])
  injected = {catalogue_trainer.CATALOGUE_URI, catalogue_tuner.RAW_EXAMPLES_URI,
              catalogue_tuner.MAX_TRIALS_KEY, tuning.SEARCH_SPACE_KEY,
              tuning.ORACLE_KEY, warm_start.CONFIG_KEY, strategy.CONFIG_KEY}
  for kind in ("retrieval", "ranking"):
    assert injected <= set(configs.keys(kind))
  assert set(tuning.TRAINER_MODULES) == {"retrieval", "ranking"}
  assert retrieval.DEFAULT_CONFIG == configs.defaults("retrieval")
  assert ranking.DEFAULT_CONFIG == configs.defaults("ranking")
