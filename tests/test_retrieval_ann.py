"""benchmarks/retrieval_ann.py at small scale: both paths find the same items.

The 1M-candidate numbers are only meaningful if the exact path is exact and
ScaNN is measured against it correctly; 20k candidates check both in seconds.
"""
import numpy as np

from benchmarks import retrieval_ann as ann


def test_brute_force_matches_argsort_and_tf():
  cand, queries = ann.mixture_embeddings(3000, 40, 16, seed=1, num_clusters=50)
  idx, val = ann.brute_force_top_k(queries, cand, 25, batch=16)
  scores = queries @ cand.T
  expected = np.argsort(-scores, axis=1, kind="stable")[:, :25]
  np.testing.assert_array_equal(idx, expected)
  np.testing.assert_allclose(val, np.take_along_axis(scores, expected, 1),
                             rtol=1e-6)
  tf_idx, _ = ann.TFBruteForce(cand, 25).search(queries, batch=16)
  assert ann.recall_at(tf_idx, idx, 25) == 1.0
  # k above the catalogue: everything, best first.
  small_idx, _ = ann.brute_force_top_k(queries[:2], cand[:10], 25)
  np.testing.assert_array_equal(
      small_idx, np.argsort(-(queries[:2] @ cand[:10].T), axis=1, kind="stable"))


def test_scann_recall_against_brute_force():
  cand, queries = ann.mixture_embeddings(20_000, 200, 32, seed=2, num_clusters=200)
  exact, _ = ann.brute_force_top_k(queries, cand, 10)
  searcher = ann.build_scann(cand, 10, num_leaves=100, num_leaves_to_search=20,
                             training_sample_size=20_000, reorder=100)
  approx = np.asarray(searcher.search_batched(queries, final_num_neighbors=10)[0])
  assert approx.shape == (200, 10)
  assert ann.recall_at(approx, exact, 10) >= 0.9
  single = np.asarray(searcher.search(queries[0], final_num_neighbors=10)[0])
  assert ann.recall_at(single[None], exact[:1], 10) >= 0.5


def test_perturbed_copies_keep_seeds_first():
  rng = np.random.default_rng(0)
  seeds = rng.standard_normal((30, 8)).astype(np.float32)
  out = ann.perturbed_copies(seeds, 250, 0.5, rng)
  assert out.shape == (250, 8) and out.dtype == np.float32
  np.testing.assert_array_equal(out[:30], seeds)
  # Copies stay near some seed, well inside the seeds' spread.
  nearest = np.min(np.linalg.norm(out[30:, None] - seeds[None], axis=2), axis=1)
  assert np.median(nearest) < np.median(np.linalg.norm(seeds - seeds.mean(0), axis=1))
