"""Inference: load a model once, segment many volumes slice by slice."""
