"""Benchmarks of the project's models on real MovieLens data (not shipped)."""
import common  # noqa: F401  pylint: disable=unused-import
