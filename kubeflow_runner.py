"""Compiles the pipeline for Kubeflow Pipelines (KFP v2) with KubeflowV2DagRunner.

    python kubeflow_runner.py --image REGISTRY/movielens-two-stage:TAG \
        --pipeline-root gs://BUCKET/root --data gs://BUCKET/ml-100k --output pipeline.yaml

Writes the pipeline spec only (YAML by default, what kfp.Client submits; JSON
for Vertex AI). Submission and scheduled runs are the subject of a later
change (see the README's Kubeflow section for what exists today).

Module code reaches the containers as this installed package: Transform and
the Trainers get import paths (transform.preprocessing.preprocessing_fn,
trainer_modules.*.run_fn), so nothing is built into wheels at compile time.
"""
import common  # noqa: F401  pylint: disable=unused-import  (first: sets TF_USE_LEGACY_KERAS)

import argparse
import os
import sys
from typing import List, Optional

from pipeline import configs

DEFAULT_IMAGE = os.environ.get("RECSYS_IMAGE", "movielens-two-stage:latest")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--image", default=DEFAULT_IMAGE,
                 help="container image with this package installed "
                      "(env RECSYS_IMAGE)")
  p.add_argument("--pipeline-root", required=True,
                 help="URI for pipeline outputs, e.g. gs://bucket/root")
  p.add_argument("--data", default=configs.DEFAULT_DATA)
  p.add_argument("--data-config", default="")
  p.add_argument("--split", default=configs.DEFAULT_SPLIT)
  p.add_argument("--serving-dir", default="",
                 help="where Pushers write (default <pipeline-root>/serving)")
  p.add_argument("--output", default="pipeline.yaml",
                 help="spec file; .yaml/.yml for KFP, .json for Vertex AI")
  p.add_argument("--beam-args", nargs="*", default=None)
  return p.parse_args(argv)


def compile_pipeline(args: argparse.Namespace) -> str:
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kfp_runner  # pylint: disable=g-import-not-at-top
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top

  serving_dir = args.serving_dir or args.pipeline_root.rstrip("/") + "/serving"
  p = pipeline_lib.create_pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=args.pipeline_root,
      data=args.data if not args.data_config else "",
      data_config=args.data_config,
      split=args.split,
      serving_dir=serving_dir,
      beam_pipeline_args=args.beam_args,
  )
  output = os.path.abspath(args.output)
  runner = kfp_runner.KubeflowV2DagRunner(
      config=kfp_runner.KubeflowV2DagRunnerConfig(default_image=args.image),
      output_dir=os.path.dirname(output),
      output_filename=os.path.basename(output))
  runner.run(p)
  _keep_stage_filters(output)
  return output


def _keep_stage_filters(path: str) -> None:
  """Re-adds the per-stage filter that the KubeflowV2 compiler drops.

  See components/blessing_stage.py: the compiled LatestBlessedModelStrategy
  query matches any blessed ModelBlessing; each stage's query gets its
  `blessing_stage` so retrieval and ranking baselines never mix.
  """
  import json  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top
  from components import blessing_stage  # pylint: disable=g-import-not-at-top
  from pipeline import ranking_branch, retrieval_branch  # pylint: disable=g-import-not-at-top

  is_json = path.endswith(".json")
  with open(path) as f:
    spec = json.load(f) if is_json else yaml.safe_load(f)
  stages = {retrieval_branch.RESOLVER_ID: blessing_stage.RETRIEVAL,
            ranking_branch.RESOLVER_ID: blessing_stage.RANKING}
  executors = spec.get("pipelineSpec", spec)["deploymentSpec"]["executors"]
  stages = {r: s for r, s in stages.items()
            if f"{r}-model-blessing-resolver_executor" in executors}
  blessing_stage.add_stage_filters(spec, stages)
  with open(path, "w") as f:
    if is_json:
      json.dump(spec, f, indent=2, sort_keys=True)
    else:
      yaml.safe_dump(spec, f, sort_keys=False)


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  path = compile_pipeline(args)
  print(f"Pipeline spec written to {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
