"""Probabilistic models and acquisition functions for model-based searchers."""
