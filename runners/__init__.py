"""What runners do around a pipeline run, beside compiling it.

The pipeline itself is built once (pipeline/pipeline.py) and handed to an
orchestrator by local_runner.py (TFX's LocalDagRunner) or kubeflow_runner.py
(compiled to a KFP v2 spec). This package holds the pieces that act on a run
from outside the pipeline definition: kfp_local.py executes a compiled KFP v2
spec on this machine, task by task, the way a KFP backend starts the
containers (executor input in, executor output back, resolver queries against
earlier runs' artifacts), so that what Kubeflow would run is proven to run.
"""
