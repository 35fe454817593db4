"""activeit: active instruction tuning by prompt uncertainty (Kung et al., EMNLP 2023).

The library knows nothing of ZenML or MLflow; ``steps/`` and ``pipelines/`` adapt it.
"""

__version__ = "0.1.0"
