"""Two-stage evaluation: what a user receives from `recommend`, scored per user, beside strong simple baselines."""
from components.two_stage_evaluator.component import TwoStageEvaluator, TwoStageEvaluatorSpec  # noqa: E402
