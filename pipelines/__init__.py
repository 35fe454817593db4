"""ZenML pipelines and what runs around them: the rounds (:mod:`pipelines.active_tuning`),
stack set-up (:mod:`pipelines.stack`), a study's report files (:mod:`pipelines.study`),
and run.py's plan and pre-flight checks (:mod:`pipelines.plan`), runs (:mod:`pipelines.runner`),
the watch on a local run (:mod:`pipelines.watch`) and printed summaries (:mod:`pipelines.console`).
What they read from and write to MLflow is :mod:`tracking`'s."""
