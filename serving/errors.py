"""Serving's errors, and the check that no non-finite score reaches a client.

No TensorFlow here: the HTTP layer and `recommend serve --workers N`'s parent
process use these without loading the stack.
"""
from __future__ import annotations

import math
from typing import Any, Mapping


class RecommenderError(Exception):
  """No usable model (nothing pushed, pinned version missing or damaged, ...)."""


class ModelOutputError(RecommenderError):
  """A loaded model produced an unusable answer (a non-finite score).

  Inputs are validated (finite, in range), so this is the model's fault, not
  the request's: HTTP answers 503, the CLI exits 1.
  """


# Every float an item of a result may carry.
_SCORES = ("score", "predicted_rating", "rank_score")


def check_finite(result: Mapping[str, Any]) -> None:
  """Raises ModelOutputError when an item of `result` has a NaN or infinite
  score: JSON has no such numbers, and a ranking built on them is noise."""
  for item in result.get("items", ()):
    for key in _SCORES:
      value = item.get(key)
      if value is not None and not math.isfinite(value):
        raise ModelOutputError(
            f"the model produced a non-finite {key} ({value}) for movie "
            f"{item.get('movie_id')!r} (model versions "
            f"{dict(result.get('model_versions') or {})})")
