"""`make bench`: how fast each part of cfxray is, against this machine's measured limit.

Run `python -m benchmarks.run [--quick] [--out DIR]`; see benchmarks/run.py.
"""
