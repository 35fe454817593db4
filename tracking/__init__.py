"""MLflow: the tag and metric schema, the writer, the model registry and the reader (steps, pipelines and run.py use it; the library never does)."""
