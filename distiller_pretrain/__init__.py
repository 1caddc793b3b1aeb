"""Offline warm-start pipeline for the latent distiller: record -> train (DeepSpeed) -> export."""
