"""ZenML pipelines and what runs around them: the rounds (:mod:`pipelines.active_tuning`),
stack set-up (:mod:`pipelines.stack`) and studies over strategies and seeds (:mod:`pipelines.study`)."""
