"""Audit trail: walk a served model's lineage, write model cards, reproduce training."""
