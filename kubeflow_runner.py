"""Compiles the pipeline for Kubeflow Pipelines (KFP v2) and optionally submits it.

    python kubeflow_runner.py --image REGISTRY/movielens-two-stage:TAG \
        --pipeline-root gs://BUCKET/root --data gs://BUCKET/ml-100k --output pipeline.yaml

writes the pipeline spec (YAML by default, what kfp.Client submits; JSON for
Vertex AI). Add `--endpoint URL --submit` to start a run on a KFP 2.x
deployment, and/or `--endpoint URL --schedule "CRON"` to create a recurring
run (KFP cron: 6 fields, seconds first, e.g. "0 0 3 * * *" = 03:00 daily).
`--spec FILE` submits an already compiled YAML instead of compiling.
`--run-locally FILE` executes a compiled spec on this machine, task by task,
as a KFP backend starts them (runners/kfp_local.py). The work is done in
runners/kubeflow.py; this file declares the flags and dispatches.

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
import sys
from typing import List, Optional

from pipeline import configs
from runners import flags
from runners import kubeflow
from trainer_modules import configs as trainer_configs

DEFAULT_IMAGE = os.environ.get("RECSYS_IMAGE", "movielens-two-stage:latest")
IMAGE_SRC_DIR = kubeflow.IMAGE_SRC_DIR
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


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  if args.run_locally:
    return kubeflow.run_locally(args)
  if args.spec:
    path = os.path.abspath(args.spec)
  else:
    path = kubeflow.compile_pipeline(args)
    print(f"Pipeline spec written to {path}")
  if args.submit or args.schedule:
    if args.image == "movielens-two-stage:latest":
      print("warning: --image is the local default; the cluster must be able "
            "to pull it (push the image and pass --image REGISTRY/...)",
            file=sys.stderr)
    kubeflow.submit(args, path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
