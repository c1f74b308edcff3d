"""Synthetic rating data in MovieLens-25M's CSV format, of any size.

    .venv/bin/python -m benchmarks.synthetic_ml25m --ratings 1000000 --out /tmp/ml-1m-synth [--seed 0]

Why: the scale benchmark (benchmarks/scale.py) needs ml-25m-sized inputs of
chosen sizes, and MovieLens itself may not be redistributed (GroupLens
licence). The files are what the pipeline's GroupLens reader expects of
ml-20m / ml-25m (components/ingestion/grouplens.py, `MovieLensCurrent`):

* ``ratings.csv``: ``userId,movieId,rating,timestamp``, sorted by userId then
  movieId, ratings in half stars 0.5-5.0, one row per (user, movie) pair;
* ``movies.csv``: ``movieId,title,genres``, titles with a year ("Word Word
  (1994)", some "..., The (1987)" that need CSV quoting), genres joined by
  ``|`` from ml-25m's genre names ("(no genres listed)" for a few);
* ``synthetic.json``: the parameters and counts (users, movies, ratings).

The shape follows ml-25m (162,541 users, 59,047 movies, 25,000,095 ratings)
and the sizes users saw at 1M and 3M ratings (issue 11):

* users grow about linearly with N (6.7k at 1M, 20k at 3M, 162k at 25M) and
  movies sub-linearly (4.5k, 9.5k, 59k): `num_users`, `num_movies`;
* user activity is heavy-tailed: every user has at least 20 ratings (as in
  MovieLens), the rest is log-normal (median far below the mean, a few users
  with thousands), capped at half the catalogue;
* movie popularity is Zipf-like (a Zipf-Mandelbrot head with a steep tail:
  a long tail of movies with a handful of ratings, some with none);
* tastes: 32 taste groups of users; each movie has a latent vector built from
  its genres; a user picks movies by popularity times a taste affinity and
  rates them by mean + user bias + movie bias + user·movie affinity + noise,
  so retrieval and ranking models have structure to learn beyond popularity;
  some users rate in whole stars only, as in MovieLens;
* timestamps from 1995 to late 2019: each user has a start time, an active
  span and sessions of ratings a few seconds to minutes apart, the first
  session (sign-up) holding up to 20 ratings.

Generation is chunked by users with numpy (bounded memory: the movie tables
plus one chunk of ratings); the same seed gives the same files.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

ML25M = {"ratings": 25_000_095, "users": 162_541, "movies": 59_047}
MIN_RATINGS_PER_USER = 20  # as in MovieLens
MAX_USER_SHARE = 0.5  # no user rates more than this share of the movies
T_START, T_END = 789_652_009, 1_574_327_703  # ml-25m's first and last rating
GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX",
          "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western"]
NO_GENRES = "(no genres listed)"
# Relative genre frequencies (roughly ml-25m's: Drama and Comedy dominate).
GENRE_WEIGHTS = [7, 4, 2, 2, 13, 5, 3, 20, 2, 0.3, 5, 0.3, 1, 2, 7, 3, 7, 1, 1]
LATENT_DIM = 8
TASTE_GROUPS = 32
SIGNUP_RATINGS = 20  # ratings of a user's first session at most
CHUNK_RATINGS = 500_000
_RATING_TEXT = np.array([f"{i / 2:.1f}" for i in range(11)], dtype=object)
_SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vo", "shi", "dar", "el", "no",
              "qu", "bri", "zan", "tor", "ve", "ly", "mor", "sa", "un", "gal"]


def num_users(num_ratings: int) -> int:
  """Users for N ratings: 6.7k at 1M, ~20k at 3M, ~162k at 25M."""
  users = 6_700 * (num_ratings / 1e6) ** 0.99
  return max(1, min(int(round(users)), num_ratings // MIN_RATINGS_PER_USER))


def num_movies(num_ratings: int) -> int:
  """Movies for N ratings: ~4.5k at 1M, ~9.5k at 3M, ~59k at 25M.

  A quadratic in log N through those three points (a single power law does
  not fit them), linear in log N below 1M; for small N at least 8 times the
  mean ratings per user, so the heaviest users still find enough movies.
  """
  x = math.log(num_ratings / 1e6)
  log_movies = math.log(4_500) + 0.618 * x + 0.0563 * max(x, 0.0) ** 2
  floor = 8 * math.ceil(num_ratings / num_users(num_ratings))
  return max(floor, int(round(math.exp(log_movies))))


@dataclasses.dataclass
class Movies:
  """The catalogue and its latent structure (index = popularity order)."""
  ids: np.ndarray  # movieId of each movie
  popularity: np.ndarray  # Zipf-like weights
  vectors: np.ndarray  # [movies, LATENT_DIM] taste vectors
  bias: np.ndarray  # rating bias
  titles: List[str]
  genres: List[str]


def zipf_weights(n: int) -> np.ndarray:
  """Popularity of ranks 1..n: (r + q)^-0.9 for the top 12 %, then r^-3."""
  r = np.arange(1, n + 1, dtype=np.float64)
  head, q = 0.12 * n, 0.002 * n
  w = np.where(r <= head, (r + q) ** -0.9,
               (head + q) ** -0.9 * (r / head) ** -3.0)
  return w / w.sum()


def _title(rng: np.random.Generator, year: int) -> str:
  words = []
  for _ in range(rng.integers(1, 4)):
    word = "".join(rng.choice(_SYLLABLES, size=rng.integers(1, 4)))
    words.append(word.capitalize())
  title = " ".join(words)
  if rng.random() < 0.08:
    title += ", The"  # quoted in the CSV, as in ml-25m
  return f"{title} ({year})"


def make_movies(rng: np.random.Generator, n: int) -> Movies:
  genre_p = np.asarray(GENRE_WEIGHTS, np.float64)
  genre_p /= genre_p.sum()
  genre_vectors = rng.normal(size=(len(GENRES), LATENT_DIM))
  # Sparse increasing ids (ml-25m's run to 209171), popularity unrelated to id.
  ids = np.sort(rng.choice(np.arange(1, 3 * n + 2), size=n, replace=False))
  ids = ids[rng.permutation(n)]
  vectors = np.empty((n, LATENT_DIM))
  titles, genres = [], []
  years = np.clip(np.round(2019 - rng.exponential(18.0, size=n)), 1902,
                  2019).astype(int)
  for j in range(n):
    titles.append(_title(rng, int(years[j])))
    if rng.random() < 0.01:
      genres.append(NO_GENRES)
      vectors[j] = 0.0
    else:
      k = min(1 + rng.poisson(0.9), 4)
      picked = rng.choice(len(GENRES), size=k, replace=False, p=genre_p)
      genres.append("|".join(GENRES[g] for g in sorted(picked)))
      vectors[j] = genre_vectors[picked].mean(axis=0)
  vectors += 0.6 * rng.normal(size=vectors.shape)
  popularity = zipf_weights(n)
  # Popular movies are rated a little higher, as in MovieLens.
  bias = rng.normal(0.0, 0.3, size=n) + 0.15 * (
      np.log(popularity) - np.log(popularity).mean()) / np.log(popularity).std()
  return Movies(ids, popularity, vectors, bias, titles, genres)


def user_counts(rng: np.random.Generator, total: int, users: int,
                movies: int) -> np.ndarray:
  """Ratings per user: >= 20 each, log-normal beyond, summing to total."""
  cap = max(MIN_RATINGS_PER_USER, int(MAX_USER_SHARE * movies))
  if total < users * MIN_RATINGS_PER_USER or total > users * cap:
    raise ValueError(f"{total} ratings cannot be spread over {users} users "
                     f"with {MIN_RATINGS_PER_USER}..{cap} each")
  counts = np.full(users, MIN_RATINGS_PER_USER, np.int64)
  extra = total - counts.sum()
  weights = rng.lognormal(0.0, 1.4, size=users)
  while extra > 0:
    room = cap - counts
    w = np.where(room > 0, weights, 0.0)
    share = extra * w / w.sum()
    add = np.minimum(np.floor(share).astype(np.int64), room)
    if add.sum() == 0:  # hand out the remainder one by one, largest share first
      order = np.argsort(-(share - np.floor(share)))
      order = order[room[order] > 0][:extra]
      add = np.zeros(users, np.int64)
      add[order] = 1
    counts += add
    extra = total - counts.sum()
  return counts


def _taste_tables(rng: np.random.Generator, movies: Movies):
  """Group centres and each group's cumulative movie-choice distribution."""
  centres = rng.normal(size=(TASTE_GROUPS, LATENT_DIM))
  affinity = centres @ movies.vectors.T / math.sqrt(LATENT_DIM)
  logits = np.log(movies.popularity)[None, :] + 1.2 * affinity
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  return centres, p, np.cumsum(p, axis=1)


def _sample_movies(rng, users, groups, counts, p, cdf, n_movies):
  """Distinct movies per user, drawn by the user's group distribution.

  Successive sampling without replacement: draws with replacement, keeping
  first occurrences, until each user has its count; users rating more than
  1/8 of the catalogue use Gumbel top-k over all movies instead.
  Returns (user index, movie index) arrays.
  """
  out_u, out_m = [], []
  heavy = counts > n_movies // 8
  for u, g, k in zip(users[heavy], groups[heavy], counts[heavy]):
    keys = np.log(p[g]) + rng.gumbel(size=n_movies)
    out_u.append(np.full(k, u))
    out_m.append(np.argpartition(-keys, k - 1)[:k])
  users, groups, counts = users[~heavy], groups[~heavy], counts[~heavy]
  have_u = np.zeros(0, np.int64)
  have_m = np.zeros(0, np.int64)
  need = counts.copy()
  pending = np.arange(len(users))
  while pending.size:
    draws = np.ceil(need[pending] * 1.5).astype(np.int64) + 4
    du = np.repeat(pending, draws)
    dg = groups[du]
    dm = np.empty(du.size, np.int64)
    r = rng.random(du.size)
    for g in np.unique(dg):
      sel = dg == g
      dm[sel] = np.minimum(np.searchsorted(cdf[g], r[sel] * cdf[g, -1]),
                           n_movies - 1)
    all_u = np.concatenate([have_u, du])
    all_m = np.concatenate([have_m, dm])
    _, first = np.unique(all_u * n_movies + all_m, return_index=True)
    first.sort()  # keep the earlier pairs first, then draw order
    all_u, all_m = all_u[first], all_m[first]
    order = np.argsort(all_u, kind="stable")
    all_u, all_m = all_u[order], all_m[order]
    starts = np.searchsorted(all_u, all_u, side="left")
    rank = np.arange(all_u.size) - starts
    keep = rank < counts[all_u]
    have_u, have_m = all_u[keep], all_m[keep]
    got = np.bincount(have_u, minlength=len(users))
    need = counts - got
    pending = np.flatnonzero(need > 0)
  out_u.append(users[have_u])
  out_m.append(have_m)
  return np.concatenate(out_u), np.concatenate(out_m)


def _ratings(rng, u_vec, u_bias, whole, movies, uu, mm):
  """Half-star ratings from bias + affinity + noise."""
  score = (3.1 + u_bias[uu] + movies.bias[mm]
           + 0.5 * np.einsum("ij,ij->i", u_vec[uu], movies.vectors[mm])
           / math.sqrt(LATENT_DIM) + rng.normal(0.0, 0.75, size=uu.size))
  half = np.clip(np.round(score * 2.0) / 2.0, 0.5, 5.0)
  full = np.clip(np.round(score), 1.0, 5.0)
  return np.where(whole[uu], full, half)


def _timestamps(rng, start, span, counts, uu):
  """Per-user sessions: a sign-up session, then sessions over the user's span.

  uu is sorted by user; ratings of a user are in random (movie) order.
  """
  n = uu.size
  first = np.searchsorted(uu, uu, side="left")
  pos = np.arange(n) - first  # position within the user
  k = counts[uu]
  sessions = 1 + rng.poisson(np.maximum(counts - SIGNUP_RATINGS, 0) / 25.0)
  s = sessions[uu]
  later = pos >= SIGNUP_RATINGS
  session = np.where(later, 1 + rng.integers(0, np.maximum(s - 1, 1)), 0)
  session = np.where(s > 1, session, 0)
  # Session start: 0 for sign-up, else a per-(user, session) uniform offset.
  key = uu * 10_000_019 + session
  ukey, inv = np.unique(key, return_inverse=True)
  offset = rng.random(ukey.size) * span[ukey // 10_000_019]
  offset[ukey % 10_000_019 == 0] = 0.0
  # Seconds between ratings in a session, accumulated per session.
  order = np.lexsort((pos, inv))
  gaps = rng.exponential(25.0, size=n)
  cum = np.cumsum(gaps[order])
  group = inv[order]
  group_start = np.searchsorted(group, group, side="left")
  within = cum - (cum[group_start] - gaps[order][group_start])
  t = np.empty(n)
  t[order] = start[uu[order]] + offset[group] + within
  del k
  return np.minimum(t, T_END).astype(np.int64)


def generate(num_ratings: int, out_dir: str, seed: int = 0,
             chunk_ratings: int = CHUNK_RATINGS,
             users: Optional[int] = None, movies: Optional[int] = None,
             log=None) -> Dict[str, object]:
  """Writes ratings.csv, movies.csv and synthetic.json to out_dir."""
  t0 = time.time()
  users = users or num_users(num_ratings)
  n_movies = movies or num_movies(num_ratings)
  root = np.random.SeedSequence(seed)
  movie_seq, user_seq, chunk_seq = root.spawn(3)
  movie_rng, user_rng = (np.random.default_rng(movie_seq),
                         np.random.default_rng(user_seq))
  catalogue = make_movies(movie_rng, n_movies)
  centres, p, cdf = _taste_tables(movie_rng, catalogue)
  counts = user_counts(user_rng, num_ratings, users, n_movies)
  groups = user_rng.integers(0, TASTE_GROUPS, size=users)
  u_vec = centres[groups] + 0.7 * user_rng.normal(size=(users, LATENT_DIM))
  u_bias = user_rng.normal(0.0, 0.4, size=users)
  whole = user_rng.random(users) < 0.55
  start = T_START + user_rng.random(users) * (T_END - T_START)
  span = np.minimum(user_rng.exponential(2.0e7, size=users) * np.log1p(
      counts / MIN_RATINGS_PER_USER), T_END - start)

  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "movies.csv"), "w", newline="",
            encoding="utf-8") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["movieId", "title", "genres"])
    for j in np.argsort(catalogue.ids):
      w.writerow([int(catalogue.ids[j]), catalogue.titles[j],
                  catalogue.genres[j]])

  bounds = np.searchsorted(np.cumsum(counts),
                           np.arange(chunk_ratings, num_ratings, chunk_ratings))
  edges = np.unique(np.concatenate([[0], bounds + 1, [users]]))
  edges = edges[edges <= users]
  rated = np.zeros(n_movies, bool)
  written = 0
  path = os.path.join(out_dir, "ratings.csv")
  with open(path, "w", newline="") as f:
    f.write("userId,movieId,rating,timestamp\n")
    for lo, hi, seq in zip(edges[:-1], edges[1:],
                           chunk_seq.spawn(len(edges) - 1)):
      rng = np.random.default_rng(seq)
      idx = np.arange(lo, hi)
      uu, mm = _sample_movies(rng, idx, groups[idx], counts[idx], p, cdf,
                              n_movies)
      order = np.lexsort((catalogue.ids[mm], uu))
      uu, mm = uu[order], mm[order]
      rating = _ratings(rng, u_vec, u_bias, whole, catalogue, uu, mm)
      ts = _timestamps(rng, start, span, counts, uu)
      rated[mm] = True
      f.write("".join(map("{},{},{},{}\n".format, (uu + 1).tolist(),
                          catalogue.ids[mm].tolist(),
                          _RATING_TEXT[(rating * 2).astype(int)].tolist(),
                          ts.tolist())))
      written += uu.size
      if log:
        log(f"... {written:,} / {num_ratings:,} ratings "
            f"({time.time() - t0:.0f} s)")
  if written != num_ratings:
    raise AssertionError(f"wrote {written} ratings, expected {num_ratings}")
  summary = {
      "generator": "benchmarks/synthetic_ml25m.py", "seed": seed,
      "ratings": int(written), "users": int(users), "movies": int(n_movies),
      "rated_movies": int(rated.sum()),
      "ratings_per_user": {
          "min": int(counts.min()), "median": float(np.median(counts)),
          "mean": float(counts.mean()), "max": int(counts.max())},
      "seconds": round(time.time() - t0, 1),
  }
  with open(os.path.join(out_dir, "synthetic.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--ratings", type=int, required=True,
                 help="number of ratings N (e.g. 1000000)")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--users", type=int, default=None,
                 help=f"default: num_users(N) (ml-25m: {ML25M['users']})")
  p.add_argument("--movies", type=int, default=None,
                 help=f"default: num_movies(N) (ml-25m: {ML25M['movies']})")
  args = p.parse_args(argv)
  summary = generate(args.ratings, args.out, args.seed, users=args.users,
                     movies=args.movies,
                     log=lambda m: print(m, file=sys.stderr, flush=True))
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
