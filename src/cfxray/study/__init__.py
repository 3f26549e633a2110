"""Blinded reader studies of a published model version: define, read in the browser, report.

`definition` draws the sample and renders the items from the version's own ONNX files,
`store` keeps the answers in a database (SQLAlchemy), `reading` hands each reader their items
and checks every answer, `server` and `page.html` are the reading page, `statistics` and
`report` turn the answers into numbers, plots and a lineage record. docs/STUDY.md.
"""
