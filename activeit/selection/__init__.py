"""Which tasks to train on next: the strategies and the task map."""
