"""Retrieval metrics over the full catalogue: pure numpy / TF, no TFX.

Everything works on integer indices: users 0..U-1 (the distinct eval users),
items 0..N-1 (the catalogue). Scores come from a `score_fn(user_indices)`
returning a dense [b, N] matrix (Q[b]·Cᵀ for a model, the popularity vector
for the most-popular baseline); users are processed in batches, the catalogue
always in one piece, top-K via tf.math.top_k (ties: lower catalogue index
first, so results are deterministic).

Definitions (pairs are the distinct eval (user, movie) pairs):
* hit@K: fraction of eval pairs whose movie is in the user's top-K.
* hit@K_excl_seen: the same after masking the movies the user rated in the
  training split to -inf; an eval pair whose movie the user also rated in
  training (rare: splits are per rating) counts as a miss.
* recall@K(_excl_seen): mean over users of the fraction of their eval movies
  that are in their top-K.
* Groups: all pairs; warm_users (the user has training ratings); cold_users
  (no training ratings); cold_items (the movie has no training ratings).
  Per-user recall in a group averages over users with ≥1 pair in the group.
* Eval pairs whose movie is not in the catalogue are counted as misses
  (item index -1) and reported in counts.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from common import ids

GROUPS = ("all", "warm_users", "cold_users", "cold_items")
MISSING = -1  # item index of an eval movie that is not in the catalogue


@dataclasses.dataclass
class EvalData:
  """The evaluation problem in index form."""
  num_users: int
  num_items: int
  pair_user: np.ndarray          # int [P], distinct eval pairs
  pair_item: np.ndarray          # int [P], catalogue index or MISSING
  seen_user: np.ndarray          # int [S], training (user, item) pairs of eval users
  seen_item: np.ndarray          # int [S]
  user_is_cold: np.ndarray       # bool [U]: no training ratings
  item_is_cold: np.ndarray       # bool [N]: no training ratings
  item_train_count: np.ndarray   # int [N]: training ratings per catalogue item

  def __post_init__(self):
    for name in ("pair_user", "pair_item", "seen_user", "seen_item"):
      setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
    self.user_is_cold = np.asarray(self.user_is_cold, dtype=bool)
    self.item_is_cold = np.asarray(self.item_is_cold, dtype=bool)
    self.item_train_count = np.asarray(self.item_train_count, dtype=np.int64)


def build_eval_data(eval_pairs: Sequence[tuple], train_pairs: Sequence[tuple],
                    catalogue_ids: Sequence, eval_user_ids: Optional[Sequence] = None
                    ) -> tuple:
  """Index form of (user_id, movie_id) pairs against a catalogue.

  Returns (EvalData, eval_user_ids): users are indexed in the order of
  `eval_user_ids` (default: sorted distinct users of eval_pairs).
  """
  def cols(pairs):
    return ([u for u, _ in pairs], [m for _, m in pairs])
  return build_eval_data_arrays(*cols(eval_pairs), *cols(train_pairs),
                                catalogue_ids, eval_user_ids)


def build_eval_data_arrays(eval_users, eval_movies, train_users, train_movies,
                           catalogue_ids: Sequence,
                           eval_user_ids: Optional[Sequence] = None) -> tuple:
  """build_eval_data on parallel id arrays (vectorised, for large splits:
  ids as fixed-width bytes, common/ids.py; no Python object per row)."""
  ev_u, ev_m = ids.as_ids(eval_users), ids.as_ids(eval_movies)
  if eval_user_ids is None:  # sorted distinct eval users, as given
    _, first = np.unique(ev_u, return_index=True)
    eval_user_ids = [eval_users[i] for i in first]
  eval_user_ids = list(eval_user_ids)
  users, items = ids.as_ids(eval_user_ids), ids.as_ids(catalogue_ids)
  ids.require_distinct(users, "eval_user_ids")
  ids.require_distinct(items, "catalogue_ids")
  n = len(items)

  # Distinct eval (user, movie) pairs by raw ids (two different movies
  # missing from the catalogue stay two misses).
  pu = ids.positions(users, ev_u)
  movie_ids, mi = np.unique(ev_m, return_inverse=True)
  keep = pu >= 0
  codes = np.unique(pu[keep] * max(len(movie_ids), 1) + mi[keep])
  pu, mi = np.divmod(codes, max(len(movie_ids), 1))
  pi = ids.positions(items, movie_ids)[mi]  # -1 (MISSING): not in the catalogue
  order = np.lexsort((pi, pu))
  pu, pi = pu[order], pi[order]

  tu = ids.positions(users, train_users)
  ti = ids.positions(items, train_movies)
  item_count = np.bincount(ti[ti >= 0], minlength=n).astype(np.int64)
  user_has_train = np.zeros(len(users), dtype=bool)
  user_has_train[tu[tu >= 0]] = True
  both = (tu >= 0) & (ti >= 0)
  codes = np.unique(tu[both] * max(n, 1) + ti[both])
  data = EvalData(
      num_users=len(users), num_items=n, pair_user=pu, pair_item=pi,
      seen_user=codes // max(n, 1), seen_item=codes % max(n, 1),
      user_is_cold=~user_has_train, item_is_cold=item_count == 0,
      item_train_count=item_count)
  return data, eval_user_ids


def _ranks(scores: np.ndarray, k: int) -> np.ndarray:
  """Position (0-based) of each item in each row's top-k, k if not in it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  b, n = scores.shape
  k = min(k, n)
  pos = np.full((b, n), k, dtype=np.int64)
  if k == 0 or b == 0:
    return pos
  _, top = tf.math.top_k(tf.constant(scores, dtype=tf.float32), k=k, sorted=True)
  top = top.numpy()
  rows = np.repeat(np.arange(b), k)
  pos[rows, top.reshape(-1)] = np.tile(np.arange(k), b)
  return pos


def pair_ranks(score_fn: Callable[[np.ndarray], np.ndarray], data: EvalData,
               max_k: int, batch_size: int = 512) -> Dict[str, np.ndarray]:
  """Top-max_k position of every eval pair, including and excluding seen.

  Returns {"incl": int [P], "excl": int [P]}; a value ≥ max_k (or ≥ N)
  means "not in the top-max_k".
  """
  big = np.iinfo(np.int64).max
  incl = np.full(len(data.pair_user), big, dtype=np.int64)
  excl = np.full(len(data.pair_user), big, dtype=np.int64)
  seen_order = np.argsort(data.seen_user, kind="stable")
  seen_user = data.seen_user[seen_order]
  seen_item = data.seen_item[seen_order]
  pair_order = np.argsort(data.pair_user, kind="stable")
  pair_user_sorted = data.pair_user[pair_order]
  for start in range(0, data.num_users, batch_size):
    stop = min(start + batch_size, data.num_users)
    users = np.arange(start, stop)
    scores = np.asarray(score_fn(users), dtype=np.float32)
    if scores.shape != (len(users), data.num_items):
      raise ValueError(f"score_fn returned shape {scores.shape}, expected "
                       f"{(len(users), data.num_items)}")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    # Eval pairs of these users.
    lo, hi = np.searchsorted(pair_user_sorted, [start, stop])
    idx = pair_order[lo:hi]
    pu, pi = data.pair_user[idx] - start, data.pair_item[idx]
    ok = pi != MISSING
    # Training-seen mask of these users.
    slo, shi = np.searchsorted(seen_user, [start, stop])
    seen_mask = np.zeros_like(scores, dtype=bool)
    seen_mask[seen_user[slo:shi] - start, seen_item[slo:shi]] = True

    pos = _ranks(scores, max_k)
    incl[idx[ok]] = pos[pu[ok], pi[ok]]
    pos = _ranks(np.where(seen_mask, -np.inf, scores), max_k)
    r = pos[pu[ok], pi[ok]]
    r = np.where(seen_mask[pu[ok], pi[ok]], big, r)
    excl[idx[ok]] = r
  return {"incl": incl, "excl": excl}


def _group_masks(data: EvalData) -> Dict[str, np.ndarray]:
  item_cold = np.zeros(len(data.pair_item), dtype=bool)
  ok = data.pair_item != MISSING
  item_cold[ok] = data.item_is_cold[data.pair_item[ok]]
  user_cold = data.user_is_cold[data.pair_user]
  return {"all": np.ones(len(data.pair_user), dtype=bool),
          "warm_users": ~user_cold, "cold_users": user_cold,
          "cold_items": item_cold}


def aggregate(ranks: Dict[str, np.ndarray], data: EvalData,
              ks: Sequence[int]) -> Dict[str, Dict[str, float]]:
  """hit@K and per-user recall@K (incl/excl seen) for every group."""
  out = {}
  for group, mask in _group_masks(data).items():
    users = data.pair_user[mask]
    res = {"num_pairs": int(mask.sum()),
           "num_users": int(len(np.unique(users)))}
    for mode, suffix in (("incl", ""), ("excl", "_excl_seen")):
      r = ranks[mode][mask]
      for k in ks:
        hit = (r < k).astype(np.float64)
        res[f"hit@{k}{suffix}"] = float(hit.mean()) if len(hit) else None
        if len(hit):
          hits_u = np.bincount(users, weights=hit, minlength=data.num_users)
          n_u = np.bincount(users, minlength=data.num_users)
          has = n_u > 0
          res[f"recall@{k}{suffix}"] = float((hits_u[has] / n_u[has]).mean())
        else:
          res[f"recall@{k}{suffix}"] = None
    out[group] = res
  return out


def evaluate(score_fn: Callable[[np.ndarray], np.ndarray], data: EvalData,
             ks: Sequence[int], batch_size: int = 512) -> Dict[str, Dict[str, float]]:
  """All metrics of one scorer (see module docstring)."""
  ks = sorted(set(int(k) for k in ks))
  ranks = pair_ranks(score_fn, data, max(ks), batch_size)
  return aggregate(ranks, data, ks)


def embedding_scorer(query: np.ndarray, candidates: np.ndarray
                     ) -> Callable[[np.ndarray], np.ndarray]:
  """score_fn for dot-product retrieval: Q[users] @ Cᵀ."""
  query = np.asarray(query, dtype=np.float32)
  cand_t = np.ascontiguousarray(np.asarray(candidates, dtype=np.float32).T)
  return lambda users: query[users] @ cand_t


def popularity_scorer(data: EvalData) -> Callable[[np.ndarray], np.ndarray]:
  """score_fn of the most-popular baseline: training rating count per movie."""
  pop = data.item_train_count.astype(np.float32)
  return lambda users: np.broadcast_to(pop, (len(users), len(pop)))


def counts(data: EvalData) -> Dict[str, int]:
  masks = _group_masks(data)
  return {
      "eval_users": int(data.num_users),
      "warm_users": int((~data.user_is_cold).sum()),
      "cold_users": int(data.user_is_cold.sum()),
      "eval_pairs": int(len(data.pair_user)),
      "cold_item_pairs": int(masks["cold_items"].sum()),
      "eval_pairs_not_in_catalogue": int((data.pair_item == MISSING).sum()),
      "catalogue_items": int(data.num_items),
      "cold_catalogue_items": int(data.item_is_cold.sum()),
      "train_seen_pairs_of_eval_users": int(len(data.seen_user)),
  }


def summary_table(results: Dict[str, Optional[Dict[str, Dict[str, float]]]],
                  ks: Sequence[int]) -> str:
  """A readable table: one row per metric, one column per scorer."""
  names = [n for n, r in results.items() if r]
  ks = sorted(set(int(k) for k in ks))
  metrics: List[tuple] = []
  for group in GROUPS:
    for suffix in ("", "_excl_seen"):
      for k in ks:
        metrics.append((group, f"hit@{k}{suffix}"))
    metrics.append((group, f"recall@{max(ks)}_excl_seen"))
  width = max(len(f"{g}/{m}") for g, m in metrics) + 2
  lines = ["".join([f"{'metric':<{width}}"] + [f"{n:>16}" for n in names])]
  for group, metric in metrics:
    cells = []
    for n in names:
      v = results[n].get(group, {}).get(metric)
      cells.append(f"{'-' if v is None else f'{v:.4f}':>16}")
    lines.append(f"{group + '/' + metric:<{width}}" + "".join(cells))
  for group in GROUPS:
    n0 = results[names[0]][group] if names else {}
    lines.append(f"{group + ' (pairs, users)':<{width}}"
                 f"{n0.get('num_pairs', 0):>16}{n0.get('num_users', 0):>16}")
  return "\n".join(lines)
