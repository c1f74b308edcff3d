"""latest_blessed_model_resolver: producer-filtered channels, kept by the compilers."""
import json
import os

import pytest
from tfx import v1 as tfx
from tfx.dsl.compiler import compiler
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.types import standard_artifacts

from components.resolvers import latest_blessed_model_resolver

PIPELINE = "two-stage"


@component
def FakeTrainer(model: OutputArtifact[standard_artifacts.Model]):  # pylint: disable=invalid-name
  del model


@component
def FakeEvaluator(model: InputArtifact[standard_artifacts.Model],  # pylint: disable=invalid-name
                  blessing: OutputArtifact[standard_artifacts.ModelBlessing]):
  del model, blessing


def _pipeline(root):
  """Two trainers, two evaluators, one resolver per stage."""
  rt = FakeTrainer().with_id("retrieval_trainer")
  kt = FakeTrainer().with_id("ranking_trainer")
  rev = FakeEvaluator(model=rt.outputs["model"]).with_id("retrieval_evaluator")
  kev = FakeEvaluator(model=kt.outputs["model"]).with_id("ranking_evaluator")
  r1 = latest_blessed_model_resolver("latest_retrieval", "retrieval_trainer",
                                     "retrieval_evaluator")
  r2 = latest_blessed_model_resolver("latest_ranking", "ranking_trainer",
                                     "ranking_evaluator")
  return tfx.dsl.Pipeline(pipeline_name=PIPELINE, pipeline_root=str(root),
                          components=[rt, kt, rev, kev, r1, r2])


def test_resolver_channels_carry_producer_ids():
  r = latest_blessed_model_resolver("latest_retrieval", "retrieval_trainer",
                                    "retrieval_evaluator")
  assert r.id == "latest_retrieval"
  assert r.exec_properties["resolver_class"] is (
      latest_blessed_model_strategy.LatestBlessedModelStrategy)
  raw = r.raw_inputs
  assert set(raw) == {"model", "model_blessing"}
  assert raw["model"].type is standard_artifacts.Model
  assert raw["model"].producer_component_id == "retrieval_trainer"
  assert raw["model"].output_key == "model"
  assert raw["model_blessing"].type is standard_artifacts.ModelBlessing
  assert raw["model_blessing"].producer_component_id == "retrieval_evaluator"
  assert raw["model_blessing"].output_key == "blessing"
  assert set(r.outputs) == {"model", "model_blessing"}
  # Custom output keys.
  r = latest_blessed_model_resolver("x", "t", "e", model_key="m", blessing_key="b")
  assert (r.raw_inputs["model"].output_key, r.raw_inputs["model_blessing"].output_key) == (
      "m", "b")


def _node_queries(channel):
  return {q.type.name: q.name.field_value.string_value for q in channel.context_queries}


def test_ir_compiler_keeps_producer_filter(tmp_path):
  ir = compiler.Compiler().compile(_pipeline(tmp_path))
  nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
  for name, trainer, evaluator in (
      ("latest_retrieval", "retrieval_trainer", "retrieval_evaluator"),
      ("latest_ranking", "ranking_trainer", "ranking_evaluator")):
    node = nodes[name]
    # No DAG edge: the resolver reads earlier runs' artifacts.
    assert not list(node.upstream_nodes)
    found = {}
    for key, spec in node.inputs.inputs.items():
      for ch in spec.channels:
        found[ch.artifact_query.type.name] = (
            _node_queries(ch), ch.output_key, key)
    model_q, model_key, _ = found["Model"]
    bless_q, bless_key, _ = found["ModelBlessing"]
    assert model_q["pipeline"] == PIPELINE
    assert model_q["node"] == f"{PIPELINE}.{trainer}"
    assert model_key == "model"
    assert bless_q["node"] == f"{PIPELINE}.{evaluator}"
    assert bless_key == "blessing"
    # The strategy op runs on exactly these two inputs.
    graph = next(iter(node.inputs.input_graphs.values()))
    ops = [n.op_node.op_type for n in graph.nodes.values() if n.HasField("op_node")]
    assert ops == ["tfx.dsl.input_resolution.strategies."
                   "latest_blessed_model_strategy.LatestBlessedModelStrategy"]


def test_kubeflow_v2_runner_drops_producer_filter(tmp_path):
  """Documents a TFX 1.16 limitation (see resolver.py): on Vertex the
  LatestBlessedModelStrategy becomes fixed MLMD queries without producer ids."""
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kv2  # pylint: disable=g-import-not-at-top
  runner = kv2.KubeflowV2DagRunner(
      config=kv2.KubeflowV2DagRunnerConfig(default_image="example.invalid/img"),
      output_dir=str(tmp_path), output_filename="pipeline.json")
  runner.run(_pipeline(tmp_path / "root"), write_out=True)
  spec = json.loads((tmp_path / "pipeline.json").read_text())["pipelineSpec"]
  executors = spec["deploymentSpec"]["executors"]
  blessing_q = executors["latest_retrieval-model-blessing-resolver_executor"][
      "resolver"]["outputArtifactQueries"]["model_blessing"]["filter"]
  assert 'schema_title="tfx.ModelBlessing"' in blessing_q
  assert "metadata.blessed.number_value=1" in blessing_q
  resolver_execs = json.dumps({k: v for k, v in executors.items() if "resolver" in v})
  assert "latest_retrieval-model-resolver_executor" in resolver_execs
  if "retrieval_evaluator" in resolver_execs or "retrieval_trainer" in resolver_execs:
    pytest.fail("KubeflowV2 now keeps the producer filter: update resolvers.py's caveat and kubeflow_runner's stage filter")
  # Both stages compile to the same blessing query.
  assert blessing_q == executors["latest_ranking-model-blessing-resolver_executor"][
      "resolver"]["outputArtifactQueries"]["model_blessing"]["filter"]


# ---------------------------------------------------------------------------
# The filter at run time: LocalDagRunner, real MLMD, two runs.
@component
def BlessingTrainer(model: OutputArtifact[standard_artifacts.Model]):  # pylint: disable=invalid-name
  with open(os.path.join(model.uri, "marker"), "w") as f:
    f.write("x")


@component
def AlwaysBless(model: InputArtifact[standard_artifacts.Model],  # pylint: disable=invalid-name
                blessing: OutputArtifact[standard_artifacts.ModelBlessing]):
  blessing.set_int_custom_property("blessed", 1)
  blessing.set_int_custom_property("current_model_id", model.id)
  blessing.set_string_custom_property("current_model", model.uri)


@component
def RecordBaseline(out_path: Parameter[str],  # pylint: disable=invalid-name
                   baseline: InputArtifact[standard_artifacts.Model] = None):
  with open(out_path, "a") as f:
    f.write(json.dumps(baseline.uri if baseline is not None else None) + "\n")


def test_local_runner_resolves_per_stage(tmp_path):
  from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.local import local_dag_runner  # pylint: disable=g-import-not-at-top
  records = {s: str(tmp_path / f"{s}.jsonl") for s in ("retrieval", "ranking")}

  def build():
    rt = BlessingTrainer().with_id("retrieval_trainer")
    rev = AlwaysBless(model=rt.outputs["model"]).with_id("retrieval_evaluator")
    # The ranking stage runs last, so its model and blessing are the newest
    # artifacts: an unfiltered resolver would hand them to retrieval.
    kt = BlessingTrainer().with_id("ranking_trainer")
    kt.add_upstream_node(rev)
    kev = AlwaysBless(model=kt.outputs["model"]).with_id("ranking_evaluator")
    r1 = latest_blessed_model_resolver("latest_retrieval", "retrieval_trainer",
                                       "retrieval_evaluator")
    r2 = latest_blessed_model_resolver("latest_ranking", "ranking_trainer",
                                       "ranking_evaluator")
    c1 = RecordBaseline(out_path=records["retrieval"],
                        baseline=r1.outputs["model"]).with_id("record_retrieval")
    c2 = RecordBaseline(out_path=records["ranking"],
                        baseline=r2.outputs["model"]).with_id("record_ranking")
    rt.add_upstream_node(c1)  # record before this run's models exist
    rt.add_upstream_node(c2)
    return tfx.dsl.Pipeline(
        pipeline_name=PIPELINE, pipeline_root=str(tmp_path / "root"),
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            str(tmp_path / "mlmd.sqlite")),
        components=[rt, rev, kt, kev, r1, r2, c1, c2])

  for _ in range(2):
    local_dag_runner.LocalDagRunner().run(build())
  got = {s: [json.loads(l) for l in open(p)] for s, p in records.items()}
  assert got["retrieval"][0] is None and got["ranking"][0] is None  # first run
  assert "/retrieval_trainer/" in got["retrieval"][1]
  assert "/ranking_trainer/" in got["ranking"][1]
