"""Identity stage: identity LoRA training from a handful of photos, and face similarity."""
