"""Serving: a local Triton server for a model repository written by `cfxray export` (server
side, no tritonclient), and its clients: a Python API, `cfxray explain` and the web app.

The clients import tritonclient and gradio inside the functions that use them, so importing
this package, or building the `cfxray` CLI, imports neither.
"""
