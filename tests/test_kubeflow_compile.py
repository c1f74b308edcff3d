"""The same pipeline compiles for Kubeflow Pipelines (KubeflowV2DagRunner)."""
import yaml

import kubeflow_runner
from tests import synthetic_data

EXPECTED = ["MovieLensExampleGen", "StatisticsGen", "ImportSchemaGen",
            "ExampleValidator", "ValidationGate", "Transform",
            "RetrievalTrainer", "RetrievalEvaluator", "RetrievalPusher",
            "RankingTrainer", "RankingEvaluator", "RankingPusher"]


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
  executors = (spec.get("pipelineSpec", spec)["deploymentSpec"]["executors"])
  images = {e["container"]["image"] for e in executors.values() if "container" in e}
  assert images == {"example.com/recsys:1"}


def test_each_blessed_model_resolver_keeps_its_stage_filter(tmp_path):
  """KubeflowV2 compiles LatestBlessedModelStrategy into a query on any
  blessed ModelBlessing; the runner re-adds each stage's filter."""
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  out = str(tmp_path / "pipeline.json")
  assert kubeflow_runner.main(["--pipeline-root", "gs://bucket/root", "--data", data,
                               "--output", out]) == 0
  import json
  with open(out) as f:
    spec = json.load(f)
  executors = spec.get("pipelineSpec", spec)["deploymentSpec"]["executors"]
  for resolver, stage in (("LatestBlessedRetrievalModel", "retrieval"),
                          ("LatestBlessedRankingModel", "ranking")):
    [query] = executors[f"{resolver}-model-blessing-resolver_executor"][
        "resolver"]["outputArtifactQueries"].values()
    assert 'schema_title="tfx.ModelBlessing"' in query["filter"]
    assert f'metadata.blessing_stage.string_value="{stage}"' in query["filter"]
