"""activeit: active instruction tuning by prompt uncertainty (Kung et al., EMNLP 2023).

The library knows nothing of ZenML or MLflow; ``steps/``, ``pipelines/`` and ``tracking/``
adapt it.
"""

from activeit import legacy_paths

__version__ = "0.1.0"
legacy_paths.install()
