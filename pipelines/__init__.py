"""ZenML pipelines and what runs around them: the rounds (:mod:`pipelines.active_tuning`),
stack set-up (:mod:`pipelines.stack`), a study's report files (:mod:`pipelines.study`),
and run.py's plan and pre-flight checks (:mod:`pipelines.plan`), runs (:mod:`pipelines.runner`)
and printed summaries (:mod:`pipelines.console`)."""
