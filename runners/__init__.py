"""What runners do around a pipeline run, beside compiling it.

The pipeline itself is built once (pipeline/pipeline.py, wiring only) and
handed to an orchestrator by local_runner.py (TFX's LocalDagRunner) or
kubeflow_runner.py (compiled to a KFP v2 spec); both are short dispatchers
over this package:

* flags.py       the runners' command-line flags, declared once;
* local.py       a local run under the output directory's lock, the
                 scheduler loop (one child process per run) and rollback;
* progress.py    one console line per component, full logs to a file;
* schedule.py    output-directory locks, cron and interval schedules;
* retention.py   pruning of pushed versions, old runs and logs; rollback;
* run_report.py  the console summary of a run (from ML Metadata);
* report*.py     the HTML run report with its plots;
* kubeflow.py    compiles the pipeline for KFP v2 and submits runs;
* kfp_local.py   executes a compiled KFP v2 spec on this machine, task by
                 task, the way a KFP backend starts the containers, so that
                 what Kubeflow would run is proven to run.
"""
