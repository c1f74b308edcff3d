"""The same pipeline compiles for Kubeflow Pipelines (KubeflowV2DagRunner)."""
import json

import yaml

import kubeflow_runner
from tests import synthetic_data

EXPECTED = ["MovieLensExampleGen", "StatisticsGen", "ImportSchemaGen",
            "ExampleValidator", "ValidationGate", "Transform",
            "RetrievalTrainer", "RetrievalEvaluator", "RetrievalPusher",
            "RankingTrainer", "RankingEvaluator", "TwoStageEvaluator", "RankingPusher"]


def test_compiles_to_a_kfp_yaml_spec_with_every_component(tmp_path):
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  out = str(tmp_path / "pipeline.yaml")
  assert kubeflow_runner.main(["--pipeline-root", "gs://bucket/root", "--data", data,
                               "--image", "example.com/recsys:1", "--output", out]) == 0
  with open(out) as f:
    spec = yaml.safe_load(f)
  tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"] if "pipelineSpec" in spec \
      else spec["root"]["dag"]["tasks"]
  for name in EXPECTED:
    assert name in tasks, f"{name} missing from the compiled spec"
  # Transform waits for the validation gate, trainers for Transform.
  assert "ValidationGate" in tasks["Transform"].get("dependentTasks", [])
  assert "Transform" in tasks["RankingTrainer"]["dependentTasks"]
  # A compiled spec freezes the data fingerprint: a recurring run must
  # ingest anew instead of hitting KFP's cache.
  assert tasks["MovieLensExampleGen"]["cachingOptions"]["enableCache"] is False
  assert tasks["Transform"]["cachingOptions"]["enableCache"] is True
  executors = (spec.get("pipelineSpec", spec)["deploymentSpec"]["executors"])
  images = {e["container"]["image"] for e in executors.values() if "container" in e}
  assert images == {"example.com/recsys:1"}


def test_each_blessed_model_resolver_keeps_its_stage_filter(tmp_path):
  """KubeflowV2 compiles LatestBlessedModelStrategy into a query on any
  blessed ModelBlessing; the runner re-adds each stage's filter: the
  blessings its ServingPusher wrote (the model served is the baseline)."""
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  out = str(tmp_path / "pipeline.json")
  assert kubeflow_runner.main(["--pipeline-root", "gs://bucket/root", "--data", data,
                               "--output", out]) == 0
  with open(out) as f:
    spec = json.load(f)
  executors = spec.get("pipelineSpec", spec)["deploymentSpec"]["executors"]
  for resolver, stage in (("LatestBlessedRetrievalModel", "retrieval_served"),
                          ("LatestBlessedRankingModel", "ranking_served")):
    [query] = executors[f"{resolver}-model-blessing-resolver_executor"][
        "resolver"]["outputArtifactQueries"].values()
    assert 'schema_title="tfx.ModelBlessing"' in query["filter"]
    assert f'metadata.blessing_stage.string_value="{stage}"' in query["filter"]


def test_beam_args_and_trainer_settings_reach_the_spec(tmp_path):
  """Data components can run on Dataflow/Flink/Spark; trainer settings
  (e.g. a distribution strategy) travel in the Trainers' custom_config."""
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  out = str(tmp_path / "pipeline.yaml")
  assert kubeflow_runner.main([
      "--pipeline-root", "gs://bucket/root", "--data", data, "--output", out,
      "--beam-args", "--runner=DataflowRunner --project=p1 --region=europe-west1 "
                     "--direct_running_mode=multi_processing",
      "--retrieval-config", '{"epochs": 7, "distribution_strategy": "mirrored"}',
  ]) == 0
  with open(out) as f:
    text = f.read()
  assert "--runner=DataflowRunner" in text and "--project=p1" in text
  # The user's flag replaced the same-named default instead of duplicating it.
  assert "--direct_running_mode=multi_processing" in text
  assert "--direct_running_mode=in_memory" not in text
  spec = yaml.safe_load(text)
  tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]
  custom_config = json.loads(tasks["RetrievalTrainer"]["inputs"]["parameters"][
      "custom_config"]["runtimeValue"]["constantValue"]["stringValue"])
  assert custom_config["distribution_strategy"] == "mirrored"
  assert custom_config["epochs"] == 7


def test_span_data_compiles_with_the_drift_gate_and_window(tmp_path):
  pattern = synthetic_data.write_spans(str(tmp_path / "spans"), spans=(1, 2, 3))
  out = str(tmp_path / "pipeline.yaml")
  assert kubeflow_runner.main([
      "--pipeline-root", "gs://bucket/root", "--data", pattern, "--output", out,
      "--rolling-spans", "2", "--drift-thresholds", '{"user_rating": 0.02}']) == 0
  with open(out) as f:
    text = f.read()
  spec = yaml.safe_load(text)
  tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]
  assert "DriftGate" in tasks["Transform"]["dependentTasks"]
  assert "DriftStatisticsGen" in tasks["DriftGate"]["dependentTasks"]
  def param(task, name):
    return json.loads(tasks[task]["inputs"]["parameters"][name]["runtimeValue"][
        "constantValue"]["stringValue"])
  assert param("MovieLensExampleGen", "range_config") == {
      "rolling_range": {"num_spans": 2}}
  thresholds = param("DriftGate", "thresholds")
  assert thresholds["user_rating"] == 0.02  # overridden
  assert thresholds["movie_id"] == 0.05     # default kept
