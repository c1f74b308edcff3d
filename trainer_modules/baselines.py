"""Trivial rating baselines, computed on the same split as the model.

A ranking model is only worth serving if it beats predicting the global mean
and a regularized user + item bias model. The TwoStageEvaluator computes
both on the raw train/eval split (its blessing needs the ranking model's
RMSE below the bias baseline; the run summary and report show them), and
benchmarks/ranking_quality.py uses the same code.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from common import ids


def rmse(pred, y) -> float:
  return float(np.sqrt(np.mean((np.asarray(pred, float) - np.asarray(y, float)) ** 2)))


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
  """values[position of each query in keys], 0 where absent."""
  at = ids.positions(keys, query)
  return np.where(at >= 0, values[np.maximum(at, 0)] if len(values) else 0.0, 0.0)


def rating_baselines(train_users: Sequence, train_items: Sequence, train_y: Sequence[float],
                     test_users: Sequence, test_items: Sequence, test_y: Sequence[float],
                     reg_user: float = 5.0, reg_item: float = 10.0,
                     sweeps: int = 10) -> Dict[str, float]:
  """Test RMSE of the global mean and of mu + b_u + b_i (regularized ALS).

  Unknown users or items get a zero bias; predictions are clipped to the
  training rating range.
  """
  # Index form with numpy (ids sorted once): a few bytes per row, no Python
  # object per row, so it holds at tens of millions of ratings.
  user_ids, u = np.unique(ids.as_ids(train_users), return_inverse=True)
  item_ids, i = np.unique(ids.as_ids(train_items), return_inverse=True)
  y = np.asarray(train_y, float)
  mu = y.mean()
  bu, bi = np.zeros(len(user_ids)), np.zeros(len(item_ids))
  nu = np.bincount(u, minlength=len(user_ids))
  ni = np.bincount(i, minlength=len(item_ids))
  for _ in range(sweeps):
    bi = np.bincount(i, y - mu - bu[u], minlength=len(item_ids)) / (reg_item + ni)
    bu = np.bincount(u, y - mu - bi[i], minlength=len(user_ids)) / (reg_user + nu)
  tu = _lookup(user_ids, bu, ids.as_ids(test_users))
  ti = _lookup(item_ids, bi, ids.as_ids(test_items))
  pred = np.clip(mu + tu + ti, y.min(), y.max())
  return {"global_mean": rmse(np.full(len(test_y), mu), test_y),
          "user_item_bias": rmse(pred, test_y),
          "user_item_bias_train": rmse(mu + bu[u] + bi[i], y)}
