"""MLflow: the tag and metric schema, the writer, the model registry, the reader and a study's runs (steps, pipelines and run.py use it; the library never does)."""
