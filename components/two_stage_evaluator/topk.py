"""Per-user top-k metrics and top-k selection: pure numpy (no TF, no TFX).

Used by the TwoStageEvaluator component and benchmarks/two_stage_quality.py,
so that the pipeline and the benchmark score lists the same way.

Users and items are integer indices. Relevance is binary: a user's relevant
items are their eval movies. Users without relevant items are skipped (not
counted as zeros). The definitions follow Microsoft Recommenders
(recommenders.evaluation.python_evaluation), so our figures compare with
their published MovieLens benchmark:

* precision@k = hits in the top-k / k (k, even when fewer are recommended);
* recall@k    = hits in the top-k / |rel|;
* ndcg@k      = DCG / ideal DCG with gains 1 and discount 1/log2(rank + 1)
  (rank from 1); the ideal DCG puts min(|rel|, k) relevant items first;
* map@k       = their `map`: the sum of precision@i over the hit positions
  i ≤ k, divided by |rel| (not by min(|rel|, k) as their `map_at_k` does);
* hit_rate_at_k = the fraction of all (user, relevant item) pairs found in
  the users' top-k (pairs pooled over users, as the retrieval evaluator's
  hit@K).

Each metric is averaged over the evaluated users. Ranked lists hold distinct
item indices; -1 pads a list and never counts as a hit.
"""
from __future__ import annotations

from typing import Collection, Dict, List, Optional, Sequence, Union

import numpy as np
from scipy import sparse

PAD = -1  # item index of an empty slot in a top-k list


def _hits(ranked_row: Sequence[int], rel: Collection[int], k: int) -> np.ndarray:
  """Boolean hit vector of the first k entries of one ranked list."""
  return np.array([int(i) in rel for i in list(ranked_row)[:k]], dtype=bool)


def metrics_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[Collection[int]],
                 k: int) -> Dict[str, float]:
  """Mean precision/recall/nDCG/MAP at k over users with relevant items.

  ranked[u] is user u's list (best first), relevant[u] their relevant items.
  Returns {"precision@k", "recall@k", "ndcg@k", "map@k"} (k substituted,
  e.g. "ndcg@10") and "users", the number of users evaluated; the metrics
  are None when no user has a relevant item.
  """
  if len(ranked) != len(relevant):
    raise ValueError(f"ranked has {len(ranked)} users, relevant {len(relevant)}")
  if k < 1:
    raise ValueError(f"k must be ≥ 1, got {k}")
  discount = 1.0 / np.log2(np.arange(2, k + 2))
  sums = np.zeros(4)
  users = 0
  for row, rel in zip(ranked, relevant):
    rel = {int(i) for i in rel}
    if not rel:
      continue
    users += 1
    hit = _hits(row, rel, k)
    n_hit = int(hit.sum())
    dcg = float(discount[:len(hit)][hit].sum())
    idcg = float(discount[:min(len(rel), k)].sum())
    pos = np.flatnonzero(hit) + 1  # 1-based ranks of the hits
    ap = float((np.arange(1, n_hit + 1) / pos).sum()) / len(rel)
    sums += (n_hit / k, n_hit / len(rel), dcg / idcg, ap)
  names = (f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}")
  out: Dict[str, Optional[float]] = {
      n: (float(s / users) if users else None) for n, s in zip(names, sums)}
  out["users"] = users
  return out


def hit_rate_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[Collection[int]],
                  k: int) -> Optional[float]:
  """Fraction of all (user, relevant item) pairs that are in the user's top-k."""
  if len(ranked) != len(relevant):
    raise ValueError(f"ranked has {len(ranked)} users, relevant {len(relevant)}")
  hits = pairs = 0
  for row, rel in zip(ranked, relevant):
    rel = {int(i) for i in rel}
    pairs += len(rel)
    hits += int(_hits(row, rel, k).sum())
  return hits / pairs if pairs else None


def user_item_matrix(user_idx, item_idx, n_users: int, n_items: int) -> sparse.csr_matrix:
  """CSR [n_users, n_items] with 1.0 at each distinct (user, item) pair."""
  u = np.asarray(user_idx, dtype=np.int64)
  i = np.asarray(item_idx, dtype=np.int64)
  m = sparse.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, n_items))
  m.sum_duplicates()
  m.data[:] = 1.0
  return m


def popularity_scores(train: sparse.spmatrix) -> np.ndarray:
  """Most-popular baseline: distinct training users per item (float32 [N]).

  Ties are broken by top_k_from_scores (lower item index first).
  """
  x = sparse.csr_matrix(train, copy=True)
  x.data[:] = 1.0
  return np.asarray(x.sum(axis=0), dtype=np.float32).ravel()


def top_k_from_scores(scores: np.ndarray, k: int,
                      exclude: Union[None, sparse.spmatrix, Sequence[Sequence[int]]] = None
                      ) -> np.ndarray:
  """Indices [U, k] of each row's k best items, best first.

  scores is [U, N] (or [N], broadcast to one row). Items in exclude (per-row
  index arrays, or a [U, N] sparse matrix whose stored entries are excluded)
  are set to -inf first; NaN counts as -inf. Ties are broken by the lower
  item index, so the result is deterministic. Slots that only -inf items
  could fill (k > allowed items) are PAD (-1), so a seen item is never
  returned.
  """
  s = np.array(scores, dtype=np.float64, ndmin=2, copy=True)
  s[np.isnan(s)] = -np.inf
  u, n = s.shape
  if exclude is not None:
    if sparse.issparse(exclude):
      ex = sparse.csr_matrix(exclude)
      if ex.shape != s.shape:
        raise ValueError(f"exclude has shape {ex.shape}, scores {s.shape}")
      rows = np.repeat(np.arange(u), np.diff(ex.indptr))
      s[rows, ex.indices] = -np.inf
    else:
      if len(exclude) != u:
        raise ValueError(f"exclude has {len(exclude)} rows, scores {u}")
      for r, items in enumerate(exclude):
        s[r, np.asarray(items, dtype=np.int64)] = -np.inf
  k_eff = min(k, n)
  order = np.argsort(-s, axis=1, kind="stable")[:, :k_eff]
  top = np.take_along_axis(s, order, axis=1)
  order = np.where(np.isneginf(top), PAD, order)
  if k_eff < k:
    order = np.hstack([order, np.full((u, k - k_eff), PAD, dtype=order.dtype)])
  return order.astype(np.int64)


def rows_to_lists(top: np.ndarray) -> List[List[int]]:
  """A top-k array as lists without PAD slots."""
  return [[int(i) for i in row if i != PAD] for row in np.asarray(top)]
