"""Kubeflow pipeline definitions; `cfxray pipeline compile|run|submit` imports them lazily."""
