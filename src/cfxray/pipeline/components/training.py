"""Training components: the classifier (and, with another params section, the oracle) and
the counterfactual CycleGAN. nproc > 1 runs the trainer under torchrun, one process per GPU.

A retried attempt finds the killed attempt's checkpoint in its output and resumes from it.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from cfxray.pipeline.components.image import CFXRAY_IMAGE


@dsl.component(base_image=CFXRAY_IMAGE, install_kfp_package=False)
def train_classifier(data: Input[Dataset], params: str, section: str, nproc: int,
                     classifier: Output[Model]):
    """`cfxray train-classifier --section SECTION` (train_classifier, or train_oracle)."""
    from cfxray.pipeline import steps

    steps.run_cli(["train-classifier", "--data", data.path, "--out", classifier.path,
                   "--section", section, *steps.resume_args(classifier.path)],
                  params, nproc=nproc)
    classifier.metadata.update(steps.artifact_metadata(classifier.path))


@dsl.component(base_image=CFXRAY_IMAGE, install_kfp_package=False)
def train_cyclegan(data: Input[Dataset], classifier: Input[Model], oracle: Input[Model],
                   params: str, nproc: int, generators: Output[Model]):
    """`cfxray train-cyclegan` against the frozen classifier (the oracle only monitors)."""
    import os

    from cfxray.conventions import CLASSIFIER_FILE
    from cfxray.pipeline import steps

    steps.run_cli(["train-cyclegan", "--data", data.path,
                   "--classifier", os.path.join(classifier.path, CLASSIFIER_FILE),
                   "--oracle", os.path.join(oracle.path, CLASSIFIER_FILE),
                   "--out", generators.path, *steps.resume_args(generators.path)],
                  params, nproc=nproc)
    generators.metadata.update(steps.artifact_metadata(generators.path))
