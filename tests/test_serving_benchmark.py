"""benchmarks/serving_latency.py's concurrency row, without running the
benchmark: its arguments, and its load driver against the stand-in server of
tests/test_serving_http.py."""
import pytest

from benchmarks import serving_latency
from tests.test_serving_http import FakeRecommender, _server


def test_arguments():
  args = serving_latency.build_parser().parse_args(["--output-dir", "d"])
  assert args.concurrency == [1, 8, 32] and args.concurrency_requests == 400
  assert (args.server_workers, args.server_threads, args.no_concurrency) == (1, 4, False)
  args = serving_latency.build_parser().parse_args(
      ["--output-dir", "d", "--concurrency", "2,4", "--server-workers", "2",
       "--no-concurrency"])
  assert args.concurrency == [2, 4] and args.server_workers == 2 and args.no_concurrency
  for bad in ("0,8", "x", ""):
    with pytest.raises(SystemExit):
      serving_latency.build_parser().parse_args(["--output-dir", "d",
                                                 "--concurrency", bad])


def test_concurrent_load_measures_latency_throughput_and_refusals(monkeypatch):
  with _server(FakeRecommender(), monkeypatch) as port:
    row = serving_latency.concurrent_load(f"http://127.0.0.1:{port}", ["1", "2"],
                                          clients=3, requests=12, k=2,
                                          n_candidates=10)
  assert row["clients"] == 3 and row["n"] == 12 and row["non_200"] == 0
  assert row["requests_per_second"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
  # A server that takes one request at a time refuses the others (503).
  with _server(FakeRecommender(delay=0.3), monkeypatch, threads=1,
               max_pending=1) as port:
    row = serving_latency.concurrent_load(f"http://127.0.0.1:{port}", ["1"],
                                          clients=4, requests=8, k=2,
                                          n_candidates=10)
  assert row["n"] == 8 and row["non_200"] > 0 and row["non_200_kinds"] == ["503"]
