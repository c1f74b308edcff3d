"""The serving tables beside the retrieval SavedModel: names and layouts.

The retrieval trainer (trainer_modules/retrieval_export.py) writes them to
`<model>/assets.extra/` (TF Serving keeps that folder with the model
version); serving/, the batch recommender and the benchmarks read them. The
names and the layout of the seen-movies table are defined here once.

Seen movies (every distinct training (user, movie) pair) are the largest
table: one entry per training rating. As JSON lines (one list of movie ids
per user) 100M ratings make ~650 MB, which every model load parsed whole into
Python objects. They are three .npy arrays instead, which
serving memory-maps (`np.load(mmap_mode="r")`): loading costs nothing, the
pages a request touches are read on demand and shared by every process
serving the same version:
* `seen_users.npy`    [U] fixed-width bytes (`S<n>`), the UTF-8 user ids,
                      sorted (a request's user is found by binary search);
* `seen_offsets.npy`  [U + 1] int64, user i's movies are
                      movies[offsets[i]:offsets[i + 1]];
* `seen_movies.npy`   [P] int32, positions in `catalogue.jsonl` (its line
                      numbers, 0-based), ascending per user.
~4 B per pair. Models exported before this layout have `seen.jsonl`
({"user_id", "movie_ids": [...]} per line); `SeenTable.load` still reads it,
so a rollback to such a version keeps its seen-movie masking.
"""
from __future__ import annotations

import io
import json
import os
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np

ASSETS_EXTRA = "assets.extra"
CATALOGUE_FILE = "catalogue.jsonl"
USER_FEATURES_FILE = "user_features.jsonl"
POPULARITY_FILE = "popularity.json"
MANIFEST_FILE = "manifest.json"
SEEN_USERS_FILE = "seen_users.npy"
SEEN_OFFSETS_FILE = "seen_offsets.npy"
SEEN_MOVIES_FILE = "seen_movies.npy"
SEEN_FILES = (SEEN_USERS_FILE, SEEN_OFFSETS_FILE, SEEN_MOVIES_FILE)
LEGACY_SEEN_FILE = "seen.jsonl"  # read only (models exported before SEEN_FILES)


def read_catalogue_table(assets_dir: str, strict: bool = True):
  """(movie ids, titles, genre ids, embedding matrix) of CATALOGUE_FILE (one
  JSON object per movie: movie_id, movie_title, movie_genres, embedding, as
  trainer_modules/retrieval_export.py writes it); strict: the matrix must be
  2-D, non-empty and finite. ValueError naming the line otherwise."""
  path = os.path.join(assets_dir, CATALOGUE_FILE)
  ids, titles, genres, emb = [], [], [], []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      try:
        row = json.loads(line)
        ids.append(row["movie_id"])
        titles.append(row["movie_title"])
        genres.append([int(g) for g in row["movie_genres"]])
        emb.append(row["embedding"])
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{ASSETS_EXTRA}/{CATALOGUE_FILE} line "
                         f"{n} is not a catalogue row ({type(e).__name__}: "
                         f"{e})") from None
  candidates = np.ascontiguousarray(np.asarray(emb, np.float32))
  if strict and (candidates.ndim != 2 or not len(candidates)
                 or not np.isfinite(candidates).all()):
    raise ValueError(f"{ASSETS_EXTRA}/{CATALOGUE_FILE} holds no "
                     "finite [movies, dim] embedding matrix "
                     f"(shape {candidates.shape})")
  return ids, titles, genres, candidates



class SeenTable:
  """Each known user's seen movies as catalogue positions (see module doc)."""

  def __init__(self, users: np.ndarray, offsets: np.ndarray, movies: np.ndarray):
    users = np.asanyarray(users)  # keeps a np.memmap
    if users.dtype.kind != "S":
      raise ValueError(f"seen users must be a bytes ('S') array, got {users.dtype}")
    if len(offsets) != len(users) + 1 or (len(users) and offsets[-1] != len(movies)):
      raise ValueError(
          f"seen table is torn: {len(users)} users, {len(offsets)} offsets "
          f"(expected {len(users) + 1}), {len(movies)} movies "
          f"(offsets end at {offsets[-1] if len(offsets) else None})")
    self.users, self.offsets, self.movies = users, offsets, movies

  @classmethod
  def from_lists(cls, seen: Mapping[str, Sequence[int]]) -> "SeenTable":
    """From {user id: catalogue positions} (tests, the legacy reader)."""
    names = sorted(seen, key=lambda u: str(u).encode("utf-8"))
    lists = [np.unique(np.asarray(list(seen[u]), np.int64)) for u in names]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    movies = (np.concatenate(lists) if lists else np.zeros([0])).astype(np.int32)
    users = (np.asarray([str(u).encode("utf-8") for u in names], "S")
             if names else np.zeros([0], "S1"))
    return cls(users, offsets, movies)

  # -- reading ---------------------------------------------------------------

  @classmethod
  def load(cls, assets_dir: str, catalogue_ids: Optional[Sequence[str]] = None,
           mmap: bool = True) -> "SeenTable":
    """The table in `assets_dir` (memory-mapped), the legacy seen.jsonl
    (needs `catalogue_ids` to map movie ids to positions), or an empty one."""
    paths = [os.path.join(assets_dir, n) for n in SEEN_FILES]
    if all(os.path.exists(p) for p in paths):
      mode = "r" if mmap else None
      return cls(*(np.load(p, mmap_mode=mode, allow_pickle=False) for p in paths))
    legacy = os.path.join(assets_dir, LEGACY_SEEN_FILE)
    if os.path.exists(legacy) and catalogue_ids is not None:
      index_of = {m: i for i, m in enumerate(catalogue_ids)}
      seen = {}
      with open(legacy, encoding="utf-8") as f:
        for line in f:
          if line.strip():
            row = json.loads(line)
            seen[str(row["user_id"])] = [index_of[m] for m in row["movie_ids"]
                                         if m in index_of]
      return cls.from_lists(seen)
    return cls.from_lists({})

  def _row(self, user_id: str) -> int:
    if not len(self.users):
      return -1
    key = np.asarray(str(user_id).encode("utf-8"), self.users.dtype)
    if len(key.item()) != len(str(user_id).encode("utf-8")):
      return -1  # longer than every stored id
    i = int(np.searchsorted(self.users, key))
    return i if i < len(self.users) and self.users[i] == key else -1

  def get(self, user_id: str) -> Optional[np.ndarray]:
    """The user's seen catalogue positions (int32), None for an unknown user."""
    i = self._row(user_id)
    if i < 0:
      return None
    return np.asarray(self.movies[int(self.offsets[i]):int(self.offsets[i + 1])])

  def __contains__(self, user_id: object) -> bool:
    return self._row(str(user_id)) >= 0

  def __len__(self) -> int:
    return len(self.users)

  def user_ids(self) -> Iterator[str]:
    """The known users, in stored (bytes) order."""
    for u in self.users:
      yield u.decode("utf-8")

  # -- writing ---------------------------------------------------------------

  def write(self, assets_dir: str, open_fn=open) -> None:
    """Writes the three .npy files; `open_fn(path, "wb")` (e.g. tf.io.gfile.GFile)."""
    for name, array in zip(SEEN_FILES, (self.users, self.offsets, self.movies)):
      buf = io.BytesIO()
      np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
      with open_fn(os.path.join(assets_dir, name), "wb") as f:
        f.write(buf.getvalue())
