"""Export component: publish a new version into the Triton model repository."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from cfxray.pipeline.components.image import CFXRAY_IMAGE


@dsl.component(base_image=CFXRAY_IMAGE, install_kfp_package=False)
def export_model(classifier: Input[Model], generators: Input[Model], evaluation: Input[Artifact],
                 model_repository: str, params: str, published: Output[Model]):
    """`cfxray export` into model_repository (a local folder, or a mounted volume on a
    cluster): adds version N+1 of every model and leaves earlier versions untouched."""
    import os

    from cfxray.conventions import CLASSIFIER_FILE
    from cfxray.pipeline import steps

    before = steps.repository_versions(model_repository)
    steps.run_cli(["export", "--classifier", os.path.join(classifier.path, CLASSIFIER_FILE),
                   "--generators", generators.path, "--out", model_repository,
                   "--evaluation", evaluation.path], params)
    version = steps.published_version(before, steps.repository_versions(model_repository))
    published.metadata.update(steps.write_publication(published.path, model_repository, version))
