"""ZenML pipelines and what runs around them: the rounds (:mod:`pipelines.active_tuning`),
stack set-up (:mod:`pipelines.stack`), a study's report files (:mod:`pipelines.study`),
and run.py's plan and pre-flight checks (:mod:`pipelines.plan`), runs (:mod:`pipelines.runner`),
the watch on a local run (:mod:`pipelines.watch`), printed summaries (:mod:`pipelines.console`), a
study's pairs side by side in worker processes (:mod:`pipelines.fanout`) or submitted to a remote
orchestrator (:mod:`pipelines.remote`).
What they read from and write to MLflow is :mod:`tracking`'s."""
