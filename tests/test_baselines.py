"""trainer_modules/baselines.py: the user+item bias baseline, vectorised."""
import numpy as np

from trainer_modules import baselines


def _reference(tu, ti, ty, su, si, sy, reg_user=5.0, reg_item=10.0, sweeps=10):
  """The same ALS written per row with dicts (the pre-numpy version)."""
  mu = float(np.mean(ty))
  bu = {u: 0.0 for u in tu}
  bi = {i: 0.0 for i in ti}
  for _ in range(sweeps):
    acc = {i: 0.0 for i in bi}
    for u, i, y in zip(tu, ti, ty):
      acc[i] += y - mu - bu[u]
    bi = {i: acc[i] / (reg_item + ti.count(i)) for i in bi}
    acc = {u: 0.0 for u in bu}
    for u, i, y in zip(tu, ti, ty):
      acc[u] += y - mu - bi[i]
    bu = {u: acc[u] / (reg_user + tu.count(u)) for u in bu}
  pred = [min(max(mu + bu.get(u, 0.0) + bi.get(i, 0.0), min(ty)), max(ty))
          for u, i in zip(su, si)]
  return float(np.sqrt(np.mean((np.array(pred) - np.array(sy)) ** 2)))


def test_matches_the_per_row_reference_with_unknown_ids():
  rng = np.random.default_rng(0)
  tu = [f"u{x}" for x in rng.integers(0, 30, 400)]
  ti = [f"m{x}" for x in rng.integers(0, 50, 400)]
  ty = rng.integers(1, 6, 400).astype(float).tolist()
  su = [f"u{x}" for x in rng.integers(0, 35, 100)]  # u30..u34: unknown
  si = [f"m{x}" for x in rng.integers(0, 55, 100)]
  sy = rng.integers(1, 6, 100).astype(float).tolist()
  got = baselines.rating_baselines(tu, ti, ty, su, si, sy)
  assert abs(got["user_item_bias"] - _reference(tu, ti, ty, su, si, sy)) < 1e-9


def test_bytes_arrays_as_read_from_tf_examples():
  tu = np.array([b"1", b"1", b"2", b"2"], object)
  ti = np.array([b"a", b"b", b"a", b"b"], object)
  ty = [5.0, 4.0, 2.0, 1.0]
  # User 1 rates high, user 2 low; test rows of both and of an unknown user.
  got = baselines.rating_baselines(tu, ti, ty, np.array([b"1", b"2", b"9"], object),
                                   np.array([b"a", b"a", b"a"], object), [5.0, 2.0, 3.0],
                                   reg_user=0.0, reg_item=1e9)
  # No item bias (huge reg), exact user bias: predictions 4.5, 1.5, 3.0.
  assert abs(got["user_item_bias"] - np.sqrt((0.25 + 0.25 + 0.0) / 3)) < 1e-6
