"""Retrieval evaluator component (see component.py and executor.py)."""
from components.retrieval_evaluator.component import RetrievalEvaluator, RetrievalEvaluatorSpec

__all__ = ["RetrievalEvaluator", "RetrievalEvaluatorSpec"]
