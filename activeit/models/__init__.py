"""Models by name: what a name points to (built-in, tiny, folder, hub id), loading (with LoRA
adapters), checks before compute, devices and batching."""
