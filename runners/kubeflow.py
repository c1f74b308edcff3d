"""Compiling the pipeline for Kubeflow Pipelines (KFP v2) and submitting it.

kubeflow_runner.py parses the flags and dispatches here:

* `compile_pipeline`: create_pipeline() compiled by TFX's KubeflowV2DagRunner,
  then three fixes to the spec (`_postprocess`): each stage's blessing filter
  that the compiler drops, no KFP cache for ingestion (its cache key would
  freeze the data), and the curated schemas' paths inside the image;
* `submit`: a run and/or a recurring run on a KFP 2.x endpoint;
* `run_locally`: a compiled spec executed on this machine (kfp_local.py).
"""
import argparse
import os
import posixpath
import sys
from typing import Any

from common import filesystems
from pipeline import configs

# Where the Dockerfile copies this repository (its WORKDIR).
IMAGE_SRC_DIR = "/opt/recsys"


def compile_pipeline(args: argparse.Namespace) -> str:
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kfp_runner  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top

  serving_dir = args.serving_dir or args.pipeline_root.rstrip("/") + "/serving"
  # The data's file list is read at compile time (it picks the schema).
  for uri in (args.data, args.data_config):
    filesystems.ensure_scheme(uri)
  p = pipeline_lib.create_pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=args.pipeline_root,
      data=args.data if not args.data_config else "",
      data_config=args.data_config,
      split=args.split,
      serving_dir=serving_dir,
      retrieval_config=args.retrieval_config,
      ranking_config=args.ranking_config,
      range_config=args.range_config,
      rolling_spans=args.rolling_spans,
      drift_thresholds=args.drift_thresholds,
      tune=args.tune, tune_trials=args.tune_trials,
      beam_pipeline_args=configs.merged_beam_args(args.beam_args),
      batch_recommendations=not getattr(args, "no_batch_recommendations", False),
      batch_recommendations_k=getattr(args, "batch_recommendations_k", 50),
  )
  output = os.path.abspath(args.output)
  runner = kfp_runner.KubeflowV2DagRunner(
      config=kfp_runner.KubeflowV2DagRunnerConfig(default_image=args.image),
      output_dir=os.path.dirname(output),
      output_filename=os.path.basename(output))
  runner.run(p)
  _postprocess(output, getattr(args, "image_src_dir", IMAGE_SRC_DIR))
  return output


def _postprocess(path: str, image_src_dir: str) -> None:
  """Per-stage blessing filters back in, package paths moved into the image."""
  import json  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top

  is_json = path.endswith(".json")
  with open(path) as f:
    spec = json.load(f) if is_json else yaml.safe_load(f)
  _keep_stage_filters(spec)
  _always_ingest(spec)
  spec = _to_image_paths(spec, image_src_dir)
  with open(path, "w") as f:
    if is_json:
      json.dump(spec, f, indent=2, sort_keys=True)
    else:
      yaml.safe_dump(spec, f, sort_keys=False)


INGESTION_TASK = "MovieLensExampleGen"


def _always_ingest(spec: dict) -> None:
  """Turns KFP's cache off for the ingestion task.

  Locally, MovieLensExampleGen's cache key holds a fingerprint of the files
  behind the source, taken each time the pipeline is built. A compiled spec
  freezes that fingerprint, so a recurring run of it would be served the
  first run's examples forever and never see a new span or new files. The
  ingestion therefore always runs on Kubeflow. Its new examples artifact is
  a new input downstream, so each scheduled run retrains: what a schedule
  asks for.
  """
  tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]
  tasks[INGESTION_TASK].setdefault("cachingOptions", {})["enableCache"] = False


def _keep_stage_filters(spec: dict) -> None:
  """Re-adds the per-stage filter that the KubeflowV2 compiler drops.

  See components/blessing_stage.py: the compiled LatestBlessedModelStrategy
  query matches any blessed ModelBlessing; each stage's query gets its
  served stage ("retrieval_served", "ranking_served"), so the baseline is the
  model that stage's ServingPusher pushed and the stages never mix.
  """
  from components import blessing_stage  # pylint: disable=g-import-not-at-top
  from pipeline import ranking_branch, retrieval_branch  # pylint: disable=g-import-not-at-top

  stages = {retrieval_branch.RESOLVER_ID: blessing_stage.served_stage(blessing_stage.RETRIEVAL),
            ranking_branch.RESOLVER_ID: blessing_stage.served_stage(blessing_stage.RANKING)}
  executors = spec.get("pipelineSpec", spec)["deploymentSpec"]["executors"]
  stages = {r: s for r, s in stages.items()
            if f"{r}-model-blessing-resolver_executor" in executors}
  blessing_stage.add_stage_filters(spec, stages)


def _to_image_paths(node: Any, image_src_dir: str) -> Any:
  """Rewrites compile-machine paths of the curated schemas to the image's.

  ImportSchemaGen's schema_file is an absolute local path at compile time;
  the containers have the same file under <image_src_dir>/pipeline/schemas.
  """
  from pipeline import schemas  # pylint: disable=g-import-not-at-top

  local = os.path.abspath(schemas.SCHEMA_DIR) + os.sep
  remote = posixpath.join(image_src_dir, "pipeline", "schemas") + "/"

  def walk(x):
    if isinstance(x, dict):
      return {k: walk(v) for k, v in x.items()}
    if isinstance(x, list):
      return [walk(v) for v in x]
    if isinstance(x, str) and local in x:
      return x.replace(local, remote)
    return x
  return walk(node)


def kfp_client(args: argparse.Namespace):
  import kfp  # pylint: disable=g-import-not-at-top
  return kfp.Client(host=args.endpoint, namespace=args.namespace or "kubeflow")


def _run_name(args: argparse.Namespace, what: str) -> str:
  if args.run_name:
    return args.run_name
  import datetime  # pylint: disable=g-import-not-at-top
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
  return f"{configs.PIPELINE_NAME}-{what}-{stamp}"


def submit(args: argparse.Namespace, package: str) -> dict:
  """Starts a run and/or creates a recurring run of `package` on KFP.

  Returns the ids created: {"experiment_id", "run_id", "recurring_run_id"}.
  The spec carries no pipeline root (KFP's YAML has no runtime config), so
  --pipeline-root is passed as the run's runtime pipeline_root.
  """
  client = kfp_client(args)
  experiment = client.create_experiment(name=args.experiment,
                                        namespace=args.namespace)
  ids = {"experiment_id": experiment.experiment_id}
  if args.submit:
    result = client.create_run_from_pipeline_package(
        package, run_name=_run_name(args, "run"),
        experiment_id=experiment.experiment_id,
        pipeline_root=args.pipeline_root)
    ids["run_id"] = result.run_id
    print(f"Run {result.run_id} submitted to experiment {args.experiment!r}")
  if args.schedule:
    recurring = client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=_run_name(args, "schedule"),
        cron_expression=args.schedule,
        pipeline_package_path=package,
        pipeline_root=args.pipeline_root,
        max_concurrency=1,
        no_catchup=True)
    ids["recurring_run_id"] = recurring.recurring_run_id
    print(f"Recurring run {recurring.recurring_run_id} ({args.schedule!r}) "
          f"created in experiment {args.experiment!r}")
  return ids


def run_locally(args: argparse.Namespace) -> int:
  """--run-locally: the compiled spec executed here (runners/kfp_local.py)."""
  from runners import kfp_local  # pylint: disable=g-import-not-at-top
  try:
    kfp_local.run(args.run_locally, args.pipeline_root,
                  image_src_dir=args.image_src_dir)
  except (kfp_local.SpecError, kfp_local.TaskFailed, FileNotFoundError,
          ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0
