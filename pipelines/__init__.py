"""ZenML pipelines and the helpers around them (stack set-up, MLflow tracking, comparison).

Import the modules directly (``pipelines.active_tuning``): this package imports nothing
so that steps can use :mod:`pipelines.tracking` without a cycle.
"""
