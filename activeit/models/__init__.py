"""Models by name: loading (with LoRA adapters), the built-in and tiny models, checks before compute, devices and batching."""
