"""Training and evaluation of the prompted CLIP encoder (``python -m training ...``; docs/training.md)."""
