"""An experiment as a config file describes it: the library's settings composed with the
orchestration sections (tracking, ZenML, study, schedule) that tracking/, steps/ and
pipelines/ give meaning (no ZenML or MLflow import here)."""
