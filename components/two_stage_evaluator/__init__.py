"""Two-stage evaluation: what a user receives from `recommend`, scored per user, beside strong simple baselines."""
