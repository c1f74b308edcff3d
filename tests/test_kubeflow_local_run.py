"""The compiled Kubeflow spec, executed locally task by task (runners/kfp_local).

Fast tests run a small hand-written spec shaped like TFX's output (a fake
TFX entrypoint in plain Python, TFX's two-step blessed-model resolver
queries with the per-stage filter) to check the DAG order, placeholder
substitution, the ExecutorInput and the resolver filtering. The slow test
compiles the real pipeline with kubeflow_runner and runs it twice with
`--run-locally`: both models pushed, then a worse retraining that resolves
the first run's blessed models as its baselines and pushes nothing.
"""
import json
import os
import re
import time

import pytest
import yaml

import kubeflow_runner
from runners import kfp_local
from tests import synthetic_data

IMAGE_SRC_DIR = kubeflow_runner.IMAGE_SRC_DIR
BLESSING_TITLE = "tfx.ModelBlessing"
MODEL_TITLE = "tfx.Model"


def _type(title):
  return {"instanceSchema": f"title: {title}\ntype: object\n"}


# A stand-in for TFX's KFP v2 entrypoint: reads the ExecutorInput given as
# --json_serialized_invocation_args, writes each output artifact's folder
# and an ExecutorOutput whose metadata comes from the `metadata` parameter;
# "@model" is replaced by the name of the input artifact `model` (as TFX's
# entrypoint turns an evaluator's current_model_id back into a name).
FAKE_ENTRYPOINT = r"""
import json, os, sys
args = sys.argv[1:]
ei = json.loads(args[args.index("--json_serialized_invocation_args") + 1])
params = {k: v.get("stringValue", v.get("intValue", v.get("doubleValue")))
          for k, v in ei["inputs"].get("parameters", {}).items()}
meta = json.loads(params.get("metadata", "{}"))
model = ei["inputs"]["artifacts"].get("model", {}).get("artifacts", [])
for k, v in meta.items():
  if v == "@model":
    meta[k] = model[0]["name"]
out = {"artifacts": {}}
for key, lst in ei["outputs"]["artifacts"].items():
  a = dict(lst["artifacts"][0])
  os.makedirs(a["uri"], exist_ok=True)
  with open(os.path.join(a["uri"], "params.json"), "w") as f:
    json.dump({"params": params, "argv": args,
               "inputs": {k: [x["name"] for x in v.get("artifacts", [])]
                          for k, v in ei["inputs"]["artifacts"].items()}}, f)
  a["metadata"] = meta
  out["artifacts"][key] = {"artifacts": [a]}
with open(ei["outputs"]["outputFile"], "w") as f:
  json.dump(out, f)
sys.exit(int(params.get("exit_code", 0)))
"""


def _container(extra_args=()):
  return {"container": {
      "image": "example.com/recsys:1",
      "command": ["python", "-c", FAKE_ENTRYPOINT],
      "args": ["--executor_class_path", "fake.Executor",
               "--json_serialized_invocation_args", "{{$}}",
               "--runner=DirectRunner", *extra_args]}}


def _resolvers(prefix, stage):
  """The two resolver executors TFX compiles for LatestBlessedModelStrategy,
  with kubeflow_runner's stage filter."""
  blessing = (f'schema_title="{BLESSING_TITLE}" AND state=LIVE AND '
              'metadata.blessed.number_value=1 AND '
              f'metadata.blessing_stage.string_value="{stage}"')
  model = (f'schema_title="{MODEL_TITLE}" AND state=LIVE AND '
           "name=\"{{$.inputs.artifacts['input'].metadata['current_model_id']}}\"")
  return {
      f"{prefix}-model-blessing-resolver_executor": {"resolver": {
          "outputArtifactQueries": {"model_blessing": {"filter": blessing}}}},
      f"{prefix}-model-resolver_executor": {"resolver": {
          "outputArtifactQueries": {"model": {"filter": model}}}},
  }


def _const(value):
  return {"runtimeValue": {"constantValue": {"stringValue": value}}}


def _out(task, key):
  return {"taskOutputArtifact": {"producerTask": task, "outputArtifactKey": key}}


def fake_spec(blessed=(1, 1)):
  """Two stages: Trainer → Evaluator (blessing tagged with its stage), each
  with a blessed-model resolver feeding the evaluator's baseline."""
  components, executors, tasks = {}, {}, {}
  components["Schema"] = {"executorLabel": "Schema_executor",
                          "inputDefinitions": {"parameters": {
                              "schema_file": {"type": "STRING"},
                              "metadata": {"type": "STRING"}}},
                          "outputDefinitions": {"artifacts": {
                              "schema": {"artifactType": _type("tfx.Schema")}}}}
  executors["Schema_executor"] = _container()
  tasks["Schema"] = {"componentRef": {"name": "Schema"}, "inputs": {
      "parameters": {"schema_file": _const(
          IMAGE_SRC_DIR + "/pipeline/schemas/movielens_100k.pbtxt"),
                     "metadata": _const("{}")}}}
  for stage, flag in zip(("retrieval", "ranking"), blessed):
    cap = stage.capitalize()
    resolver = f"Latest{cap}"
    for suffix, outputs, inputs in (
        ("-model-blessing-resolver", {"model_blessing": BLESSING_TITLE}, {}),
        ("-model-resolver", {"model": MODEL_TITLE},
         {"input": BLESSING_TITLE})):
      name = resolver + suffix
      components[name] = {
          "executorLabel": name + "_executor",
          "outputDefinitions": {"artifacts": {
              k: {"artifactType": _type(t)} for k, t in outputs.items()}}}
      if inputs:
        components[name]["inputDefinitions"] = {"artifacts": {
            k: {"artifactType": _type(t)} for k, t in inputs.items()}}
      tasks[name] = {"componentRef": {"name": name}, "taskInfo": {"name": name}}
    tasks[resolver + "-model-resolver"]["inputs"] = {"artifacts": {
        "input": _out(resolver + "-model-blessing-resolver", "model_blessing")}}
    executors.update(_resolvers(resolver, stage))
    for task, ins, outs, meta in (
        (f"{cap}Trainer", {"schema": ("Schema", "schema"),
                           "base_model": (resolver + "-model-resolver", "model")},
         {"model": MODEL_TITLE}, {}),
        (f"{cap}Evaluator", {"model": (f"{cap}Trainer", "model"),
                             "baseline_model": (resolver + "-model-resolver",
                                                "model")},
         {"blessing": BLESSING_TITLE},
         {"blessed": flag, "blessing_stage": stage,
          "current_model_id": "@model"})):
      components[task] = {
          "executorLabel": task + "_executor",
          "inputDefinitions": {"parameters": {"metadata": {"type": "STRING"}}},
          "outputDefinitions": {"artifacts": {
              k: {"artifactType": _type(t)} for k, t in outs.items()}}}
      executors[task + "_executor"] = _container()
      tasks[task] = {"componentRef": {"name": task}, "inputs": {
          "artifacts": {k: _out(*v) for k, v in ins.items()},
          "parameters": {"metadata": _const(json.dumps(meta))}}}
    tasks[f"{cap}Evaluator"]["dependentTasks"] = [f"{cap}Trainer"]
  return {"pipelineInfo": {"name": "fake-two-stage"}, "schemaVersion": "2.0.0",
          "components": components, "deploymentSpec": {"executors": executors},
          "root": {"dag": {"tasks": tasks}}}


def _write(tmp_path, spec, name="pipeline.yaml"):
  path = str(tmp_path / name)
  with open(path, "w") as f:
    yaml.safe_dump(spec, f)
  return path


def _run(spec_path, root, **kwargs):
  lines = []
  summary = kfp_local.run(spec_path, root, image_src_dir=IMAGE_SRC_DIR,
                          log=lines.append, **kwargs)
  return summary, lines


def _resolved(summary, task, key):
  return [a["name"] for a in summary["tasks"][task]["outputs"][key]]


def test_tasks_run_in_dependency_order_including_input_producers():
  order = kfp_local.task_order(fake_spec())
  # The model resolver has no dependentTasks, only an input from the
  # blessing resolver: KFP orders by inputs too.
  assert order.index("LatestRanking-model-blessing-resolver") < order.index(
      "LatestRanking-model-resolver") < order.index("RankingTrainer") < \
      order.index("RankingEvaluator")
  assert order.index("Schema") < order.index("RetrievalTrainer")
  assert len(order) == len(set(order)) == 9


def test_cycles_and_unknown_tasks_are_spec_errors():
  spec = fake_spec()
  spec["root"]["dag"]["tasks"]["Schema"]["dependentTasks"] = ["RankingEvaluator"]
  with pytest.raises(kfp_local.SpecError, match="cycle"):
    kfp_local.task_order(spec)
  spec["root"]["dag"]["tasks"]["Schema"]["dependentTasks"] = ["Nope"]
  with pytest.raises(kfp_local.SpecError, match="unknown task 'Nope'"):
    kfp_local.task_order(spec)


def test_placeholders_are_substituted_from_the_executor_input():
  ei = {"inputs": {"parameters": {"n": {"intValue": "3"}},
                   "parameterValues": {"s": "x"},
                   "artifacts": {"input": {"artifacts": [{
                       "name": "artifacts/4", "uri": "/r/a",
                       "metadata": {"current_model_id": "artifacts/2",
                                    "blessed": 1.0}}]}}},
        "outputs": {"outputFile": "/r/out.json", "artifacts": {"m": {
            "artifacts": [{"name": "artifacts/5", "uri": "/r/m"}]}},
                    "parameters": {"p": {"outputFile": "/r/p"}}}}
  sub = lambda text: kfp_local.substitute(text, ei)  # noqa: E731
  assert json.loads(sub("{{$}}")) == ei
  assert sub("name=\"{{$.inputs.artifacts['input'].metadata"
             "['current_model_id']}}\"") == 'name="artifacts/2"'
  assert sub("{{$.inputs.artifacts['input'].metadata['blessed']}}") == "1"
  assert sub("{{$.inputs.parameters['n']}}-{{$.inputs.parameters['s']}}") == "3-x"
  assert sub("{{$.outputs.artifacts['m'].uri}} {{$.outputs.output_file}} "
             "{{$.outputs.parameters['p'].output_file}}") == \
      "/r/m /r/out.json /r/p"
  for bad in ("{{$.inputs.parameters['zz']}}", "{{$.nonsense}}",
              "{{$.inputs.artifacts['input'].metadata['absent']}}"):
    with pytest.raises(kfp_local.SpecError):
      sub(bad)


def test_resolver_filters_match_type_blessing_and_stage(tmp_path):
  store = kfp_local.MetadataStore(str(tmp_path))
  def add(title, **metadata):
    artifact_id, name = store.new_name()
    store.add({"id": artifact_id, "name": name, "schema_title": title,
               "uri": f"/r/{artifact_id}", "state": "LIVE",
               "metadata": metadata})
    return name
  r1 = add(BLESSING_TITLE, blessed=1.0, blessing_stage="retrieval")
  add(BLESSING_TITLE, blessed=1.0, blessing_stage="ranking")
  add(BLESSING_TITLE, blessed=0.0, blessing_stage="retrieval")  # newer, refused
  add(MODEL_TITLE, blessed=1.0, blessing_stage="retrieval")     # wrong type
  query = _resolvers("X", "retrieval")["X-model-blessing-resolver_executor"][
      "resolver"]["outputArtifactQueries"]["model_blessing"]["filter"]
  assert [a["name"] for a in store.query(query)] == [r1]
  r3 = add(BLESSING_TITLE, blessed=1.0, blessing_stage="retrieval")
  assert [a["name"] for a in store.query(query)] == [r3, r1]  # newest first
  assert store.query('name="artifacts/2"')[0]["metadata"]["blessing_stage"] == \
      "ranking"
  with pytest.raises(kfp_local.SpecError, match="unsupported"):
    store.query("create_time > 5")


def test_fake_pipeline_runs_and_a_second_run_resolves_each_stage(tmp_path):
  root = str(tmp_path / "root")
  spec = _write(tmp_path, fake_spec())
  first, lines = _run(spec, root, run_id="run-1")
  assert len(lines) == 9 + 2  # one line per task, a header and a footer
  assert any(l.startswith("[1/9] ") for l in lines)
  for stage in ("Retrieval", "Ranking"):
    assert _resolved(first, f"Latest{stage}-model-blessing-resolver",
                     "model_blessing") == []
    assert _resolved(first, f"Latest{stage}-model-resolver", "model") == []
  with open(os.path.join(root, "run-1", "RankingTrainer", "model",
                         "params.json")) as f:
    trainer = json.load(f)
  assert trainer["inputs"] == {"schema": [_resolved(first, "Schema",
                                                    "schema")[0]],
                               "base_model": []}
  # The project's Python, not the image's `python`; the image's copy of the
  # repository mapped to this checkout.
  with open(os.path.join(root, "run-1", "Schema", "schema",
                         "params.json")) as f:
    schema_params = json.load(f)["params"]
  assert schema_params["schema_file"] == os.path.join(
      kfp_local.REPO_ROOT, "pipeline", "schemas", "movielens_100k.pbtxt")

  second, _ = _run(spec, root, run_id="run-2")
  for stage in ("Retrieval", "Ranking"):
    [blessing] = first["tasks"][f"{stage}Evaluator"]["outputs"]["blessing"]
    [model] = first["tasks"][f"{stage}Trainer"]["outputs"]["model"]
    assert blessing["metadata"]["current_model_id"] == model["name"]
    assert _resolved(second, f"Latest{stage}-model-blessing-resolver",
                     "model_blessing") == [blessing["name"]]
    assert _resolved(second, f"Latest{stage}-model-resolver", "model") == [
        model["name"]]
    with open(os.path.join(root, "run-2", f"{stage}Evaluator", "blessing",
                           "params.json")) as f:
      assert json.load(f)["inputs"]["baseline_model"] == [model["name"]]


def test_unblessed_models_are_never_baselines(tmp_path):
  root = str(tmp_path / "root")
  _run(_write(tmp_path, fake_spec(blessed=(1, 0)), "a.yaml"), root,
       run_id="run-1")
  second, _ = _run(_write(tmp_path, fake_spec(), "b.yaml"), root,
                   run_id="run-2")
  assert len(_resolved(second, "LatestRetrieval-model-resolver", "model")) == 1
  assert _resolved(second, "LatestRanking-model-resolver", "model") == []


def test_a_failing_task_stops_the_run_with_its_log(tmp_path):
  spec = fake_spec()
  spec["root"]["dag"]["tasks"]["RankingTrainer"]["inputs"]["parameters"][
      "exit_code"] = _const("3")
  spec["components"]["RankingTrainer"]["inputDefinitions"]["parameters"][
      "exit_code"] = {"type": "STRING"}
  with pytest.raises(kfp_local.TaskFailed) as failed:
    _run(_write(tmp_path, spec), str(tmp_path / "root"))
  assert failed.value.task == "RankingTrainer"
  assert failed.value.returncode == 3
  assert "full log:" in str(failed.value)
  assert os.path.isfile(failed.value.log_path)


def test_cli_flag_errors(tmp_path, capsys):
  assert kubeflow_runner.main(["--pipeline-root", str(tmp_path / "r"),
                               "--run-locally", str(tmp_path / "none.yaml")]) == 1
  assert "No compiled pipeline spec" in capsys.readouterr().err
  assert kubeflow_runner.main(["--pipeline-root", "gs://b/r", "--run-locally",
                               _write(tmp_path, fake_spec())]) == 1
  assert "local pipeline root" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    kubeflow_runner.parse_args(["--pipeline-root", "/r", "--run-locally", "p",
                                "--endpoint", "http://x", "--submit"])
  assert "does not go with" in capsys.readouterr().err


# ------------------------------------------------ the real compiled pipeline

PUSHER_EXECUTOR = "components.serving_pusher.Executor"
RETRIEVAL_SIGNATURES = {"serving_default", "query_embedding",
                        "candidate_embedding"}
RANKING_SIGNATURES = {"serving_default"}
# Planted data the local e2e test blesses both models on (tests/
# test_pipeline_e2e.py), and its trainer settings.
DATA = {"num_users": 120, "num_movies": 360, "ratings_per_user": 30}
RANKING_CONFIG = synthetic_data.E2E_RANKING_CONFIG
RETRIEVAL_CONFIG = synthetic_data.E2E_RETRIEVAL_CONFIG
# A much worse retraining: untrained models (warm start off, it would
# restore the blessed weights).
WORSE = {"retrieval": dict(RETRIEVAL_CONFIG, epochs=0, warm_start=False),
         "ranking": dict(RANKING_CONFIG, epochs=0, warm_start=False)}


def _versions(path):
  return sorted(d for d in os.listdir(path) if d.isdigit()) \
      if os.path.isdir(path) else []


def _compile(tmp, data, root, name, retrieval=None, ranking=None):
  out = str(tmp / name)
  assert kubeflow_runner.main([
      "--pipeline-root", root, "--data", data, "--output", out,
      "--retrieval-config", json.dumps(retrieval or {}),
      "--ranking-config", json.dumps(ranking or {})]) == 0
  return out


def _pushers(spec):
  """Pusher task → its model_blessing producer, read from the spec."""
  tasks = spec["root"]["dag"]["tasks"]
  result = {}
  for name, task in tasks.items():
    _, executor = kfp_local._executor_of(spec, name)  # pylint: disable=protected-access
    if PUSHER_EXECUTOR in executor.get("container", {}).get("args", []):
      ref = task["inputs"]["artifacts"]["model_blessing"]["taskOutputArtifact"]
      result[name] = (ref["producerTask"], ref["outputArtifactKey"])
  return result


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  """One good run of the compiled pipeline, then a worse retraining."""
  tmp = tmp_path_factory.mktemp("kfp_local")
  data = str(tmp / "ml-100k")
  synthetic_data.write_ml100k(data, **DATA)
  root = str(tmp / "root")
  good = _compile(tmp, data, root, "good.yaml", retrieval=RETRIEVAL_CONFIG,
                  ranking=RANKING_CONFIG)
  worse = _compile(tmp, data, root, "worse.yaml", **WORSE)
  serving = os.path.join(root, "serving")
  t0 = time.time()
  first = kfp_local.run(good, root, image_src_dir=IMAGE_SRC_DIR)
  versions = {s: _versions(os.path.join(serving, s))
              for s in ("retrieval", "ranking")}
  second = kfp_local.run(worse, root, image_src_dir=IMAGE_SRC_DIR)
  spec, _ = kfp_local.load_spec(worse)
  return {"first": first, "second": second, "spec": spec, "root": root,
          "serving": serving, "versions_after_first": versions,
          "seconds": time.time() - t0}


@pytest.mark.slow
def test_compiled_pipeline_run_locally_pushes_both_models(two_runs):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for stage, signatures in (("retrieval", RETRIEVAL_SIGNATURES),
                            ("ranking", RANKING_SIGNATURES)):
    [version] = two_runs["versions_after_first"][stage]
    loaded = tf.saved_model.load(os.path.join(two_runs["serving"], stage,
                                              version))
    assert signatures <= set(loaded.signatures), (stage, list(loaded.signatures))
  pushers = _pushers(two_runs["spec"])
  assert len(pushers) == 2
  for pusher, (evaluator, key) in pushers.items():
    [blessing] = two_runs["first"]["tasks"][evaluator]["outputs"][key]
    assert blessing["metadata"]["blessed"] == 1
    [pushed] = two_runs["first"]["tasks"][pusher]["outputs"]["pushed_model"]
    assert pushed["metadata"]["pushed"] == 1
  print(f"two local runs of the compiled pipeline: {two_runs['seconds']:.0f} s "
        f"wall, {two_runs['first']['cpu_seconds']:.0f} + "
        f"{two_runs['second']['cpu_seconds']:.0f} CPU s in tasks")


def _stage_resolvers(spec):
  """blessing-resolver task → the stage its compiled query filters on."""
  result = {}
  for name in spec["root"]["dag"]["tasks"]:
    _, executor = kfp_local._executor_of(spec, name)  # pylint: disable=protected-access
    for query in executor.get("resolver", {}).get(
        "outputArtifactQueries", {}).values():
      m = re.search(r'blessing_stage\.string_value="(\w+)"', query["filter"])
      if m:
        result[name] = m.group(1)
  return result


RESOLVERS = {"retrieval": "LatestBlessedRetrievalModel",
             "ranking": "LatestBlessedRankingModel"}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["retrieval", "ranking"])
def test_second_run_resolves_the_first_runs_served_model_of_its_stage(
    two_runs, stage):
  """The baseline is what the stage's ServingPusher pushed (its
  served_blessing, tagged "<stage>_served"), as in local runs."""
  spec, first, second = two_runs["spec"], two_runs["first"], two_runs["second"]
  resolver = RESOLVERS[stage]
  served = f"{stage}_served"
  assert _stage_resolvers(spec)[resolver + "-model-blessing-resolver"] == served
  [blessing] = second["tasks"][resolver + "-model-blessing-resolver"][
      "outputs"]["model_blessing"]
  assert blessing["run_id"] == first["run_id"]
  assert blessing["metadata"]["blessing_stage"] == served
  assert blessing["metadata"]["blessed"] == 1
  [model] = second["tasks"][resolver + "-model-resolver"]["outputs"]["model"]
  assert model["run_id"] == first["run_id"]
  assert model["name"] == blessing["metadata"]["current_model_id"]
  # ... and it is the baseline the second run's evaluator was given.
  consumers = [t for t, task in spec["root"]["dag"]["tasks"].items()
               if task.get("inputs", {}).get("artifacts", {}).get(
                   "baseline_model", {}).get("taskOutputArtifact", {}).get(
                       "producerTask") == resolver + "-model-resolver"]
  assert consumers
  for evaluator in consumers:
    [out] = second["tasks"][evaluator]["outputs"]["blessing"]
    assert out["metadata"].get("baseline_model_id") == model["name"]


@pytest.mark.slow
def test_worse_retraining_run_locally_pushes_nothing(two_runs):
  for pusher, (evaluator, key) in _pushers(two_runs["spec"]).items():
    [blessing] = two_runs["second"]["tasks"][evaluator]["outputs"][key]
    assert blessing["metadata"]["blessed"] == 0, (evaluator, blessing)
    [pushed] = two_runs["second"]["tasks"][pusher]["outputs"]["pushed_model"]
    assert pushed["metadata"]["pushed"] == 0
  for stage, versions in two_runs["versions_after_first"].items():
    assert _versions(os.path.join(two_runs["serving"], stage)) == versions
