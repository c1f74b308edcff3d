"""Per-user top-k metrics, top-k selection and EASE on hand-computed examples."""
import math

import numpy as np
import pytest
from scipy import sparse

from trainer_modules import ease
from components.two_stage_evaluator import topk

L2, L3, L4, L5 = (math.log2(x) for x in (2, 3, 4, 5))


def test_metrics_more_relevant_than_k():
  # Hits at ranks 2 and 3; |rel| = 4 > k = 3.
  m = topk.metrics_at_k([[5, 1, 7]], [{1, 7, 9, 10}], k=3)
  assert m["users"] == 1
  assert m["precision@3"] == pytest.approx(2 / 3)
  assert m["recall@3"] == pytest.approx(2 / 4)
  # Ideal DCG over min(|rel|, k) = 3 items.
  assert m["ndcg@3"] == pytest.approx((1 / L3 + 1 / L4) / (1 / L2 + 1 / L3 + 1 / L4))
  # precision@2 + precision@3, divided by |rel| (MS Recommenders' `map`).
  assert m["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 4)


def test_metrics_fewer_relevant_than_k():
  m = topk.metrics_at_k([[3, 0, 8, 2]], [{2}], k=4)
  assert m["precision@4"] == pytest.approx(1 / 4)
  assert m["recall@4"] == pytest.approx(1.0)
  assert m["ndcg@4"] == pytest.approx(1 / L5)  # ideal DCG = 1 (one item)
  assert m["map@4"] == pytest.approx(1 / 4)
  perfect = topk.metrics_at_k([[2, 0, 8, 3]], [{2}], k=4)
  assert perfect["ndcg@4"] == pytest.approx(1.0)
  assert perfect["map@4"] == pytest.approx(1.0)


def test_metrics_average_users_and_skip_users_without_relevant():
  ranked = [[5, 1, 7], [0, 1, 2], [4, 6, 8]]
  relevant = [{1, 7, 9, 10}, set(), {4}]
  m = topk.metrics_at_k(ranked, relevant, k=3)
  assert m["users"] == 2
  assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
  assert m["recall@3"] == pytest.approx((0.5 + 1.0) / 2)
  assert m["map@3"] == pytest.approx(((1 / 2 + 2 / 3) / 4 + 1.0) / 2)
  none = topk.metrics_at_k([[1]], [set()], k=1)
  assert none["users"] == 0 and none["ndcg@1"] is None


def test_metrics_short_list_pad_and_k_in_names():
  # A list shorter than k still divides precision by k; PAD never hits.
  m = topk.metrics_at_k([[2, topk.PAD]], [{2, 3}], k=10)
  assert set(m) == {"precision@10", "recall@10", "ndcg@10", "map@10", "users"}
  assert m["precision@10"] == pytest.approx(0.1)
  assert m["recall@10"] == pytest.approx(0.5)
  assert m["ndcg@10"] == pytest.approx(1 / (1 + 1 / L3))
  with pytest.raises(ValueError, match="ranked has 1 users"):
    topk.metrics_at_k([[1]], [{1}, {2}], k=1)


def test_hit_rate_pools_pairs_unlike_recall():
  ranked = [[5, 1, 7], [3, 0, 8]]
  relevant = [{1, 7, 9, 10}, {2}]
  assert topk.hit_rate_at_k(ranked, relevant, 3) == pytest.approx(2 / 5)
  assert topk.metrics_at_k(ranked, relevant, 3)["recall@3"] == pytest.approx(0.25)
  assert topk.hit_rate_at_k(ranked, relevant, 1) == 0.0


def test_top_k_ties_by_lower_index_and_exclusion():
  scores = np.array([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(topk.top_k_from_scores(scores, 3), [[1, 2, 3], [0, 1, 2]])
  excl = [[1], [0, 3]]
  want = [[2, 3, 0], [1, 2, topk.PAD]]  # row 1 has only two allowed items
  np.testing.assert_array_equal(topk.top_k_from_scores(scores, 3, excl), want)
  csr = topk.user_item_matrix([0, 1, 1], [1, 0, 3], 2, 4)
  np.testing.assert_array_equal(topk.top_k_from_scores(scores, 3, csr), want)
  # Input untouched, NaN ranks last, k > N pads.
  assert scores[0, 1] == 3.0
  np.testing.assert_array_equal(
      topk.top_k_from_scores(np.array([np.nan, 1.0]), 3), [[1, topk.PAD, topk.PAD]])
  assert topk.rows_to_lists(np.array([[2, topk.PAD]])) == [[2]]


def test_user_item_matrix_dedups_and_popularity():
  m = topk.user_item_matrix([0, 0, 1, 2], [1, 1, 1, 0], 3, 3)
  assert m.nnz == 3 and m.data.tolist() == [1.0, 1.0, 1.0]
  pop = topk.popularity_scores(m)
  np.testing.assert_array_equal(pop, [1.0, 2.0, 0.0])
  np.testing.assert_array_equal(topk.top_k_from_scores(pop, 3), [[1, 0, 2]])


def _planted(n_pairs=20):
  """Users consume either {0, 1} or {2, 3}; a few noise rows of item 4."""
  rows = []
  for u in range(n_pairs):
    rows += [(u, 0), (u, 1)]
  for u in range(n_pairs, 2 * n_pairs):
    rows += [(u, 2), (u, 3)]
  rows += [(0, 4), (n_pairs, 4), (2 * n_pairs, 4)]
  u, i = zip(*rows)
  return topk.user_item_matrix(u, i, 2 * n_pairs + 1, 5)


def test_ease_recommends_co_consumed_items():
  x = _planted()
  b = ease.fit(x, lam=5.0)
  assert b.dtype == np.float32 and b.shape == (5, 5)
  np.testing.assert_array_equal(np.diag(b), 0.0)
  query = topk.user_item_matrix([0, 1], [0, 3], 2, 5)  # has 0 / has 3
  top = topk.top_k_from_scores(ease.scores(query, b), 1, exclude=query)
  np.testing.assert_array_equal(top, [[1], [2]])


def test_ease_two_items_closed_form_and_lambda_shrinks():
  # G = XᵀX = [[3, 2], [2, 3]]; for two items B_01 = G_01 / (G_00 + λ).
  x = topk.user_item_matrix([0, 0, 1, 1, 2, 3], [0, 1, 0, 1, 0, 1], 4, 2)
  b = ease.fit(x, lam=1.0)
  np.testing.assert_allclose(b, [[0.0, 0.5], [0.5, 0.0]], rtol=1e-6)
  big = _planted()
  weak = np.abs(ease.fit(big, lam=5000.0)).sum()
  strong = np.abs(ease.fit(big, lam=5.0)).sum()
  assert weak < strong / 10
  # As λ → ∞, B → off-diagonal XᵀX / λ.
  g = np.asarray((big.T @ big).todense())
  np.fill_diagonal(g, 0)
  np.testing.assert_allclose(ease.fit(big, lam=1e6) * 1e6, g, rtol=1e-3, atol=1e-3)
  with pytest.raises(ValueError, match="lam > 0"):
    ease.fit(x, lam=0.0)


def test_ease_gram_in_blocks_equals_the_whole_product_and_float32_fit_matches_float64(
    monkeypatch):
  rng = np.random.default_rng(3)
  lengths = [1, 40, 2, 7, 0, 3, 25, 5]  # row 1 alone exceeds the block budget
  u = np.repeat(np.arange(len(lengths)), lengths)
  i = np.concatenate([rng.choice(60, n, replace=False) for n in lengths])
  x = topk.user_item_matrix(u, i, len(lengths), 60)
  whole = np.asarray((x.T @ x).todense())
  for budget in (1, 30, 100, 10_000):  # one row per block ... all in one
    monkeypatch.setattr(ease, "_GRAM_BLOCK_ENTRIES", budget)
    np.testing.assert_array_equal(ease.gram(sparse.csr_matrix(x, dtype=np.float32)), whole)
  # Above _FLOAT64_BELOW items the fit runs in float32 (in place): same B.
  monkeypatch.setattr(ease, "_GRAM_BLOCK_ENTRIES", 30)
  exact = ease.fit(x, lam=2.0)
  monkeypatch.setattr(ease, "_FLOAT64_BELOW", 0)
  np.testing.assert_allclose(ease.fit(x, lam=2.0), exact, atol=1e-5)


def test_ease_skip_reason_above_max_items():
  assert ease.can_fit(ease.MAX_ITEMS) is None
  reason = ease.can_fit(ease.MAX_ITEMS + 1)
  assert "skipped" in reason and str(ease.MAX_ITEMS) in reason
  with pytest.raises(ease.EaseSkipped, match="MAX_ITEMS"):
    ease.fit(sparse.csr_matrix((1, ease.MAX_ITEMS + 1), dtype=np.float32))


# -- benchmarks/two_stage_quality.py helpers (no TensorFlow) -------------------

def _rows(pairs):
  return [{"user_id": u, "movie_id": m, "user_rating": 4.0} for u, m in pairs]


def _problem():
  from benchmarks import two_stage_quality as bench
  train = _rows([("1", "10"), ("1", "11"), ("2", "11"), ("3", "12"), ("2", "11")])
  evals = _rows([("1", "12"), ("1", "13"), ("2", "10"), ("2", "11"), ("10", "13")])
  return bench, bench.index_problem(train, evals, ["10", "11", "12", "13"])


def test_index_problem_orders_users_and_drops_seen_from_relevant():
  _, p = _problem()
  assert p["users"] == ["1", "2", "3", "10"]  # numeric order, not "10" < "2"
  assert p["eval_users"] == ["1", "2", "10"]
  assert p["train_matrix"].nnz == 4  # the duplicate (2, 11) counted once
  # User 2's eval movie 11 was also rated in training: not relevant.
  assert p["relevant"] == [{2, 3}, {0}, {3}]
  assert p["eval_rows"].toarray().tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_score_rows_excludes_seen_and_adds_depth_metrics():
  bench, p = _problem()
  scores = np.array([4.0, 3.0, 2.0, 1.0])  # one order for everybody
  m = bench.score_rows(lambda idx: np.tile(scores, (len(idx), 1)), p, k=1)
  # Top-1 excluding seen: user 1 → 12 (hit), user 2 → 10 (hit), user 10 → 10 (miss).
  assert m["users"] == 3
  assert m["precision@1"] == pytest.approx(2 / 3)
  assert m["hit@100"] == 1.0 and m["recall@100"] == 1.0


def test_recommend_lists_maps_ids_and_counts_problems():
  bench, p = _problem()
  answers = {"1": ["12", "99"], "2": ["10", "11"], "10": []}
  fake = lambda u, k, n_candidates: {"items": [{"movie_id": m} for m in answers[u][:k]]}
  res = bench.recommend_lists(fake, p["eval_users"], p["col"], k=2, n_candidates=5)
  assert res["lists"] == [[2, topk.PAD], [0, 1], []]
  assert res["unknown_movies"] == 1 and res["short_lists"] == 1
  assert bench.seen_violations(res["lists"], p["eval_rows"]) == 1  # user 2 got 11
  m = bench.list_metrics(res["lists"], p["relevant"], 2)
  assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)


def test_summarize_rows_and_table():
  bench, _ = _problem()
  seeds = [{"a": {"metrics": {"ndcg@10": v}, "fit_seconds": 1.0},
            "e": {"skipped": "EASE skipped: too big"}} for v in (0.2, 0.4)]
  s = bench.summarize_rows(seeds)
  assert s["a"]["metrics"]["ndcg@10"]["mean"] == pytest.approx(0.3)
  assert s["a"]["metrics"]["ndcg@10"]["std"] == pytest.approx(0.1)
  assert s["e"] == {"skipped": "EASE skipped: too big"}
  text = bench.table(s, 10)
  assert "0.3000 ± 0.100" in text and "EASE skipped" in text
