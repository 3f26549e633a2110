"""Data components: the raw dataset from a DVC repository, and its training tensors."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from cfxray.pipeline.components.image import CFXRAY_IMAGE


@dsl.component(base_image=CFXRAY_IMAGE, install_kfp_package=False)
def locate_data(repo_url: str, rev: str, path: str) -> NamedTuple("DataVersion", commit=str, md5=str):
    """Resolve the dataset's version: the commit `rev` points to now (empty for a local
    working tree) and the dataset's DVC hash there. Never cached, so a schedule on a branch
    sees new data; the download below is cached on exactly these values.
    """
    from collections import namedtuple

    from cfxray.pipeline import steps

    commit, md5 = steps.locate_dvc_dataset(repo_url, rev, path)
    print(f"{path} at {commit or 'the working tree'}: DVC hash {md5}")
    return namedtuple("DataVersion", ["commit", "md5"])(commit, md5)


@dsl.component(base_image=CFXRAY_IMAGE, install_kfp_package=False)
def fetch_data(repo_url: str, commit: str, path: str, md5: str, dataset: Output[Dataset]):
    """Download the DVC-tracked dataset at that commit, verified against its DVC hash.

    repo_url is a local path (local runs) or a git URL (clusters; the DVC remote's
    credentials come from the environment). The DVC hash and commit go into the artifact
    metadata and the dataset's lineage record.
    """
    from cfxray.pipeline import steps

    source = steps.fetch_dvc_dataset(repo_url, commit, path, md5, dataset.path)
    dataset.metadata.update(steps.artifact_metadata(dataset.path))
    dataset.metadata.update({"dvc_md5": source["md5"], "dvc_rev": source["rev"]})


@dsl.component(base_image=CFXRAY_IMAGE, install_kfp_package=False)
def preprocess(raw: Input[Dataset], params: str, prepared: Output[Dataset]):
    """`cfxray data preprocess`: resize to the training size, pack tensors per split."""
    from cfxray.pipeline import steps

    steps.run_cli(["data", "preprocess", raw.path, "--out", prepared.path], params)
    prepared.metadata.update(steps.artifact_metadata(prepared.path))


@dsl.component(base_image=CFXRAY_IMAGE, install_kfp_package=False)
def split_params(params: str) -> NamedTuple(
        "StepParams", preprocess=str, train_classifier=str, train_oracle=str,
        train_cyclegan=str, evaluate=str, export=str):
    """Give each step only the params.yaml sections it reads, so each step's cache key
    changes with its own parameters only (empty params: the image's params.yaml)."""
    from collections import namedtuple

    from cfxray.pipeline import steps

    per_step = steps.step_params(params)
    return namedtuple("StepParams", list(per_step))(**per_step)
