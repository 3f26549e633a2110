"""Kubeflow Pipelines components: one lightweight Python component per cfxray step.

Each body imports `cfxray.pipeline.steps`, runs the step's `cfxray` command and describes
the result in its typed output artifacts; all of them run in the one project image.
"""

from cfxray.pipeline.components.data import fetch_data, locate_data, preprocess, split_params
from cfxray.pipeline.components.evaluation import evaluate
from cfxray.pipeline.components.publish import export_model
from cfxray.pipeline.components.training import train_classifier, train_cyclegan

__all__ = ["evaluate", "export_model", "fetch_data", "locate_data", "preprocess", "split_params",
           "train_classifier", "train_cyclegan"]
