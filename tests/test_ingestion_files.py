"""components/ingestion/files.py: fileio streams, zips, encodings, read errors."""
import os
import zipfile

import pytest
import tensorflow as tf

from components.ingestion import files
from components.ingestion import sources
from components.ingestion.base import IngestionError
from tests import test_ingestion_helpers as helpers


def _rows(path):
  src = sources.open_source(path)
  try:
    return list(src.ratings()), {m["movie_id"]: m for m in src.catalogue()}
  finally:
    src.close()


# -- any filesystem ----------------------------------------------------------
def test_folders_and_zips_read_through_fileio_on_a_non_local_filesystem(
    ml100k_dir, tmp_path):
  """ram:// is TensorFlow's in-memory filesystem: the GFile path, not open()."""
  local_rows, local_movies = _rows(ml100k_dir)
  zip_path = helpers.zip_folder(ml100k_dir, str(tmp_path / "ml.zip"),
                                top="ml-100k")
  root = f"ram://{tmp_path.name}"
  tf.io.gfile.makedirs(f"{root}/ml-100k")
  tf.io.gfile.copy(zip_path, f"{root}/ml.zip")
  for name in os.listdir(ml100k_dir):
    tf.io.gfile.copy(os.path.join(ml100k_dir, name), f"{root}/ml-100k/{name}")
  for path in (f"{root}/ml.zip", f"{root}/ml-100k"):
    rows, movies = _rows(path)
    assert rows == local_rows and movies == local_movies
    assert sources.detect_source_family(path) == "100k"


def test_open_binary_is_an_io_stream_that_seeks(tmp_path):
  path = tmp_path / "x.bin"
  path.write_bytes(b"line 1\nline 2\n" * 1000)
  with files.open_binary(str(path)) as f:
    assert f.readline() == b"line 1\n"
    assert f.seek(-7, os.SEEK_END) == 14000 - 7
    assert f.read() == b"line 2\n"
  with pytest.raises(IngestionError, match="nope.csv does not exist"):
    files.open_binary(str(tmp_path / "nope.csv"))


# -- encodings ---------------------------------------------------------------
def _recode(path, source="latin-1", target="utf-8"):
  with open(path, "rb") as f:
    text = f.read().decode(source)
  with open(path, "wb") as f:
    f.write(text.encode(target))


def test_detect_encoding(tmp_path):
  def detect(data: bytes) -> str:
    path = tmp_path / "f"
    path.write_bytes(data)
    with files.open_binary(str(path)) as f:
      return files.detect_encoding(f)
  assert detect("Caf\u00e9|x\n".encode("utf-8")) == "utf-8"
  assert detect("Caf\u00e9|x\n".encode("latin-1")) == "latin-1"
  assert detect(b"plain ascii\n") == "latin-1"  # the same text either way
  # Mostly UTF-8 but one latin-1 byte: not UTF-8.
  assert detect("\u00e9".encode("utf-8") * 5000 + b"\xe9") == "latin-1"
  # A UTF-8 character split across the 1 MiB read chunks is still UTF-8.
  assert detect(b"a" * ((1 << 20) - 1) + "\u00e9".encode("utf-8")) == "utf-8"


def test_ml100k_utf8_item_file_is_not_garbled(ml100k_dir):
  _, movies = _rows(ml100k_dir)  # GroupLens' latin-1
  assert movies["1"]["movie_title"].startswith("Caf\u00e9 ")
  _recode(os.path.join(ml100k_dir, "u.item"))  # a re-saved UTF-8 copy
  rows, utf8_movies = _rows(ml100k_dir)
  assert utf8_movies == movies
  assert "\u00c3" not in utf8_movies["1"]["movie_title"]  # no "CafÃ©"
  assert any(r["movie_title"].startswith("Caf\u00e9 ") for r in rows)


def test_ml1m_movies_dat_in_either_encoding(tmp_path):
  latin = helpers.write_ml1m(str(tmp_path / "latin"))
  utf8 = helpers.write_ml1m(str(tmp_path / "utf8"))
  _recode(os.path.join(utf8, "movies.dat"))
  _, latin_movies = _rows(latin)
  _, utf8_movies = _rows(utf8)
  assert latin_movies["3"]["movie_title"] == "Caf\u00e9 Noir (1996)"
  assert utf8_movies == latin_movies


# -- read errors name the file and line --------------------------------------
def test_current_csv_that_is_not_utf8_names_file_and_line(tmp_path):
  path = helpers.write_current(str(tmp_path / "ml-25m"))
  helpers.replace_line(os.path.join(path, "movies.csv"), 4,
                       "3,Caf\u00e9 (2014),Drama")  # written as latin-1
  with pytest.raises(IngestionError) as e:
    _rows(path)
  message = str(e.value)
  assert "movies.csv line 4: b'3,Caf\\xe9 (2014),Drama' is not utf-8" in message
  assert "encoding" in message


def test_malformed_csv_names_file_and_line(tmp_path):
  path = helpers.write_current(str(tmp_path / "ml-25m"))
  with open(os.path.join(path, "ratings.csv"), "a") as f:
    f.write('4,1,"3.5' + "x" * 140_000 + "\n")  # an unclosed quote
  with pytest.raises(IngestionError,
                     match=r"ratings.csv line 8: malformed CSV \(field "
                     r"larger than field limit"):
    _rows(path)


def test_corrupt_zip_member_names_the_member(ml100k_dir, tmp_path):
  zip_path = str(tmp_path / "ml.zip")
  with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as z:
    for name in sorted(os.listdir(ml100k_dir)):
      z.write(os.path.join(ml100k_dir, name), name)
  with zipfile.ZipFile(zip_path) as z:
    info = z.getinfo("u.data")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra)
  with open(zip_path, "r+b") as f:  # flip a byte of u.data: its CRC fails
    f.seek(offset + 5)
    byte = f.read(1)
    f.seek(offset + 5)
    f.write(bytes([byte[0] ^ 0x01]))
  with pytest.raises(IngestionError) as e:
    _rows(zip_path)
  assert f"{zip_path}:u.data line" in str(e.value)
  assert "cannot be read (BadZipFile: Bad CRC-32" in str(e.value)


def test_not_a_zip(tmp_path):
  path = tmp_path / "ml.zip"
  path.write_text("userId,movieId\n")
  with pytest.raises(IngestionError, match="ml.zip is not a readable zip"):
    sources.open_source(str(path))
