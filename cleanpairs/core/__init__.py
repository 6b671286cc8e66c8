"""Shared math of the methods: projection heads, losses, mixture splits and the training loop."""
