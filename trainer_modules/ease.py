"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): a closed-form
item-item model that is among the strongest simple baselines on MovieLens.

Used twice, with the same fit: the ranking model carries B as its item-item
score (trainer_modules/ranking.py), and the TwoStageEvaluator fits it on the
same split as the baseline that two-stage lists are compared with.

    P = (XᵀX + λI)⁻¹,   B = I − P · diag(1 / diag(P))   (so diag(B) = 0),
    scores = X_u · B.

It needs a dense N×N inverse, so it is fitted only up to MAX_ITEMS items
(20k: 1.6 GB per float32 matrix); above that `can_fit` gives the reason the
baseline is skipped. Below 4,096 items the inverse is computed in float64
(cheap and exact), above in float32 to halve the memory.

Memory is about one dense matrix: XᵀX is accumulated into it from the
sparse products of blocks of users, inverted in place (LAPACK getrf/getri)
and turned into B in place. (The whole sparse product can hold N² entries
with their indices: fitted that way with np.linalg.inv, 9.5k items of 3M
synthetic ratings took +3.0 GiB; this way +0.7 GiB, the same B.)
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import linalg, sparse

MAX_ITEMS = 20_000
DEFAULT_LAMBDA = 500.0
_FLOAT64_BELOW = 4_096
# Sparse entries (Σ of a block's users' squared history lengths) per block
# of XᵀX: ~12 bytes each, so ~100 MB of temporaries at a time.
_GRAM_BLOCK_ENTRIES = 8_000_000


class EaseSkipped(ValueError):
  """The catalogue is too large for a dense EASE fit."""


def can_fit(n_items: int) -> Optional[str]:
  """None if EASE can be fitted on n_items, else why it is skipped."""
  if n_items > MAX_ITEMS:
    return (f"EASE skipped: {n_items} items > MAX_ITEMS={MAX_ITEMS} "
            f"(a dense {n_items}x{n_items} inverse would need "
            f"{n_items * n_items * 4 / 1e9:.1f} GB per float32 matrix)")
  return None


def fit(x: sparse.spmatrix, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
  """Item-item weights B (float32 [N, N], zero diagonal) of a binary [U, N] matrix.

  Raises EaseSkipped (with can_fit's reason) above MAX_ITEMS.
  """
  n = x.shape[1]
  reason = can_fit(n)
  if reason:
    raise EaseSkipped(reason)
  if lam <= 0:
    raise ValueError(f"EASE needs lam > 0, got {lam}")
  dtype = np.float64 if n < _FLOAT64_BELOW else np.float32
  g = gram(sparse.csr_matrix(x, dtype=dtype))
  g[np.diag_indices(n)] += lam
  p = linalg.inv(g, overwrite_a=True, check_finite=False)
  del g
  p /= -np.diag(p)[None, :]  # diag(p) is copied before the division
  p[np.diag_indices(n)] = 0.0
  return p.astype(np.float32, copy=False)


def gram(x: sparse.csr_matrix) -> np.ndarray:
  """Dense XᵀX [N, N] of a CSR [U, N] matrix, in its dtype, summed over
  blocks of rows so that no block's sparse product exceeds
  _GRAM_BLOCK_ENTRIES entries (one row may, alone)."""
  n = x.shape[1]
  g = np.zeros((n, n), dtype=x.dtype)
  cost = np.cumsum(np.diff(x.indptr).astype(np.int64) ** 2)
  start = 0
  while start < x.shape[0]:
    done = cost[start - 1] if start else 0
    stop = max(start + 1, int(np.searchsorted(cost, done + _GRAM_BLOCK_ENTRIES,
                                              side="right")))
    block = x[start:stop]
    product = (block.T @ block).tocsr()
    product.sum_duplicates()  # a no-op when canonical, which products are
    product = product.tocoo()
    g[product.row, product.col] += product.data
    start = stop
  return g


def scores(x_rows: sparse.spmatrix, b: np.ndarray) -> np.ndarray:
  """Dense scores [U, N] of users given their (training) rows."""
  return np.asarray(sparse.csr_matrix(x_rows, dtype=np.float32) @ b, dtype=np.float32)
