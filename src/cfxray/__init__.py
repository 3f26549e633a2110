"""cfxray: counterfactual explanations of chest X-ray pneumonia classifiers."""

__version__ = "0.1.0"
