"""MovieLensExampleGen: executor Do() on artifacts, splits, properties."""
import os
import random

import pytest
import tensorflow as tf

from common import features
from components.ingestion import ingest
from components.ingestion import IngestionError
from tests import test_ingestion_helpers as helpers


def _read(base_dir, split):
  paths = ingest.split_files(base_dir, split)
  assert paths and all(os.path.basename(p).startswith("data_tfrecord-")
                       and p.endswith(f"-of-{len(paths):05d}.gz") for p in paths)
  assert sorted(os.listdir(os.path.dirname(paths[0]))) == [
      os.path.basename(p) for p in paths]  # no temporary files left
  out = []
  for record in tf.data.TFRecordDataset(paths, compression_type="GZIP"):
    example = tf.train.Example.FromString(record.numpy())
    row = {}
    for name, feature in example.features.feature.items():
      kind = feature.WhichOneof("kind")
      values = list(getattr(feature, kind).value)
      if kind == "bytes_list":
        values = [v.decode("utf-8") for v in values]
      row[name] = values if features.FEATURES[name].varlen else values[0]
    out.append(row)
  return out


def _run(source, tmp_path, name="out", **kwargs):
  examples_dir = str(tmp_path / name / "examples")
  catalogue_dir = str(tmp_path / name / "catalogue")
  summary = ingest.ingest(source, examples_dir=examples_dir,
                          catalogue_dir=catalogue_dir, **kwargs)
  return summary, examples_dir, catalogue_dir


def test_executor_do_writes_artifacts(ml100k_dir, tmp_path):
  from tfx.types import artifact_utils
  from tfx.types import standard_artifacts
  from components.ingestion import executor
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / "examples")
  catalogue = standard_artifacts.Examples()
  catalogue.uri = str(tmp_path / "catalogue")
  executor.Executor().Do(
      {}, {"examples": [examples], "catalogue": [catalogue]},
      {"source": ml100k_dir, "data_config": "", "split": "random",
       "eval_fraction": 0.2, "max_bad_row_fraction": 0.0})

  assert artifact_utils.decode_split_names(examples.split_names) == [
      "train", "eval"]
  assert artifact_utils.decode_split_names(catalogue.split_names) == [
      "catalogue"]
  train = _read(examples.uri, "train")
  eval_ = _read(examples.uri, "eval")
  assert examples.get_int_custom_property("num_examples_train") == len(train)
  assert examples.get_int_custom_property("num_examples_eval") == len(eval_)
  assert len(train) + len(eval_) == 1500
  assert 0.12 < len(eval_) / 1500 < 0.28
  assert examples.get_int_custom_property("num_bad_rows") == 0
  assert examples.get_string_custom_property("source") == ml100k_dir
  assert examples.get_string_custom_property("source_family") == "100k"
  assert examples.get_int_custom_property("implicit") == 0

  # Feature values of one rating, as written by the u.data/u.user/u.item join.
  with open(os.path.join(ml100k_dir, "u.data")) as f:
    u, m, r, t = f.readline().split()
  row = next(x for x in train + eval_
             if x["user_id"] == u and x["movie_id"] == m)
  assert row["user_rating"] == float(r) and row["timestamp"] == int(t)
  assert set(row) == set(features.FEATURES)  # ml-100k has every feature
  with open(os.path.join(ml100k_dir, "u.user")) as f:
    user = next(l.strip().split("|") for l in f if l.split("|")[0] == u)
  assert row["raw_user_age"] == float(user[1])
  assert row["user_gender"] == int(user[2] == "M")
  assert row["user_occupation_text"] == user[3]
  assert row["user_zip_code"] == user[4]

  movies = _read(catalogue.uri, "catalogue")
  assert catalogue.get_int_custom_property("num_movies") == len(movies) == 123
  rated = {x["movie_id"] for x in train + eval_}
  never_rated = {x["movie_id"] for x in movies} - rated
  assert never_rated == {"121", "122", "123"}
  first = next(x for x in movies if x["movie_id"] == "1")
  assert first["movie_title"].startswith("Caf\u00e9 ")
  assert set(first) == set(features.CATALOGUE_FEATURES)


def test_component_definition():
  from tfx.types import standard_artifacts
  from components.ingestion import MovieLensExampleGen
  component = MovieLensExampleGen(source="tfds:movielens/100k-ratings",
                                  split="time", max_bad_row_fraction=0)
  assert component.exec_properties == {
      "source": "tfds:movielens/100k-ratings", "data_config": "",
      "split": "time", "eval_fraction": 0.2, "max_bad_row_fraction": 0.0,
      "source_fingerprint": ""}  # TFDS names are versioned by themselves
  assert set(component.outputs) == {"examples", "catalogue"}
  for channel in component.outputs.values():
    assert channel.type == standard_artifacts.Examples


def test_random_split_is_stable(ml100k_dir, tmp_path):
  summary, ex_dir, _ = _run(ml100k_dir, tmp_path, "a")
  eval_a = {(x["user_id"], x["movie_id"]) for x in _read(ex_dir, "eval")}
  # Shuffle the rows of u.data: each rating keeps its split.
  path = os.path.join(ml100k_dir, "u.data")
  with open(path) as f:
    lines = f.readlines()
  random.Random(1).shuffle(lines)
  with open(path, "w") as f:
    f.writelines(lines)
  _, ex_dir_b, _ = _run(ml100k_dir, tmp_path, "b")
  eval_b = {(x["user_id"], x["movie_id"]) for x in _read(ex_dir_b, "eval")}
  assert eval_a == eval_b and len(eval_a) == summary.num_examples["eval"]
  for user, movie in eval_a:
    assert ingest.is_eval_random(user, movie, 0.2)
  # A larger eval_fraction only moves ratings from train to eval.
  _, ex_dir_c, _ = _run(ml100k_dir, tmp_path, "c", eval_fraction=0.5)
  eval_c = {(x["user_id"], x["movie_id"]) for x in _read(ex_dir_c, "eval")}
  assert eval_a < eval_c and 0.4 < len(eval_c) / 1500 < 0.6


def test_time_split(ml100k_dir, tmp_path):
  summary, ex_dir, _ = _run(ml100k_dir, tmp_path, split="time",
                            eval_fraction=0.25)
  train = [x["timestamp"] for x in _read(ex_dir, "train")]
  eval_ = [x["timestamp"] for x in _read(ex_dir, "eval")]
  assert max(train) <= min(eval_)
  assert len(train) + len(eval_) == 1500
  assert abs(len(eval_) - 375) <= 2  # timestamps are (almost) distinct
  assert summary.num_examples == {"train": len(train), "eval": len(eval_)}


def test_fold_split(ml100k_dir, tmp_path):
  written = helpers.write_ml100k_fold(ml100k_dir, "ub")
  summary, ex_dir, _ = _run(ml100k_dir, tmp_path, split="ub")
  assert summary.num_examples == {"train": 1200, "eval": 300}
  eval_ = _read(ex_dir, "eval")
  expected = [tuple(l.split("\t")[:2]) for l in written["test"]]
  # Shards deal rows round-robin: the same rows, not the file's order.
  assert sorted((x["user_id"], x["movie_id"]) for x in eval_) == sorted(
      expected)
  # Folds exist only for ml-100k, and only when the files are there.
  with pytest.raises(IngestionError, match="split 'u2' needs a GroupLens "
                     "ml-100k folder"):
    _run(helpers.write_ml1m(str(tmp_path / "ml-1m")), tmp_path, split="u2")
  with pytest.raises(IngestionError, match="u3.base is missing"):
    _run(ml100k_dir, tmp_path, split="u3")
  with pytest.raises(IngestionError, match="split 'u9' is not one of"):
    _run(ml100k_dir, tmp_path, split="u9")


def test_other_formats_end_to_end(tmp_path):
  path = helpers.zip_folder(helpers.write_current(str(tmp_path / "ml-20m")),
                            str(tmp_path / "ml-20m.zip"), "ml-20m")
  summary, ex_dir, cat_dir = _run(path, tmp_path, "c", eval_fraction=0.5)
  assert summary.source_family == "current"
  rows = _read(ex_dir, "train") + _read(ex_dir, "eval")
  assert sorted(x["user_rating"] for x in rows) == [0.5, 2.5, 3.5, 4.0, 4.5,
                                                    5.0]
  assert "user_gender" not in rows[0]
  assert len(_read(cat_dir, "catalogue")) == 4
  summary, ex_dir, _ = _run(helpers.write_ml1m(str(tmp_path / "ml-1m")),
                            tmp_path, "m", split="time", eval_fraction=0.25)
  assert summary.source_family == "1m" and summary.num_examples == {
      "train": 6, "eval": 2}
  assert "raw_user_age" not in _read(ex_dir, "eval")[0]


def test_custom_implicit_end_to_end(tmp_path):
  lines = ["user,item,ts"] + [f"u{i % 7},i{i % 11},{1000 + i}"
                              for i in range(60)]
  (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
  (tmp_path / "cfg.yaml").write_text(
      "implicit: true\ninteractions:\n  path: log.csv\n  columns:\n"
      "    user: user\n    item: item\n    timestamp: ts\n")
  summary, ex_dir, cat_dir = _run("", tmp_path, data_config=str(
      tmp_path / "cfg.yaml"), split="time")
  assert summary.implicit and summary.source_family == "custom"
  assert summary.num_examples == {"train": 48, "eval": 12}
  assert "user_rating" not in _read(ex_dir, "train")[0]
  assert sorted(x["movie_id"] for x in _read(cat_dir, "catalogue")) == sorted(
      f"i{i}" for i in range(11))


def test_bad_rows_skipped_and_counted(ml100k_dir, tmp_path):
  data = os.path.join(ml100k_dir, "u.data")
  for line in (3, 30):
    helpers.replace_line(data, line, "1\t77777\t3\t874724710")
  with pytest.raises(IngestionError, match="u.data line 3: movie id '77777' "
                     "is not in u.item"):
    _run(ml100k_dir, tmp_path, "strict")
  for split in ("random", "time"):
    summary, ex_dir, _ = _run(ml100k_dir, tmp_path, split,
                              max_bad_row_fraction=0.01, split=split)
    assert summary.num_bad_rows == 2
    assert sum(summary.num_examples.values()) == 1498
    assert "u.data line 30" in summary.problems[1]
  with pytest.raises(IngestionError, match=r"2 of 1683 rows"):
    _run(ml100k_dir, tmp_path, "tight", max_bad_row_fraction=0.001)


def test_executor_records_bad_rows(ml100k_dir, tmp_path):
  from tfx.types import standard_artifacts
  from components.ingestion import executor
  helpers.replace_line(os.path.join(ml100k_dir, "u.data"), 9, "oops")
  examples, catalogue = (standard_artifacts.Examples(),
                         standard_artifacts.Examples())
  examples.uri, catalogue.uri = str(tmp_path / "e"), str(tmp_path / "c")
  executor.Executor().Do({}, {"examples": [examples],
                              "catalogue": [catalogue]},
                         {"source": ml100k_dir, "max_bad_row_fraction": 0.05})
  assert examples.get_int_custom_property("num_bad_rows") == 1
  assert examples.get_int_custom_property("num_examples_train") + (
      examples.get_int_custom_property("num_examples_eval")) == 1499


def test_source_fingerprint_changes_with_the_files(ml100k_dir):
  """New data under the same path must not be served from the TFX cache."""
  from components.ingestion import MovieLensExampleGen
  from components.ingestion.component import source_fingerprint
  before = MovieLensExampleGen(source=ml100k_dir).exec_properties["source_fingerprint"]
  assert before and before == source_fingerprint(ml100k_dir)
  with open(os.path.join(ml100k_dir, "u.data"), "a") as f:
    f.write("1\t2\t3\t880000000\n")
  after = MovieLensExampleGen(source=ml100k_dir).exec_properties["source_fingerprint"]
  assert after != before


# -- shards ------------------------------------------------------------------
def _ids(base_dir, split):
  return [(x["user_id"], x["movie_id"]) for x in _read(base_dir, split)]


def test_shards_grow_with_rows_and_keep_every_row_once(ml100k_dir, tmp_path,
                                                       monkeypatch):
  whole, ex_dir, cat_dir = _run(ml100k_dir, tmp_path, "whole")
  assert whole.num_shards == {"train": 2, "eval": 2, "catalogue": 2}
  monkeypatch.setattr(ingest, "ROWS_PER_SHARD", 100)  # groups of 2 x 100 rows
  small, ex_small, _ = _run(ml100k_dir, tmp_path, "small")
  train = small.num_examples["train"]
  assert small.num_shards["train"] == 2 * -(-train // 200) > 2
  paths = ingest.split_files(ex_small, "train")
  assert len(paths) == small.num_shards["train"]
  sizes = [sum(1 for _ in tf.data.TFRecordDataset(p, compression_type="GZIP"))
           for p in paths]
  assert max(sizes) <= 100 and sum(sizes) == train
  for split in ("train", "eval"):  # the same rows, each once
    rows = _ids(ex_small, split)
    assert len(rows) == len(set(rows))
    assert set(rows) == set(_ids(ex_dir, split))


def test_fixed_num_shards_and_executor_properties(ml100k_dir, tmp_path):
  from tfx.types import standard_artifacts
  from components.ingestion import executor
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / "examples")
  catalogue = standard_artifacts.Examples()
  catalogue.uri = str(tmp_path / "catalogue")
  executor.Executor().Do(
      {}, {"examples": [examples], "catalogue": [catalogue]},
      {"source": ml100k_dir, "num_shards": 5})
  for split in ("train", "eval"):
    paths = ingest.split_files(examples.uri, split)
    assert [os.path.basename(p) for p in paths] == [
        f"data_tfrecord-{i:05d}-of-00005.gz" for i in range(5)]
    assert examples.get_int_custom_property(f"num_shards_{split}") == 5
    assert len(_read(examples.uri, split)) == examples.get_int_custom_property(
        f"num_examples_{split}")
  assert len(ingest.split_files(catalogue.uri, "catalogue")) == 5
  assert len(_read(catalogue.uri, "catalogue")) == 123
  # Fewer rows than shards: only the shards that hold rows.
  summary, ex_dir, cat_dir = _run(ml100k_dir, tmp_path, "many",
                                  num_shards=200)
  assert summary.num_shards["catalogue"] == 123
  assert len(_read(cat_dir, "catalogue")) == 123


def test_num_shards_is_checked():
  from components.ingestion import MovieLensExampleGen
  with pytest.raises(IngestionError, match="num_shards"):
    ingest.ingest("x", examples_dir="e", catalogue_dir="c", num_shards=-1)
  with pytest.raises(IngestionError, match="num_shards"):
    MovieLensExampleGen(source="tfds:movielens/100k-ratings", num_shards=-2)
  component = MovieLensExampleGen(source="tfds:movielens/100k-ratings",
                                  num_shards=4)
  assert component.exec_properties["num_shards"] == 4
