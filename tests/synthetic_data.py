"""Small MovieLens-like data with planted structure, written by the tests.

MovieLens itself may not be copied into the repository (GroupLens licence),
so tests generate look-alike data in GroupLens's ml-100k file format. The
structure is planted so that models have something to learn:

* every movie has one main genre (plus sometimes a second one);
* every user has a favourite genre, rates mostly movies of it, and rates
  them high (4-5) while other movies get low ratings (1-2);
* timestamps increase with each user's rating order.

So a retrieval model should recommend favourite-genre movies and a ranking
model should predict high ratings for them, far better than popularity or
the global mean.
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

# The 19 genre columns of u.item, in GroupLens order.
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
ML100K_OCCUPATIONS = [
    "administrator", "artist", "doctor", "educator", "engineer",
    "entertainment", "executive", "healthcare", "homemaker", "lawyer",
    "librarian", "marketing", "none", "other", "programmer", "retired",
    "salesman", "scientist", "student", "technician", "writer",
]
# Genres used for planting (columns 1..6 of u.item: Action .. Crime).
PLANTED_GENRES = [1, 2, 3, 4, 5, 6]
WORDS = ["star", "night", "love", "war", "dark", "city", "river", "king",
         "ghost", "summer", "blue", "last", "secret", "road", "dream", "fire"]
T0 = 874724710


def make_ratings(num_users: int = 60, num_movies: int = 120,
                 ratings_per_user: int = 25, seed: int = 0) -> Dict[str, object]:
  """Returns planted data as arrays: users, movies and ratings tables."""
  rng = np.random.default_rng(seed)
  movie_genre = np.array([PLANTED_GENRES[i % len(PLANTED_GENRES)]
                          for i in range(num_movies)])
  user_genre = np.array([PLANTED_GENRES[u % len(PLANTED_GENRES)]
                         for u in range(num_users)])
  rows = []
  for u in range(num_users):
    liked = np.flatnonzero(movie_genre == user_genre[u])
    other = np.flatnonzero(movie_genre != user_genre[u])
    n_liked = min(len(liked), int(round(ratings_per_user * 0.8)))
    chosen = list(rng.choice(liked, n_liked, replace=False))
    chosen += list(rng.choice(other, ratings_per_user - n_liked, replace=False))
    rng.shuffle(chosen)
    for k, m in enumerate(chosen):
      good = movie_genre[m] == user_genre[u]
      rating = int(rng.integers(4, 6) if good else rng.integers(1, 3))
      ts = T0 + u * 1000 + k * 60 + int(rng.integers(0, 30))
      rows.append((u + 1, m + 1, rating, ts))
  return {"movie_genre": movie_genre, "user_genre": user_genre, "ratings": rows,
          "num_users": num_users, "num_movies": num_movies}


def write_ml100k(path: str, num_users: int = 60, num_movies: int = 120,
                 ratings_per_user: int = 25, seed: int = 0,
                 unrated_movies: int = 3) -> Dict[str, object]:
  """Writes u.data, u.item, u.user, u.genre, u.occupation to `path`.

  The last `unrated_movies` movies of u.item are never rated, so the
  catalogue is larger than the set of rated movies (as in real catalogues).
  Returns the planted structure (see make_ratings).
  """
  os.makedirs(path, exist_ok=True)
  data = make_ratings(num_users, num_movies, ratings_per_user, seed)
  rng = np.random.default_rng(seed + 1)
  with open(os.path.join(path, "u.data"), "w") as f:
    for u, m, r, t in data["ratings"]:
      f.write(f"{u}\t{m}\t{r}\t{t}\n")
  total_movies = num_movies + unrated_movies
  with open(os.path.join(path, "u.item"), "wb") as f:
    for m in range(total_movies):
      genre = data["movie_genre"][m] if m < num_movies else 8  # Drama
      flags = ["0"] * 19
      flags[genre] = "1"
      if m % 7 == 0:
        flags[8] = "1"  # some movies are also dramas
      words = " ".join(rng.choice(WORDS, 2))
      title = f"{ML100K_GENRES[genre]} {words} {m + 1} (199{m % 10})"
      if m == 0:
        title = "Caf\u00e9 " + title  # latin-1 byte 0xE9, as in real u.item
      line = "|".join([str(m + 1), title, "01-Jan-1995", "",
                       "http://example.invalid/"] + flags) + "\n"
      f.write(line.encode("latin-1"))
  with open(os.path.join(path, "u.user"), "w") as f:
    for u in range(num_users):
      age = 15 + (u * 7) % 50
      gender = "M" if u % 2 else "F"
      occ = ML100K_OCCUPATIONS[u % len(ML100K_OCCUPATIONS)]
      f.write(f"{u + 1}|{age}|{gender}|{occ}|{10000 + u * 37:05d}\n")
  with open(os.path.join(path, "u.genre"), "w") as f:
    for i, g in enumerate(ML100K_GENRES):
      f.write(f"{g}|{i}\n")
    f.write("\n")
  with open(os.path.join(path, "u.occupation"), "w") as f:
    f.write("\n".join(ML100K_OCCUPATIONS) + "\n")
  return data


def tfds_genre_ids(ml100k_genre_column: int) -> List[int]:
  """TFDS ClassLabel id of a u.item genre column (for assertions)."""
  from common import features  # pylint: disable=g-import-not-at-top
  name = ML100K_GENRES[ml100k_genre_column]
  name = {"unknown": "Unknown", "Children's": "Children"}.get(name, name)
  return [features.GENRE_ID[name]]


def raw_rows(data: Dict[str, object]) -> Dict[str, list]:
  """Contract-feature dicts (as ingestion writes them) for planted data.

  Returns {"ratings": [...], "catalogue": [...]} where catalogue has every
  movie (including never-rated ones is left to write_ml100k).
  """
  from common import features as F  # pylint: disable=g-import-not-at-top
  genre_name = {1: "Action", 2: "Adventure", 3: "Animation", 4: "Children",
                5: "Comedy", 6: "Crime"}
  catalogue = []
  for m in range(data["num_movies"]):
    g = int(data["movie_genre"][m])
    catalogue.append({
        F.MOVIE_ID: str(m + 1),
        F.MOVIE_TITLE: f"{genre_name[g]} {WORDS[m % len(WORDS)]} {m + 1} (1995)",
        F.MOVIE_GENRES: [F.GENRE_ID[genre_name[g]]],
    })
  ratings = []
  for u, m, r, t in data["ratings"]:
    age = 15 + ((u - 1) * 7) % 50
    occ = ML100K_OCCUPATIONS[(u - 1) % len(ML100K_OCCUPATIONS)]
    row = dict(catalogue[m - 1])
    row.update({
        F.USER_ID: str(u), F.USER_RATING: float(r), F.TIMESTAMP: int(t),
        F.USER_GENDER: int((u - 1) % 2), F.RAW_USER_AGE: float(age),
        F.BUCKETIZED_USER_AGE: float(max([1] + [a for a in (18, 25, 35, 45, 50, 56)
                                                if age >= a])),
        F.USER_OCCUPATION_TEXT: occ,
        F.USER_OCCUPATION_LABEL: 0,
        F.USER_ZIP_CODE: f"{10000 + (u - 1) * 37:05d}",
    })
    ratings.append(row)
  return {"ratings": ratings, "catalogue": catalogue}


def write_spans(root: str, spans=(1, 2), name: str = "span-{}",
                **kwargs) -> str:
  """Writes one ml-100k folder per span number; returns the {SPAN} pattern.

  Span n uses seed n (same users and movies, other ratings), so consecutive
  spans look alike, as consecutive deliveries of one service do. kwargs go
  to write_ml100k.
  """
  for span in spans:
    write_ml100k(os.path.join(root, name.format(span)),
                 **dict(kwargs, seed=kwargs.get("seed", 0) + span))
  return os.path.join(root, name.format("{SPAN}"))


def invert_ratings(path: str) -> None:
  """Rewrites u.data with every rating r as 6 - r: valid, but drifted.

  Every value stays in the schema's domain (1..5), so only a drift check,
  not schema validation, can tell that the ratings turned upside down.
  """
  data_file = os.path.join(path, "u.data")
  with open(data_file) as f:
    rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
  with open(data_file, "w") as f:
    for u, m, r, t in rows:
      f.write(f"{u}\t{m}\t{6 - int(r)}\t{t}\n")


# Trainer settings of the end-to-end runs on planted data (tests/
# test_pipeline_e2e.py, test_kubeflow_local_run.py) that expect both stages
# to be blessed and pushed. Small data: small ranking batches, more epochs.
# Retrieval: the settings before the ml-100k defaults (cosine at T 0.2,
# mask_seen, movie_bias, 8 epochs at lr 0.005). On 120 users × 360 planted
# movies those defaults bring the retrieval-only top-10 within the
# TwoStageEvaluator's margin (0.005 nDCG@10) of the two-stage list, so the
# gate rightly refuses the ranker; these tests check wiring, blessing and
# pushing, which needs a ranker that adds to retrieval.
E2E_RANKING_CONFIG = {"batch_size": 32, "learning_rate": 0.003, "epochs": 10}
E2E_RETRIEVAL_CONFIG = {"normalize": False, "temperature": 1.0,
                        "mask_seen": False, "movie_bias": False,
                        "learning_rate": 0.01, "epochs": 5}
