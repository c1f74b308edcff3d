"""How long a trainer trains: its epochs, capped by a budget of examples.

The epoch counts of the defaults were chosen on ml-100k (8 retrieval and
5 ranking epochs over 80k training rows). Kept at 10M ratings they would
train on 64M and 40M examples: hours on 2 cores, for little gain, since
one pass over millions of rows already visits every user and movie many
times. So each trainer's `max_train_examples` caps epochs × training rows,
and a trainer always makes at least one full pass (a partial epoch would
see only the first rows of a split stored in file order). Above the budget
the cost of training is one pass: linear in the data.

    epochs_within(num_rows=800_000, epochs=8, max_examples=8_000_000)    # 8
    epochs_within(num_rows=2_400_000, epochs=8, max_examples=8_000_000)  # 3
    epochs_within(num_rows=8_000_000, epochs=8, max_examples=8_000_000)  # 1

`max_examples` None or 0 switches the cap off. `epochs` 0 trains nothing
(the export is the initialised or warm-started model; the tests use it
for a deliberately worse retraining) and is never raised by the cap. A TFX TrainArgs.num_steps
(fn_args.train_steps) still overrides the epoch count in both trainers.
"""
from __future__ import annotations

from typing import Optional


def epochs_within(num_rows: int, epochs: int, max_examples: Optional[int]) -> int:
  """`epochs`, lowered so that epochs × num_rows ≤ max_examples (at least 1
  unless `epochs` is 0)."""
  epochs = int(epochs)
  if epochs < 0:
    raise ValueError(f"epochs must be 0 or more, got {epochs}")
  if epochs == 0 or not max_examples or num_rows <= 0:
    return epochs
  if int(max_examples) < 0:
    raise ValueError(f"max_train_examples must be positive, got {max_examples}")
  return max(1, min(epochs, int(max_examples) // int(num_rows)))
