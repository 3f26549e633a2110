"""Serve a model repository with a real Triton server on this machine (no tritonclient here)."""
