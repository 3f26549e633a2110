"""Evaluation of counterfactual explanations: metrics, reports and the quality gate."""
