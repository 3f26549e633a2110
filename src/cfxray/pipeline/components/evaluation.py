"""Evaluation component: metrics, ROC and confusion matrix, HTML report, and the gate."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from cfxray.pipeline.components.image import CFXRAY_IMAGE


@dsl.component(base_image=CFXRAY_IMAGE, install_kfp_package=False)
def evaluate(data: Input[Dataset], classifier: Input[Model], oracle: Input[Model],
             generators: Input[Model], params: str, evaluation: Output[Artifact],
             metrics: Output[Metrics], classification: Output[ClassificationMetrics],
             report: Output[HTML]) -> bool:
    """`cfxray evaluate`; returns whether the model passed the quality gate.

    A failed gate is a result, not an error: the step succeeds and returns False, and the
    pipeline skips the export. The full evaluation folder is kept as `evaluation`.
    """
    import os
    import shutil

    from cfxray.conventions import CLASSES, CLASSIFIER_FILE
    from cfxray.pipeline import steps

    code = steps.run_cli(["evaluate", "--data", data.path,
                          "--classifier", os.path.join(classifier.path, CLASSIFIER_FILE),
                          "--oracle", os.path.join(oracle.path, CLASSIFIER_FILE),
                          "--generators", generators.path, "--out", evaluation.path],
                         params, ok_exit_codes=(0, steps.GATE_FAILED_EXIT))
    values = steps.read_metrics(evaluation.path)
    passed = steps.gate_passed(values, code)
    for name, value in steps.scalar_metrics(values).items():
        metrics.log_metric(name, value)
    fpr, tpr, thresholds = steps.read_roc(evaluation.path)
    classification.log_roc_curve(fpr, tpr, thresholds)
    classification.log_confusion_matrix(list(CLASSES), steps.read_confusion_matrix(evaluation.path))
    shutil.copyfile(steps.report_file(evaluation.path), report.path)
    record = steps.artifact_metadata(evaluation.path)
    record.pop("metrics", None)  # they are in the Metrics artifact
    evaluation.metadata.update({**record, "gate_passed": passed})
    return passed
