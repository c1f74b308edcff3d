"""Batch recommendations component (see component.py and executor.py)."""
from components.batch_recommender.component import BatchRecommender, BatchRecommenderSpec

__all__ = ["BatchRecommender", "BatchRecommenderSpec"]
