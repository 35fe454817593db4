"""Studies over seeds: statistics (no torch, no MLflow), the report and the plots."""
