"""Two-stage serving: retrieve → filter seen → rank → top-k (serving/recommender.py).

`recommend` console script: serving/cli.py; HTTP API: serving/http.py.
Which version is served: version_picker.py; request and server limits:
limits.py (the thread pool model_pool.py, the connection deadline
protocol.py); errors: errors.py.
"""
import common  # noqa: F401  pylint: disable=unused-import  (TF_USE_LEGACY_KERAS)
