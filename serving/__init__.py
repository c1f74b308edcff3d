"""Two-stage serving: retrieve → filter seen → rank → top-k (serving/recommender.py).

`recommend` console script: serving/cli.py; HTTP API: serving/http.py.
"""
import common  # noqa: F401  pylint: disable=unused-import  (TF_USE_LEGACY_KERAS)
