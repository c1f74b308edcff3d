"""Trivial rating baselines, computed on the same split as the model.

A ranking model is only worth serving if it beats predicting the global mean
and a regularized user + item bias model. The ranking trainer writes both
next to its model (`baselines.json` in the ModelRun directory, shown in the
run summary), and benchmarks/ranking_quality.py uses the same code.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def rmse(pred, y) -> float:
  return float(np.sqrt(np.mean((np.asarray(pred, float) - np.asarray(y, float)) ** 2)))


def rating_baselines(train_users: Sequence, train_items: Sequence, train_y: Sequence[float],
                     test_users: Sequence, test_items: Sequence, test_y: Sequence[float],
                     reg_user: float = 5.0, reg_item: float = 10.0,
                     sweeps: int = 10) -> Dict[str, float]:
  """Test RMSE of the global mean and of mu + b_u + b_i (regularized ALS).

  Unknown users or items get a zero bias; predictions are clipped to the
  training rating range.
  """
  u_idx = {u: i for i, u in enumerate(sorted(set(train_users)))}
  i_idx = {m: i for i, m in enumerate(sorted(set(train_items)))}
  u = np.array([u_idx[x] for x in train_users])
  i = np.array([i_idx[x] for x in train_items])
  y = np.asarray(train_y, float)
  mu = y.mean()
  bu, bi = np.zeros(len(u_idx)), np.zeros(len(i_idx))
  nu = np.bincount(u, minlength=len(u_idx))
  ni = np.bincount(i, minlength=len(i_idx))
  for _ in range(sweeps):
    bi = np.bincount(i, y - mu - bu[u], minlength=len(i_idx)) / (reg_item + ni)
    bu = np.bincount(u, y - mu - bi[i], minlength=len(u_idx)) / (reg_user + nu)
  tu = np.array([bu[u_idx[x]] if x in u_idx else 0.0 for x in test_users])
  ti = np.array([bi[i_idx[x]] if x in i_idx else 0.0 for x in test_items])
  pred = np.clip(mu + tu + ti, y.min(), y.max())
  return {"global_mean": rmse(np.full(len(test_y), mu), test_y),
          "user_item_bias": rmse(pred, test_y),
          "user_item_bias_train": rmse(mu + bu[u] + bi[i], y)}
