"""Runs the pipeline locally: LocalDagRunner, SQLite MLMD, Beam DirectRunner.

    python local_runner.py --data ../shared/datasets/ml-100k --output-dir tfx_output

Output layout (DIR = --output-dir, default ./tfx_output):
  DIR/tfx/          pipeline root: every component's artifacts
  DIR/metadata.db   ML Metadata (SQLite): lineage, cache
  DIR/logs/         full TF / Beam / TFX logs of each run
  DIR/serving/      pushed models: retrieval/<version>/, ranking/<version>/

The console shows one line per component start and end with elapsed time and
a summary table; everything else goes to the log file.

Scheduled retraining, retention and rollback (runners/local.py,
runners/schedule.py, runners/retention.py):

    python local_runner.py --data ... --schedule "0 3 * * *"   # or --every 24h
    python local_runner.py --keep-versions 5 --keep-runs 10     # the defaults
    python local_runner.py --rollback ranking                   # or ranking=VERSION

One run per output directory at a time (a lock file in it): a second runner
exits with code 75 (EX_TEMPFAIL), a scheduler skips that tick.
"""
import common  # noqa: F401  pylint: disable=unused-import  (first: sets TF_USE_LEGACY_KERAS)

import argparse
import sys
from typing import List, Optional

from pipeline import configs
from runners import flags
from runners import local
from trainer_modules import configs as trainer_configs

EXIT_LOCKED = local.EXIT_LOCKED
TICK_FLAG = flags.TICK_FLAG


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      description="Run the two-stage MovieLens recommender pipeline locally.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--data", default=configs.DEFAULT_DATA,
                 help="tfds:movielens/<config>, or a GroupLens folder/zip "
                      "(e.g. ../shared/datasets/ml-100k) for offline use")
  p.add_argument("--data-config", default="",
                 help="YAML file describing your own interaction data "
                      "(see examples/data_config.example.yaml); replaces --data")
  p.add_argument("--split", default=configs.DEFAULT_SPLIT,
                 help="random | time | u1..u5 | ua | ub (GroupLens ml-100k folds)")
  p.add_argument("--eval-fraction", type=float, default=configs.EVAL_FRACTION)
  p.add_argument("--max-bad-row-fraction", type=float,
                 default=configs.MAX_BAD_ROW_FRACTION,
                 help="skip (and count) up to this fraction of unparsable rows")
  flags.add_span_flags(p)
  flags.add_tune_flags(p)
  p.add_argument("--output-dir", default=configs.DEFAULT_OUTPUT_DIR)
  p.add_argument("--beam-args", default="",
                 help="extra Beam pipeline args, e.g. "
                      "'--direct_running_mode=multi_processing --direct_num_workers=2'")
  p.add_argument("--force", action="store_true",
                 help="ignore the TFX cache and run every component")
  p.add_argument("--retrieval-epochs", type=int, default=None)
  p.add_argument("--ranking-epochs", type=int, default=None)
  p.add_argument("--retrieval-config", type=trainer_configs.flag_type("retrieval"),
                 default={},
                 help='JSON object of retrieval hyperparameters, e.g. '
                      '\'{"embedding_dim": 32, "learning_rate": 0.02}\'')
  p.add_argument("--ranking-config", type=trainer_configs.flag_type("ranking"),
                 default={},
                 help='JSON object of ranking hyperparameters, e.g. '
                      '\'{"architecture": "dense", "batch_size": 512}\'')
  p.add_argument("--distribution-strategy", default=None,
                 choices=("auto", "mirrored", "multi_worker_mirrored",
                          "one_device"),
                 help="tf.distribute strategy of both trainers (default: "
                      "their configs', auto)")
  p.add_argument("--no-retrieval", action="store_true", help="skip the retrieval branch")
  p.add_argument("--no-ranking", action="store_true", help="skip the ranking branch")
  p.add_argument("--no-batch-recommendations", action="store_true",
                 help="skip the BatchRecommender (top-k of every user after a push)")
  p.add_argument("--batch-recommendations-k", type=int, default=50,
                 help="recommendations per user of the BatchRecommender")
  p.add_argument("--verbose", action="store_true", help="also print full logs")
  p.add_argument("--report-only", action="store_true",
                 help="rebuild DIR/reports/latest.html (the newest run's HTML "
                      "report) from ML Metadata without running anything")
  flags.add_operations_flags(p)
  args = p.parse_args(argv)
  if args.rollback and (args.schedule or args.every):
    p.error("--rollback cannot be combined with --schedule / --every")
  if args.max_runs is not None and not (args.schedule or args.every):
    p.error("--max-runs only applies with --schedule or --every")
  try:  # before anything runs: a bad trainer setting is a usage error
    local.trainer_settings(args)
  except trainer_configs.ConfigError as e:
    p.error(str(e))
  return args


def main(argv: Optional[List[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  paths = configs.output_paths(args.output_dir)
  problem = local.output_dir_problem(paths["output_dir"])
  if problem:
    print(f"✘ Not started: {problem}.", file=sys.stderr)
    return 1
  if args.rollback:
    return local.run_rollback(args, paths)
  if args.report_only:
    from runners import report  # pylint: disable=g-import-not-at-top
    return report.report_only(paths["output_dir"])
  if (args.schedule or args.every) and not args.scheduled_tick:
    return local.run_schedule(args, paths, argv, script=__file__)
  try:
    return local.locked_run(args, paths)
  except KeyboardInterrupt:
    print("\n✘ Interrupted.", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
