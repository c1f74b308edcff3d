"""Retrieval evaluator component and the latest-blessed-model resolver."""
from components.retrieval_evaluator.component import RetrievalEvaluator, RetrievalEvaluatorSpec
from components.retrieval_evaluator.resolver import latest_blessed_model_resolver

__all__ = ["RetrievalEvaluator", "RetrievalEvaluatorSpec",
           "latest_blessed_model_resolver"]
