"""The cfxray pipeline: DVC data -> preprocess -> classifier and oracle -> counterfactual
CycleGAN -> evaluation with a quality gate -> publish to the model repository.

Compile with `python -m cfxray.pipeline.definition [OUT]` or `cfxray pipeline compile`; the
compiled IR is committed as `pipelines/cfxray_pipeline.yaml` (relative to the checkout root,
where both commands write it by default). This module and `cfxray.pipeline.components` import
kfp at import time; `cfxray.pipeline.commands` imports them only when a pipeline command runs.
"""

import sys
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

from cfxray.pipeline.components import (
    evaluate,
    export_model,
    fetch_data,
    locate_data,
    preprocess,
    split_params,
    train_classifier,
    train_cyclegan,
)

PIPELINE_NAME = "cfxray"
COMPILED_PIPELINE = Path("pipelines") / "cfxray_pipeline.yaml"
# Where the export step sees the model repository volume on a cluster; the Triton Deployment
# in serving/k8s mounts the same claim.
MODEL_REPOSITORY_MOUNT = "/mnt/model-repository"
MODEL_REPOSITORY_PVC = "cfxray-model-repository"
# Optional Secret with the DVC remote's S3 credentials, read by the data steps on a cluster.
DVC_CREDENTIALS_SECRET = "cfxray-dvc-credentials"
DVC_CREDENTIAL_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                       "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
RETRIES = 2
# The taint GPU node pools usually carry (NVIDIA GPU operator, GKE, EKS).
GPU_TAINT = "nvidia.com/gpu"


class PipelineOutputs(NamedTuple):
    """What a run hands back; the export's result is the new version in the repository."""

    raw_data: Dataset
    prepared_data: Dataset
    classifier: Model
    oracle: Model
    generators: Model
    evaluation: Artifact
    metrics: Metrics
    classification_metrics: ClassificationMetrics
    report: HTML
    gate_passed: bool


def _as_training_task(task: dsl.PipelineTask, accelerator_type: str, gpus: int, cpu: str,
                      memory: str) -> dsl.PipelineTask:
    """GPU, CPU and memory for a trainer, and retries (a retry resumes from the checkpoint).

    GPU nodes are usually tainted, hence the toleration; NCCL shares
    tensors through /dev/shm, which a pod otherwise caps at 64 MiB.
    """
    task = (task.set_accelerator_type(accelerator_type).set_accelerator_limit(gpus)
            .set_cpu_request(cpu).set_cpu_limit(cpu)
            .set_memory_request(memory).set_memory_limit(memory)
            .set_retry(RETRIES, backoff_duration="60s", backoff_factor=2.0)
            .set_caching_options(True))
    kubernetes.add_toleration(task, key=GPU_TAINT, operator="Exists", effect="NoSchedule")
    return kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm",
                                      medium="Memory")


def _with_dvc_credentials(task: dsl.PipelineTask, secret: str) -> dsl.PipelineTask:
    return kubernetes.use_secret_as_env(task, secret_name=secret,
                                        secret_key_to_env=DVC_CREDENTIAL_KEYS, optional=True)


@dsl.pipeline(name=PIPELINE_NAME,
              description="Counterfactual explanations of a chest X-ray classifier: train, "
                          "evaluate against a quality gate, publish to Triton.")
def cfxray_pipeline(
    data_repo_url: str,
    data_rev: str = "",
    data_path: str = "data/phantom",
    dvc_credentials_secret: str = DVC_CREDENTIALS_SECRET,
    params: str = "",
    model_repository: str = MODEL_REPOSITORY_MOUNT,
    model_repository_pvc: str = MODEL_REPOSITORY_PVC,
    accelerator_type: str = "nvidia.com/gpu",
    gpus_per_training_task: int = 1,
    training_cpu: str = "8",
    training_memory: str = "32Gi",
) -> PipelineOutputs:
    """Train, evaluate and publish one model version.

    Args:
        data_repo_url: DVC repository holding the raw dataset: a git URL on a cluster, a
            local path for local runs.
        data_rev: git revision of that repository (pin a commit so caching is exact; empty:
            the working tree locally, the default branch remotely).
        data_path: the DVC-tracked dataset directory inside the repository.
        dvc_credentials_secret: Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the
            DVC remote (optional: absent means the remote needs none).
        params: a whole params.yaml as YAML text (empty: the image's own); each step gets
            the sections it reads, so its cache follows its own parameters.
        model_repository: the Triton model repository the export step publishes into.
        model_repository_pvc: the PersistentVolumeClaim mounted there on a cluster.
        accelerator_type: Kubernetes resource name of the training accelerator.
        gpus_per_training_task: GPUs per trainer; above 1 the trainer runs under torchrun.
        training_cpu: CPU request and limit of each trainer.
        training_memory: memory request and limit of each trainer.
    """
    version = locate_data(repo_url=data_repo_url, rev=data_rev, path=data_path)
    version.set_display_name("locate data version (DVC)").set_caching_options(False)
    _with_dvc_credentials(version, dvc_credentials_secret)
    raw = fetch_data(repo_url=data_repo_url, commit=version.outputs["commit"], path=data_path,
                     md5=version.outputs["md5"])
    raw.set_display_name("fetch data (DVC)").set_caching_options(True)
    _with_dvc_credentials(raw, dvc_credentials_secret)

    step = split_params(params=params).set_display_name("params per step").outputs

    prepared = preprocess(raw=raw.outputs["dataset"], params=step["preprocess"])
    prepared.set_display_name("preprocess").set_caching_options(True)
    data = prepared.outputs["prepared"]

    resources = {"accelerator_type": accelerator_type, "gpus": gpus_per_training_task,
                 "cpu": training_cpu, "memory": training_memory}
    classifier = _as_training_task(
        train_classifier(data=data, params=step["train_classifier"], section="train_classifier",
                         nproc=gpus_per_training_task), **resources)
    classifier.set_display_name("train classifier")
    oracle = _as_training_task(
        train_classifier(data=data, params=step["train_oracle"], section="train_oracle",
                         nproc=gpus_per_training_task), **resources)
    oracle.set_display_name("train oracle")
    cyclegan = _as_training_task(
        train_cyclegan(data=data, classifier=classifier.outputs["classifier"],
                       oracle=oracle.outputs["classifier"], params=step["train_cyclegan"],
                       nproc=gpus_per_training_task), **resources)
    cyclegan.set_display_name("train counterfactual CycleGAN")

    evaluation = evaluate(data=data, classifier=classifier.outputs["classifier"],
                          oracle=oracle.outputs["classifier"],
                          generators=cyclegan.outputs["generators"], params=step["evaluate"])
    # One GPU: evaluation is inference over the test split (both generators, two
    # classifiers, the realism features), hours on CPU at 512 px.
    evaluation.set_display_name("evaluate + gate").set_caching_options(True)
    evaluation.set_accelerator_type(accelerator_type).set_accelerator_limit(1)
    evaluation.set_cpu_request("4").set_memory_request("16Gi")
    kubernetes.add_toleration(evaluation, key=GPU_TAINT, operator="Exists", effect="NoSchedule")

    # The evaluate step returns the gate verdict as its single output.
    with dsl.If(evaluation.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP condition)
        export = export_model(classifier=classifier.outputs["classifier"],
                              generators=cyclegan.outputs["generators"],
                              evaluation=evaluation.outputs["evaluation"],
                              model_repository=model_repository, params=step["export"])
        # Publishing has a side effect outside the pipeline root: never served from cache.
        export.set_display_name("export + publish").set_caching_options(False)
        kubernetes.mount_pvc(export, pvc_name=model_repository_pvc,
                             mount_path=MODEL_REPOSITORY_MOUNT)

    return PipelineOutputs(
        raw_data=raw.outputs["dataset"], prepared_data=data,
        classifier=classifier.outputs["classifier"], oracle=oracle.outputs["classifier"],
        generators=cyclegan.outputs["generators"], evaluation=evaluation.outputs["evaluation"],
        metrics=evaluation.outputs["metrics"],
        classification_metrics=evaluation.outputs["classification"],
        report=evaluation.outputs["report"], gate_passed=evaluation.outputs["Output"])


def compile_pipeline(out: str | Path = COMPILED_PIPELINE) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(cfxray_pipeline, str(out))
    return out


if __name__ == "__main__":
    print(compile_pipeline(sys.argv[1] if len(sys.argv) > 1 else COMPILED_PIPELINE))
