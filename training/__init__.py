"""Data, the feature pipeline, models, the shared trainer, the model bundle and the registry."""
