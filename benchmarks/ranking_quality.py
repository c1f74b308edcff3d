"""Ranking quality on the real ml-100k: the ranking trainer vs simple baselines.

    .venv/bin/python -m benchmarks.ranking_quality [--data PATH] [--seeds 3]
        [--config '{"architecture": "dense"}'] [--out benchmarks/results/ranking_quality.json]

Random 80/20 split by a stable hash of (user_id, movie_id); the project's
preprocessing_fn runs on the training split with TFT Beam
(benchmarks/ml100k_data.py); trainer_modules.ranking.run_fn trains with each
seed and exports; the test RMSE is computed by feeding the raw eval examples
(without their rating) to the exported `serving_default`, so the whole serving
path (parsing, Transform graph, model, clipping) is measured. Baselines on
the same split: the global mean and a regularized user+item bias model
(alternating least squares sweeps in numpy).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402,F401  pylint: disable=unused-import,g-import-not-at-top

import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

from common import features as F  # noqa: E402  pylint: disable=g-import-not-at-top
from trainer_modules import baselines  # noqa: E402  pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(REPO, "..", "shared", "datasets", "ml-100k")
DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "ranking_quality.json")


rmse = baselines.rmse


def bias_baseline(train: List[dict], test: List[dict]) -> Dict[str, float]:
  """mu + b_u + b_i on the benchmark's split (trainer_modules/baselines.py)."""
  out = baselines.rating_baselines(
      [r[F.USER_ID] for r in train], [r[F.MOVIE_ID] for r in train],
      [r[F.USER_RATING] for r in train], [r[F.USER_ID] for r in test],
      [r[F.MOVIE_ID] for r in test], [r[F.USER_RATING] for r in test])
  return {"rmse": out["user_item_bias"], "train_rmse": out["user_item_bias_train"]}


def serving_predictions(model_dir: str, rows: List[dict],
                        batch_size: int = 4096) -> np.ndarray:
  """Predictions of the exported serving_default for raw rows (label removed)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  fn = tf.saved_model.load(model_dir).signatures["serving_default"]
  examples = [F.to_tf_example({k: v for k, v in r.items() if k != F.USER_RATING})
              .SerializeToString() for r in rows]
  out = []
  for start in range(0, len(examples), batch_size):
    batch = tf.constant(examples[start:start + batch_size])
    out.append(fn(examples=batch)["predictions"].numpy())
  return np.concatenate(out)


def train_once(data: Dict[str, object], work_dir: str, config: dict,
               train_steps: Optional[int] = None) -> Dict[str, object]:
  """Runs ranking.run_fn as the TFX Trainer would; returns time and paths."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from trainer_modules import ranking  # pylint: disable=g-import-not-at-top
  if os.path.exists(work_dir):
    shutil.rmtree(work_dir)
  serving_dir = os.path.join(work_dir, "model", "Format-Serving")
  fn_args = tfx.components.FnArgs(
      train_files=[data["train_pattern"]], eval_files=[data["eval_pattern"]],
      transform_output=data["tft_dir"], serving_model_dir=serving_dir,
      model_run_dir=os.path.join(work_dir, "model_run"),
      train_steps=train_steps, eval_steps=None, custom_config=config)
  start = time.time()
  ranking.run_fn(fn_args)
  return {"seconds": time.time() - start, "serving_dir": serving_dir}


def main(argv=None) -> Dict[str, object]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default=DEFAULT_DATA, help="ml-100k folder")
  parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file")
  parser.add_argument("--work_dir", default="/tmp/ranking_quality",
                      help="cache of the Transform output and the models")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--config", default="{}",
                      help="JSON custom_config overrides for the trainer")
  parser.add_argument("--train_steps", type=int, default=None)
  args = parser.parse_args(argv)

  from benchmarks import ml100k_data  # pylint: disable=g-import-not-at-top
  from trainer_modules import ranking  # pylint: disable=g-import-not-at-top

  t0 = time.time()
  data = ml100k_data.prepare(args.data, os.path.join(args.work_dir, "data"))
  train, test = data["rows"]["train"], data["rows"]["eval"]
  print(f"ml-100k: {len(train)} train / {len(test)} test ratings "
        f"(data ready in {time.time() - t0:.0f}s)", flush=True)
  y_test = np.array([r[F.USER_RATING] for r in test])
  mu = float(np.mean([r[F.USER_RATING] for r in train]))
  baseline_rmse = {"global_mean": {"rmse": rmse(np.full(len(test), mu), y_test)},
               "user_item_bias": bias_baseline(train, test)}

  overrides = json.loads(args.config)
  config = ranking.resolve_config(overrides)
  runs = []
  for seed in range(args.seeds):
    cfg = dict(overrides, seed=seed)
    run = train_once(data, os.path.join(args.work_dir, f"run_{seed}"), cfg,
                     args.train_steps)
    pred = serving_predictions(run["serving_dir"], test)
    runs.append({"seed": seed, "rmse": rmse(pred, y_test),
                 "train_seconds": round(run["seconds"], 1)})
    print(f"seed {seed}: test RMSE {runs[-1]['rmse']:.4f} "
          f"({run['seconds']:.0f}s)", flush=True)

  scores = np.array([r["rmse"] for r in runs])
  result = {
      "dataset": "ml-100k", "split": "random 80/20 by md5(user_id, movie_id)",
      "train_ratings": len(train), "test_ratings": len(test),
      "config": {k: config[k] for k in sorted(config) if k != "seed"},
      "model": {"rmse_mean": float(scores.mean()),
                "rmse_spread": float(scores.max() - scores.min()),
                "rmse_std": float(scores.std()),
                "train_seconds_mean": float(np.mean([r["train_seconds"] for r in runs])),
                "runs": runs},
      "baselines": baseline_rmse,
  }
  name = f"ranking ({config['architecture']})"
  print(f"\n{'model':<28}{'test RMSE':>22}")
  print(f"{name:<28}{scores.mean():>12.4f} ± {scores.std():.4f} "
        f"(min {scores.min():.4f}, max {scores.max():.4f}, "
        f"{result['model']['train_seconds_mean']:.0f}s/run)")
  for key, value in baseline_rmse.items():
    print(f"{key:<28}{value['rmse']:>12.4f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.out}")
  return result


if __name__ == "__main__":
  main()
