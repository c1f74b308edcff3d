"""trainer_modules/budget.py: epochs capped by a budget of training examples."""
import pytest

from trainer_modules import budget


def test_small_data_keeps_its_epochs():
  assert budget.epochs_within(80_000, 8, 8_000_000) == 8
  assert budget.epochs_within(1_000_000, 8, 8_000_000) == 8


def test_large_data_trains_fewer_epochs_but_at_least_one():
  assert budget.epochs_within(2_400_000, 8, 8_000_000) == 3
  assert budget.epochs_within(8_000_000, 8, 8_000_000) == 1
  assert budget.epochs_within(20_000_000, 8, 8_000_000) == 1


def test_no_budget_and_bad_values():
  assert budget.epochs_within(10**9, 5, None) == 5
  assert budget.epochs_within(10**9, 5, 0) == 5
  with pytest.raises(ValueError, match="epochs"):
    budget.epochs_within(10, -1, 100)
  with pytest.raises(ValueError, match="max_train_examples"):
    budget.epochs_within(10, 3, -5)


def test_zero_epochs_trains_nothing_and_is_not_raised_to_one():
  """epochs 0 is an untrained export (the tests' worse retraining)."""
  assert budget.epochs_within(80_000, 0, 8_000_000) == 0
  assert budget.epochs_within(80_000_000, 0, 8_000_000) == 0
