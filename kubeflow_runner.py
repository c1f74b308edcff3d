"""Compiles the pipeline for Kubeflow Pipelines (KFP v2) and optionally submits it.

    python kubeflow_runner.py --image REGISTRY/movielens-two-stage:TAG \
        --pipeline-root gs://BUCKET/root --data gs://BUCKET/ml-100k --output pipeline.yaml

writes the pipeline spec (YAML by default, what kfp.Client submits; JSON for
Vertex AI). Add `--endpoint URL --submit` to start a run on a KFP 2.x
deployment, and/or `--endpoint URL --schedule "CRON"` to create a recurring
run (KFP cron: 6 fields, seconds first, e.g. "0 0 3 * * *" = 03:00 daily).
`--spec FILE` submits an already compiled YAML instead of compiling.
`--run-locally FILE` executes a compiled spec on this machine, task by task,
as a KFP backend starts them (runners/kfp_local.py).

Module code reaches the containers as this installed package (see the
Dockerfile): Transform and the Trainers get import paths
(transform.preprocessing.preprocessing_fn, trainer_modules.*.run_fn), so
nothing is built into wheels at compile time. Files shipped in the package
(the curated schemas) are referenced at their path inside the image
(--image-src-dir, where the Dockerfile copies this repository).
"""
import common  # noqa: F401  pylint: disable=unused-import  (first: sets TF_USE_LEGACY_KERAS)

import argparse
import os
import posixpath
import sys
from typing import Any, List, Optional

from common import filesystems
from pipeline import configs
from runners import flags
from trainer_modules import configs as trainer_configs

DEFAULT_IMAGE = os.environ.get("RECSYS_IMAGE", "movielens-two-stage:latest")
# Where the Dockerfile copies this repository (its WORKDIR).
IMAGE_SRC_DIR = "/opt/recsys"
DEFAULT_EXPERIMENT = configs.PIPELINE_NAME
CRON_FIELDS = 6


def _cron(value: str) -> str:
  """argparse type: a KFP cron expression (6 fields, seconds first)."""
  fields = value.split()
  if len(fields) != CRON_FIELDS:
    raise argparse.ArgumentTypeError(
        f"KFP cron expressions have {CRON_FIELDS} space-separated fields "
        f"(second minute hour day-of-month month day-of-week), got "
        f"{len(fields)} in {value!r}; e.g. \"0 0 3 * * *\" runs daily at 03:00"
        + (f", i.e. prepend the seconds: \"0 {value.strip()}\""
           if len(fields) == 5 else ""))
  return " ".join(fields)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--image", default=DEFAULT_IMAGE,
                 help="container image with this package installed "
                      "(env RECSYS_IMAGE; build it with the Dockerfile)")
  p.add_argument("--pipeline-root", required=True,
                 help="URI for pipeline outputs, e.g. gs://bucket/root")
  p.add_argument("--data", default=configs.DEFAULT_DATA)
  p.add_argument("--data-config", default="")
  p.add_argument("--split", default=configs.DEFAULT_SPLIT)
  p.add_argument("--serving-dir", default="",
                 help="where Pushers write (default <pipeline-root>/serving)")
  p.add_argument("--output", default="pipeline.yaml",
                 help="spec file; .yaml/.yml for KFP, .json for Vertex AI")
  p.add_argument("--beam-args", default="",
                 help="Beam args for the data components, one string: e.g. "
                      "\"--runner=DataflowRunner --project=P --region=R "
                      "--temp_location=gs://B/tmp --setup_file=/opt/recsys/"
                      "setup.py\" (same-named defaults are replaced)")
  p.add_argument("--retrieval-config", type=trainer_configs.flag_type("retrieval"),
                 default={},
                 help="JSON overriding retrieval trainer settings, e.g. "
                      "'{\"epochs\": 8, \"distribution_strategy\": "
                      "\"multi_worker_mirrored\"}'")
  p.add_argument("--ranking-config", type=trainer_configs.flag_type("ranking"),
                 default={},
                 help="JSON overriding ranking trainer settings")
  flags.add_span_flags(p)
  flags.add_tune_flags(p)
  p.add_argument("--no-batch-recommendations", action="store_true",
                 help="no BatchRecommender after the Pushers")
  p.add_argument("--batch-recommendations-k", type=int, default=50)
  p.add_argument("--image-src-dir", default=IMAGE_SRC_DIR,
                 help="where the image holds this repository (the "
                      "Dockerfile's WORKDIR); package files such as the "
                      "curated schemas are referenced there")
  p.add_argument("--run-locally", default="", metavar="SPEC",
                 help="execute this compiled spec here instead of compiling: "
                      "each task's container command as compiled, with this "
                      "checkout for --image-src-dir and artifacts under the "
                      "(local) --pipeline-root; a second run resolves the "
                      "models blessed by the first")
  g = p.add_argument_group("submission to a KFP 2.x endpoint")
  g.add_argument("--endpoint", default="",
                 help="KFP API host, e.g. http://localhost:8080 after "
                      "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui "
                      "8080:80`")
  g.add_argument("--submit", action="store_true",
                 help="start a run of the spec now")
  g.add_argument("--schedule", type=_cron, default=None, metavar="CRON",
                 help="create a recurring run; KFP cron has 6 fields, "
                      "seconds first: \"0 0 3 * * *\" = daily at 03:00")
  g.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                 help="KFP experiment (created if missing)")
  g.add_argument("--run-name", default="",
                 help="run / recurring-run name (default: pipeline name "
                      "and time)")
  g.add_argument("--namespace", default=None,
                 help="Kubernetes namespace (multi-user KFP only)")
  g.add_argument("--spec", default="",
                 help="submit this compiled .yaml instead of compiling")
  args = p.parse_args(argv)
  if (args.submit or args.schedule) and not args.endpoint:
    p.error("--submit/--schedule need --endpoint (the KFP API host)")
  if args.run_locally and (args.submit or args.schedule or args.spec):
    p.error("--run-locally runs a spec here; it does not go with "
            "--submit/--schedule/--spec")
  if args.spec and not (args.submit or args.schedule):
    p.error("--spec is only for --submit/--schedule")
  if args.submit or args.schedule:
    package = args.spec or args.output
    if not package.endswith((".yaml", ".yml")):
      p.error(f"KFP submits a YAML spec; {package!r} is not .yaml/.yml")
  return args


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


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  if args.run_locally:
    return run_locally(args)
  if args.spec:
    path = os.path.abspath(args.spec)
  else:
    path = compile_pipeline(args)
    print(f"Pipeline spec written to {path}")
  if args.submit or args.schedule:
    if args.image == "movielens-two-stage:latest":
      print("warning: --image is the local default; the cluster must be able "
            "to pull it (push the image and pass --image REGISTRY/...)",
            file=sys.stderr)
    submit(args, path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
