"""Retrieval alone at catalogue scale: brute force vs a ScaNN index.

  .venv/bin/python benchmarks/retrieval_ann.py [--num-candidates 1000000]
      [--dim 64] [--queries 1000] [--from-model OUTPUT_OR_SERVING_DIR]
      [--out benchmarks/results/retrieval_ann.json]

The serving path (serving/recommender.py) scores every candidate with one
numpy matmul, which is right for MovieLens' 1,682 movies. This benchmark
asks when that stops being enough: over a synthetic catalogue of a million
candidates it measures

* brute force (exact): numpy matmul + argpartition, and TF matmul +
  tf.math.top_k; queries batched for throughput;
* ScaNN (approximate): tree partitioning + anisotropic hashing + exact
  re-ordering of the best candidates (`scann` 1.3.2, locked);

reporting index build time, single-query p50/p99, batched throughput, the
index size on disk, and recall@100 (and @10) of ScaNN against the exact
top-100 over every query.

Embeddings. Recall means little on iid noise (every neighbour is about as
good as any other), so candidates are clustered like real two-tower
embeddings:
* default: a Gaussian mixture with a decaying spectrum (a few directions
  carry most of the variance, as in trained embeddings) and a log-normal
  spread of norms (popular items have larger norms under dot-product
  retrieval); queries come from the same cluster centres;
* --from-model DIR: the trained candidate embeddings of a pushed retrieval
  model (assets.extra/catalogue.jsonl) and its query embeddings of every
  known user, plus noise-perturbed copies up to --num-candidates /
  --queries.
The numbers are timings on a shared machine: the JSON records cores,
versions and the load average before and after.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Dict, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import common  # noqa: E402,F401  pylint: disable=unused-import,g-import-not-at-top
import numpy as np  # noqa: E402

DEFAULT_SCANN = {"num_leaves": 2000, "num_leaves_to_search": 200,
                 "training_sample_size": 250_000, "dimensions_per_block": 2,
                 "anisotropic_quantization_threshold": 0.2,
                 "reorder": 1000}
# (leaves_to_search, reorder) operating points searched on the built index.
SWEEP = ((25, 200), (50, 300), (100, 500), (400, 2000))


# ---------------------------------------------------------------------------
# Embeddings.

def _spectrum_basis(dim: int, rng: np.random.Generator) -> np.ndarray:
  """A random rotation scaled by a decaying spectrum ([dim, dim])."""
  rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
  scale = 1.0 / np.sqrt(1.0 + np.arange(dim) / 4.0)
  return (scale[:, None] * rotation).astype(np.float32)


def mixture_embeddings(num_candidates: int, num_queries: int, dim: int,
                       seed: int = 0, num_clusters: int = 2000,
                       spread: float = 0.6) -> Tuple[np.ndarray, np.ndarray]:
  """Clustered candidates and queries (see the module docstring).

  Returns float32 arrays [num_candidates, dim] and [num_queries, dim].
  """
  rng = np.random.default_rng(seed)
  basis = _spectrum_basis(dim, rng)
  centres = rng.standard_normal((num_clusters, dim), dtype=np.float32) @ basis
  cand = np.empty((num_candidates, dim), np.float32)
  step = 100_000  # chunks keep the temporaries small at 1M x 64
  for start in range(0, num_candidates, step):
    n = min(step, num_candidates - start)
    noise = rng.standard_normal((n, dim), dtype=np.float32) @ basis
    block = centres[rng.integers(0, num_clusters, n)] + spread * noise
    block *= rng.lognormal(0.0, 0.25, (n, 1)).astype(np.float32)
    cand[start:start + n] = block
  noise = rng.standard_normal((num_queries, dim), dtype=np.float32) @ basis
  queries = centres[rng.integers(0, num_clusters, num_queries)] + spread * noise
  return cand, queries.astype(np.float32)


def perturbed_copies(seeds: np.ndarray, n: int, noise: float,
                     rng: np.random.Generator) -> np.ndarray:
  """`seeds` first, then noisy copies of random seeds up to n rows.

  The noise is `noise` times each dimension's standard deviation over the
  seeds, so copies stay in the trained embeddings' region of the space.
  """
  seeds = np.asarray(seeds, np.float32)
  out = np.empty((n, seeds.shape[1]), np.float32)
  m = min(n, len(seeds))
  out[:m] = seeds[:m]
  std = seeds.std(axis=0, keepdims=True)
  step = 100_000
  for start in range(m, n, step):
    k = min(step, n - start)
    pick = seeds[rng.integers(0, len(seeds), k)]
    out[start:start + k] = pick + noise * std * rng.standard_normal(
        pick.shape, dtype=np.float32)
  return out


def model_embeddings(model_dir: str, num_candidates: int, num_queries: int,
                     seed: int = 0, noise: float = 0.5
                     ) -> Tuple[np.ndarray, np.ndarray, Dict[str, object]]:
  """Trained candidate/query embeddings of a pushed retrieval model, grown.

  model_dir: a run's output dir, a serving dir or one retrieval version dir.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from common import features as F  # pylint: disable=g-import-not-at-top
  from common import assets as assets_lib  # pylint: disable=g-import-not-at-top
  from serving import recommender as rec_lib  # pylint: disable=g-import-not-at-top
  version_dir = model_dir
  if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
    serving_dir = rec_lib.resolve_serving_dir(model_dir)
    versions = rec_lib.complete_versions(serving_dir, rec_lib.RETRIEVAL)
    if not versions:
      raise SystemExit(f"no pushed retrieval model under {serving_dir}")
    version_dir = os.path.join(serving_dir, rec_lib.RETRIEVAL, str(versions[-1]))
  assets = os.path.join(version_dir, rec_lib.ASSETS_EXTRA)
  cand = assets_lib.read_catalogue_table(assets)[3]
  users = list(assets_lib.SeenTable.load(assets, catalogue_ids=[]).user_ids())
  query_fn = tf.saved_model.load(version_dir).signatures[
      F.RETRIEVAL_QUERY_SIGNATURE]
  examples = [F.to_tf_example({F.USER_ID: u}).SerializeToString() for u in users]
  query = np.concatenate([
      query_fn(examples=tf.constant(examples[i:i + 512]))[F.EMBEDDING_OUTPUT].numpy()
      for i in range(0, len(examples), 512)]).astype(np.float32)
  rng = np.random.default_rng(seed)
  info = {"kind": "model", "version_dir": os.path.abspath(version_dir),
          "real_candidates": int(len(cand)), "real_queries": int(len(query)),
          "noise_times_std": noise}
  return (perturbed_copies(cand, num_candidates, noise, rng),
          perturbed_copies(rng.permutation(query), num_queries, noise, rng), info)


# ---------------------------------------------------------------------------
# Exact and approximate top-k.

def brute_force_top_k(queries: np.ndarray, candidates: np.ndarray, k: int,
                      batch: int = 64) -> Tuple[np.ndarray, np.ndarray]:
  """Exact top-k by dot product: (indices, scores), each [q, k], best first.

  Batches of queries bound the [batch, n] score matrix (64 x 1M floats is
  256 MB); argpartition then sorts only the k survivors.
  """
  queries = np.atleast_2d(np.asarray(queries, np.float32))
  k = min(k, len(candidates))
  idx = np.empty((len(queries), k), np.int64)
  val = np.empty((len(queries), k), np.float32)
  for start in range(0, len(queries), batch):
    s = queries[start:start + batch] @ candidates.T
    if k < s.shape[1]:
      top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
      top = np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
    top_s = np.take_along_axis(s, top, axis=1)
    order = np.argsort(-top_s, axis=1, kind="stable")
    idx[start:start + len(s)] = np.take_along_axis(top, order, axis=1)
    val[start:start + len(s)] = np.take_along_axis(top_s, order, axis=1)
  return idx, val


class TFBruteForce:
  """Exact top-k with one TF matmul + tf.math.top_k per batch of queries.

  The same work as tfrs.layers.factorized_top_k.BruteForce (the exported
  serving_default), without the Keras layer.
  """

  def __init__(self, candidates: np.ndarray, k: int):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self.candidates = tf.constant(candidates)
    self.k = min(k, len(candidates))
    self._fn = tf.function(lambda q: tf.math.top_k(
        tf.linalg.matmul(q, self.candidates, transpose_b=True), k=self.k))

  def search(self, queries: np.ndarray, batch: int = 64):
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    idx, val = [], []
    for start in range(0, len(queries), batch):
      v, i = self._fn(self._tf.constant(queries[start:start + batch]))
      idx.append(i.numpy())
      val.append(v.numpy())
    return np.concatenate(idx).astype(np.int64), np.concatenate(val)


def usable_leaves(num_candidates: int, num_leaves: int) -> int:
  """num_leaves capped at one leaf per 100 candidates (small catalogues)."""
  return max(1, min(num_leaves, num_candidates // 100))


def build_scann(candidates: np.ndarray, k: int, num_leaves: int = 2000,
                num_leaves_to_search: int = 200,
                training_sample_size: int = 250_000,
                dimensions_per_block: int = 2,
                anisotropic_quantization_threshold: float = 0.2,
                reorder: int = 1000, threads: Optional[int] = None):
  """A ScaNN dot-product searcher over `candidates` (ScaNN's recipe).

  Tree partitioning prunes to `num_leaves_to_search` of `num_leaves`
  clusters, anisotropic hashing scores their members cheaply, and the best
  `reorder` of those are re-scored exactly — so recall is set mostly by
  leaves searched and reorder depth. Leaves are capped so each holds enough
  points to train on at small scale.
  """
  from scann.scann_ops.py import scann_ops_pybind  # pylint: disable=g-import-not-at-top
  n = len(candidates)
  num_leaves = usable_leaves(n, num_leaves)
  num_leaves_to_search = max(1, min(num_leaves_to_search, num_leaves))
  threads = threads or os.cpu_count() or 1
  searcher = (scann_ops_pybind.builder(candidates, k, "dot_product")
              .set_n_training_threads(threads)
              .tree(num_leaves=num_leaves,
                    num_leaves_to_search=num_leaves_to_search,
                    training_sample_size=min(training_sample_size, n))
              .score_ah(dimensions_per_block,
                        anisotropic_quantization_threshold=
                        anisotropic_quantization_threshold)
              .reorder(max(reorder, k))
              .build())
  searcher.set_num_threads(threads)
  return searcher


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
  """Mean |approx top-k ∩ exact top-k| / k over queries."""
  hits = [len(set(a[:k].tolist()) & set(e[:k].tolist()))
          for a, e in zip(approx, exact)]
  return float(np.mean(hits)) / k


# ---------------------------------------------------------------------------
# Timing.

def _latency_stats(ms) -> Dict[str, float]:
  ms = np.asarray(ms)
  return {"n": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 3),
          "p90_ms": round(float(np.percentile(ms, 90)), 3),
          "p99_ms": round(float(np.percentile(ms, 99)), 3),
          "max_ms": round(float(ms.max()), 3)}


def _time_single(fn, queries, n: int, warmup: int = 5) -> Dict[str, float]:
  for q in queries[:warmup]:
    fn(q)
  ms = []
  for i in range(n):
    t = time.perf_counter()
    fn(queries[i % len(queries)])
    ms.append((time.perf_counter() - t) * 1e3)
  return _latency_stats(ms)


def _time_batched(fn, queries) -> Tuple[float, object]:
  """Queries per second of one call over all `queries` (and its result)."""
  fn(queries[:min(64, len(queries))])  # warm-up / tracing
  t = time.perf_counter()
  out = fn(queries)
  return len(queries) / (time.perf_counter() - t), out


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def machine_info() -> Dict[str, object]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  return {"cpus": os.cpu_count(), "platform": platform.platform(),
          "processor": platform.processor() or platform.machine(),
          "python": platform.python_version(), "numpy": np.__version__,
          "tensorflow": tf.__version__, "scann": metadata.version("scann"),
          "loadavg_before": [round(x, 2) for x in os.getloadavg()]}


def run(num_candidates: int = 1_000_000, dim: int = 64, queries: int = 1000,
        k: int = 100, single_queries: int = 200, from_model: Optional[str] = None,
        seed: int = 0, scann_params: Optional[Dict[str, object]] = None,
        tf_brute_force: bool = True,
        sweep_points=SWEEP) -> Dict[str, object]:
  """Every measurement of the module docstring; returns the JSON dict."""
  params = dict(DEFAULT_SCANN, **(scann_params or {}))
  result: Dict[str, object] = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": machine_info()}
  t0 = time.time()
  if from_model:
    cand, qs, emb_info = model_embeddings(from_model, num_candidates, queries,
                                          seed)
  else:
    cand, qs = mixture_embeddings(num_candidates, queries, dim, seed)
    emb_info = {"kind": "gaussian_mixture", "clusters": 2000, "spread": 0.6,
                "norm_lognormal_sigma": 0.25}
  dim = cand.shape[1]
  emb_info["seconds"] = round(time.time() - t0, 1)
  result["config"] = {"num_candidates": len(cand), "dim": dim,
                      "queries": len(qs), "k": k, "seed": seed,
                      "single_query_runs": single_queries,
                      "embeddings": emb_info, "scann": params}
  print(f"{len(cand):,} candidates x {dim} ({cand.nbytes / 2**20:.0f} MB), "
        f"{len(qs)} queries, k={k}, embeddings {emb_info['kind']} "
        f"({emb_info['seconds']}s)", flush=True)

  # Exact: numpy. Its top-k over every query is the recall ground truth.
  qps, (exact, _) = _time_batched(
      lambda q: brute_force_top_k(q, cand, k), qs)
  result["brute_force_numpy"] = {
      "build_seconds": 0.0, "index_bytes": int(cand.nbytes),
      "single_query": _time_single(lambda q: brute_force_top_k(q, cand, k), qs,
                                   single_queries),
      "batched_qps": round(qps, 1), "recall@100": 1.0}
  print(f"numpy brute force done ({result['brute_force_numpy']['single_query']['p50_ms']}"
        " ms/query)", flush=True)

  if tf_brute_force:
    t = time.time()
    bf = TFBruteForce(cand, k)
    build = time.time() - t
    qps, (tf_idx, _) = _time_batched(bf.search, qs)
    result["brute_force_tf"] = {
        "build_seconds": round(build, 2), "index_bytes": int(cand.nbytes),
        "single_query": _time_single(bf.search, qs, single_queries),
        "batched_qps": round(qps, 1),
        "recall@100": round(recall_at(tf_idx, exact, k), 4)}
    del bf
    print("TF brute force done", flush=True)

  t = time.time()
  searcher = build_scann(cand, k, **params)
  build = time.time() - t
  with tempfile.TemporaryDirectory(prefix="scann_index_") as tmp:
    searcher.serialize(tmp)
    index_bytes = _dir_bytes(tmp)
  single = _time_single(lambda q: searcher.search(q, final_num_neighbors=k),
                        qs, len(qs))
  qps, (ann, _) = _time_batched(
      lambda q: searcher.search_batched_parallel(q, final_num_neighbors=k), qs)
  qps1, _ = _time_batched(
      lambda q: searcher.search_batched(q, final_num_neighbors=k), qs)
  ann = np.asarray(ann, np.int64)
  result["scann"] = {
      "build_seconds": round(build, 2), "index_bytes": int(index_bytes),
      "single_query": single, "batched_qps": round(qps, 1),
      "batched_qps_one_thread": round(qps1, 1),
      "recall@100": round(recall_at(ann, exact, k), 4),
      "recall@10": round(recall_at(ann, exact, min(10, k)), 4)}
  # The same index searched deeper or shallower: the recall/latency dial a
  # deployment would turn, at no extra build cost.
  sweep = []
  for leaves, reorder in sweep_points:
    leaves = min(leaves, usable_leaves(len(cand), params["num_leaves"]))
    kw = {"final_num_neighbors": k, "leaves_to_search": leaves,
          "pre_reorder_num_neighbors": max(reorder, k)}
    single = _time_single(lambda q, kw=kw: searcher.search(q, **kw), qs,
                          min(len(qs), 500))
    qps, (ann, _) = _time_batched(
        lambda q, kw=kw: searcher.search_batched_parallel(q, **kw), qs)
    ann = np.asarray(ann, np.int64)
    sweep.append({"leaves_to_search": leaves, "reorder": reorder,
                  "single_query": single, "batched_qps": round(qps, 1),
                  "recall@100": round(recall_at(ann, exact, k), 4),
                  "recall@10": round(recall_at(ann, exact, min(10, k)), 4)})
  result["scann"]["sweep"] = sweep
  result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
  return result


def print_table(result: Dict[str, object]) -> None:
  print(f"\n{'method':<20} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'batch q/s':>10} {'recall@100':>10} {'index MB':>9}")
  for name in ("brute_force_numpy", "brute_force_tf", "scann"):
    r = result.get(name)
    if not r:
      continue
    print(f"{name:<20} {r['build_seconds']:>8.1f} {r['single_query']['p50_ms']:>8.2f} "
          f"{r['single_query']['p99_ms']:>8.2f} {r['batched_qps']:>10.0f} "
          f"{r['recall@100']:>10.4f} {r['index_bytes'] / 2**20:>9.0f}")
  for p in result.get("scann", {}).get("sweep", []):
    name = f"  leaves {p['leaves_to_search']}, re {p['reorder']}"
    print(f"{name:<20} {'':>8} {p['single_query']['p50_ms']:>8.2f} "
          f"{p['single_query']['p99_ms']:>8.2f} {p['batched_qps']:>10.0f} "
          f"{p['recall@100']:>10.4f}")
  m = result["machine"]
  print(f"{m['cpus']} cores, load {m['loadavg_before']} → {m.get('loadavg_after')}; "
        f"numpy {m['numpy']}, TF {m['tensorflow']}, scann {m['scann']}")


def main(argv=None) -> Dict[str, object]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num-candidates", type=int, default=1_000_000)
  parser.add_argument("--dim", type=int, default=64,
                      help="embedding size (ignored with --from-model)")
  parser.add_argument("--queries", type=int, default=1000,
                      help="queries for recall, throughput and ScaNN latency")
  parser.add_argument("--single-queries", type=int, default=200,
                      help="single-query runs per brute-force method")
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--from-model", default=None,
                      help="output/serving dir of a pushed retrieval model: "
                      "grow its trained embeddings instead of a mixture")
  parser.add_argument("--scann", default="{}",
                      help=f"JSON overrides of {DEFAULT_SCANN}")
  parser.add_argument("--no-tf", action="store_true",
                      help="skip the TF brute-force variant")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(
      ROOT, "benchmarks", "results", "retrieval_ann.json"))
  args = parser.parse_args(argv)
  result = run(args.num_candidates, args.dim, args.queries, args.k,
               args.single_queries, args.from_model, args.seed,
               json.loads(args.scann), not args.no_tf)
  print_table(result)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"wrote {args.out}")
  return result


if __name__ == "__main__":
  main()
