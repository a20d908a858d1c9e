"""Training the distilled student: data, the torch model with LoRA, the loop, the scorer."""
