"""Fine-tuning with accelerate (full or LoRA): data, the loop, saving."""
