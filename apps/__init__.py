"""Flower ServerApp and ClientApp of flsplit."""
