"""Clients of the cfxray Triton models: a Python API, `cfxray explain` and the web app.

This package imports tritonclient and gradio, which the library (`src/cfxray`) never does;
`cfxray explain` and `cfxray app` import it when they run.
"""
