"""Helpers (no tests): small GroupLens-format files and custom logs for the ingestion tests.

Written by the ingestion tests themselves (MovieLens may not be copied into
the repository). ml-100k files come from tests/synthetic_data.py.
"""
from __future__ import annotations

import os
import zipfile
from typing import Dict, List

ML1M_MOVIES = [
    ("1", "Toy Story (1995)", "Animation|Children's|Comedy"),
    ("2", "Jumanji (1995)", "Adventure|Children's|Fantasy"),
    ("3", "Caf\u00e9 Noir (1996)", "Film-Noir"),
    ("4", "Never Rated (1997)", "Drama|War"),
]
# user id, gender, age code, occupation code, zip
ML1M_USERS = [
    ("1", "F", "1", "10", "48067"),   # K-12 student
    ("2", "M", "56", "16", "70072"),  # self-employed
    ("3", "M", "25", "4", "55117"),   # college/grad student
]
ML1M_RATINGS = [
    ("1", "1", "5", "978300760"), ("1", "2", "3", "978302109"),
    ("2", "1", "4", "978301968"), ("2", "3", "2", "978300275"),
    ("3", "2", "1", "978824291"), ("3", "3", "5", "978300719"),
    ("3", "1", "4", "978302268"), ("2", "2", "3", "978301368"),
]


def write_ml1m(path: str) -> str:
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "movies.dat"), "wb") as f:
    for row in ML1M_MOVIES:
      f.write(("::".join(row) + "\n").encode("latin-1"))
  with open(os.path.join(path, "users.dat"), "w") as f:
    for row in ML1M_USERS:
      f.write("::".join(row) + "\n")
  with open(os.path.join(path, "ratings.dat"), "w") as f:
    for row in ML1M_RATINGS:
      f.write("::".join(row) + "\n")
  return path


CURRENT_MOVIES = [
    ("1", "Toy Story (1995)", "Adventure|Animation|Children|Comedy|Fantasy"),
    ("2", "\"Good, the Bad and the Ugly, The (1966)\"", "Action|Western"),
    ("3", "Interstellar (2014)", "Sci-Fi|IMAX"),
    ("4", "Unrated Thing (2015)", "(no genres listed)"),
]
CURRENT_RATINGS = [
    ("1", "1", "3.5", "1112486027"), ("1", "2", "4.0", "1112484676"),
    ("2", "3", "0.5", "1112484819"), ("2", "1", "5.0", "1112484727"),
    ("3", "2", "2.5", "1112484580"), ("3", "3", "4.5", "1094785740"),
]


def write_current(path: str) -> str:
  """An ml-20m/25m/latest style folder (ratings.csv, movies.csv, tags.csv)."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "movies.csv"), "w", encoding="utf-8") as f:
    f.write("movieId,title,genres\n")
    for movie_id, title, genres in CURRENT_MOVIES:
      f.write(f"{movie_id},{title},{genres}\n")
  with open(os.path.join(path, "ratings.csv"), "w") as f:
    f.write("userId,movieId,rating,timestamp\n")
    for row in CURRENT_RATINGS:
      f.write(",".join(row) + "\n")
  with open(os.path.join(path, "tags.csv"), "w") as f:
    f.write("userId,movieId,tag,timestamp\n1,1,funny,1112486027\n")
  return path


def zip_folder(folder: str, zip_path: str, top: str = "") -> str:
  """Zips the files of `folder` under the top folder `top` ('' for none)."""
  with zipfile.ZipFile(zip_path, "w") as z:
    if top:
      z.writestr(top + "/", "")
    for name in sorted(os.listdir(folder)):
      arcname = f"{top}/{name}" if top else name
      z.write(os.path.join(folder, name), arcname)
  return zip_path


def write_ml100k_fold(path: str, fold: str = "u1",
                      test_every: int = 5) -> Dict[str, List[str]]:
  """Writes <fold>.base/.test from u.data (every 5th line to test)."""
  with open(os.path.join(path, "u.data")) as f:
    lines = [line for line in f if line.strip()]
  base = [l for i, l in enumerate(lines) if i % test_every]
  test = [l for i, l in enumerate(lines) if not i % test_every]
  with open(os.path.join(path, f"{fold}.base"), "w") as f:
    f.writelines(base)
  with open(os.path.join(path, f"{fold}.test"), "w") as f:
    f.writelines(test)
  return {"base": base, "test": test}


def replace_line(path: str, line_number: int, text: str) -> None:
  """Replaces 1-based line `line_number` of a text file."""
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  lines[line_number - 1] = text.encode("latin-1")
  with open(path, "wb") as f:
    f.write(b"\n".join(lines))
