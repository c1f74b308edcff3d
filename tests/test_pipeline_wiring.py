"""create_pipeline() wiring: which components, in which order, for which data."""
import os

import pytest

from pipeline import pipeline as pipeline_lib
from tests import synthetic_data


def _ids(p):
  return [c.id for c in p.components]


def test_movielens_pipeline_has_both_branches_after_the_gate(tmp_path):
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  p = pipeline_lib.create_pipeline("t", str(tmp_path / "root"), data,
                                   str(tmp_path / "serving"))
  ids = _ids(p)
  for name in ("MovieLensExampleGen", "ImportSchemaGen", "ValidationGate", "Transform",
               "RetrievalTrainer", "RetrievalEvaluator", "RetrievalPusher",
               "RankingTrainer", "RankingEvaluator", "RankingPusher"):
    assert name in ids
  by_id = {c.id: c for c in p.components}
  _assert_two_stage_blesses_ranking(by_id, with_tfma=True)
  assert any(n.id == "ValidationGate" for n in by_id["Transform"].upstream_nodes)
  # Pushers write to separate per-stage folders.
  dest = {s: by_id[f"{s}Pusher"].exec_properties["push_destination"]
          for s in ("Retrieval", "Ranking")}
  assert os.path.join("serving", "retrieval") in str(dest["Retrieval"])
  assert os.path.join("serving", "ranking") in str(dest["Ranking"])


def _assert_two_stage_blesses_ranking(by_id, with_tfma):
  """The RankingPusher follows TwoStageEvaluator; the ranking resolver reads
  what the RankingPusher served (the baseline is the model served)."""
  two_stage = by_id["TwoStageEvaluator"]
  assert two_stage.inputs["model"].producer_component_id == "RetrievalTrainer"
  assert two_stage.inputs["ranking_model"].producer_component_id == "RankingTrainer"
  assert by_id["RankingPusher"].inputs["model_blessing"].producer_component_id == \
      "TwoStageEvaluator"
  resolver = by_id["LatestBlessedRankingModel"].raw_inputs
  assert resolver["model_blessing"].producer_component_id == "RankingPusher"
  assert resolver["model_blessing"].output_key == "served_blessing"
  assert resolver["model"].producer_component_id == "RankingTrainer"
  rating = two_stage.inputs.get("rating_blessing")
  if with_tfma:
    assert rating.producer_component_id == "RankingEvaluator"
  else:
    assert rating is None and "RankingEvaluator" not in by_id


def test_ranking_without_retrieval_is_refused(tmp_path):
  data = str(tmp_path / "ml-100k")
  synthetic_data.write_ml100k(data)
  with pytest.raises(ValueError, match="needs enable_retrieval"):
    pipeline_lib.create_pipeline("t", str(tmp_path / "root"), data,
                                 str(tmp_path / "serving"), enable_retrieval=False)


def test_implicit_feedback_ranks_without_tfma(tmp_path):
  log = tmp_path / "likes.csv"
  log.write_text("user,item,ts\nu1,i1,1600000000\nu2,i1,1600000100\n")
  config = tmp_path / "likes.yaml"
  config.write_text("interactions:\n  path: likes.csv\n  format: csv\n"
                    "  columns: {user: user, item: item, timestamp: ts}\n"
                    "implicit: true\n")
  p = pipeline_lib.create_pipeline("t", str(tmp_path / "root"), "",
                                   str(tmp_path / "serving"),
                                   data_config=str(config))
  ids = _ids(p)
  assert "RetrievalTrainer" in ids
  # Ranking trains on engagement, blessed by the two-stage top-k alone.
  assert {"RankingTrainer", "TwoStageEvaluator", "RankingPusher"} <= set(ids)
  _assert_two_stage_blesses_ranking({c.id: c for c in p.components}, with_tfma=False)
  assert "SchemaGen" in ids and "ImportSchemaGen" not in ids  # own data: inferred
