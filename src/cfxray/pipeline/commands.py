"""`cfxray pipeline compile | run --local | submit`: the Kubeflow pipeline from the command line.

The pipeline itself is `cfxray.pipeline.definition` and `cfxray.pipeline.components` (they
import kfp); they are imported only inside these commands, so building the CLI never imports kfp.
"""

from __future__ import annotations

import argparse
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cfxray.errors import UserError
from cfxray.settings import DEFAULT_PARAMS, from_section, from_sections, load_params, read_section

COMPILED_PIPELINE = Path("pipelines") / "cfxray_pipeline.yaml"


@dataclass(frozen=True)
class PipelineSettings:
    """The `pipeline` section of params.yaml: where the pipeline reads data and publishes."""

    data_repo: str = "."  # DVC repository for `run --local` (a path)
    data_repo_url: str = ""  # ... and for `submit` (a git URL the cluster can clone)
    data_rev: str = ""  # git revision; empty: the working tree locally, default branch remotely
    data_path: str = "data/phantom"  # the DVC-tracked raw dataset in that repository
    model_repository: str = "model_repository"  # `run --local` publishes here
    local_root: str = "outputs/pipeline"  # `run --local` keeps every step's outputs here
    experiment: str = "cfxray"


# The params.yaml sections these commands read, and their dataclasses; the steps read theirs.
SECTIONS: dict[str, type] = {"pipeline": PipelineSettings}


def step_settings() -> dict[str, type]:
    """Every section a pipeline step reads, with its dataclass (the step commands' own)."""
    from cfxray.data.commands import SECTIONS as DATA
    from cfxray.evaluation.commands import SECTIONS as EVALUATION
    from cfxray.export.commands import SECTIONS as EXPORT
    from cfxray.pipeline.steps import step_sections
    from cfxray.train.commands import SECTIONS as TRAIN

    known = {**DATA, **TRAIN, **EVALUATION, **EXPORT}
    return {name: known[name] for sections in step_sections().values() for name in sections}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="compile, run locally or submit the Kubeflow pipeline",
        description="The Kubeflow pipeline: DVC data -> preprocess -> classifier, oracle -> "
                    "CycleGAN -> evaluation gate -> publish. Defaults from the `pipeline` "
                    "section of params.yaml.")
    commands = parser.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")

    compile_ = commands.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    compile_.add_argument("--out", type=Path, default=None,
                          help=f"output file (default: the committed {COMPILED_PIPELINE})")
    compile_.set_defaults(func=compile_command)

    run = commands.add_parser(
        "run", help="run the whole pipeline on this machine (kfp.local SubprocessRunner)")
    run.add_argument("--local", action="store_true", required=True,
                     help="run here with kfp.local (use `submit` for a cluster)")
    _add_run_arguments(run)
    run.add_argument("--model-repo", type=Path, default=None,
                     help="model repository the export publishes into")
    run.add_argument("--root", type=Path, default=None,
                     help="local pipeline root: where every step's outputs land")
    run.add_argument("--cache", action="store_true",
                     help="reuse a step's earlier outputs when its inputs are the same (keyed "
                          "on the step's inputs and code, not on the cfxray library's code)")
    run.set_defaults(func=run_local_command)

    submit = commands.add_parser(
        "submit", help="create a run, or a recurring run, on a Kubeflow Pipelines endpoint")
    submit.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.org")
    submit.add_argument("--experiment", default=None, help="experiment name")
    submit.add_argument("--schedule", metavar="CRON", default=None,
                        help="recurring run on this cron schedule (5 fields, or KFP's 6 with "
                             "seconds first, or @daily / @every 12h)")
    submit.add_argument("--run-name", default=None, help="name of the run or recurring run")
    submit.add_argument("--namespace", default=None, help="Kubeflow profile namespace")
    submit.add_argument("--arg", dest="pipeline_args", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="set another pipeline parameter, e.g. gpus_per_training_task=4")
    _add_run_arguments(submit)
    submit.set_defaults(func=submit_command)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                        help="params.yaml every step reads (default: %(default)s)")
    parser.add_argument("--override", type=Path, action="append", default=[], metavar="FILE",
                        help="YAML merged over the params, e.g. pipelines/params-gpu-512.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="set one parameter, e.g. train_cyclegan.epochs=2 (YAML value)")
    parser.add_argument("--data-repo", default=None,
                        help="DVC repository with the dataset: a path locally, a git URL for submit")
    parser.add_argument("--data-rev", default=None,
                        help="its git revision (locally, empty means the working tree)")
    parser.add_argument("--data-path", default=None, help="the DVC-tracked dataset in it")


# --- parameters ----------------------------------------------------------------------------------


def run_params(params_file: Path, overrides: list[Path], sets: list[str]) -> dict[str, Any]:
    """The params.yaml every step of this run reads: the file, override files, then --set;
    every section a step reads is checked here, before the run starts."""
    params = load_params(params_file)
    settings = step_settings()
    known = {*params, *settings, *SECTIONS}
    for path in overrides:
        if not path.exists():
            raise UserError(f"override file {path} not found")
        extra = load_params(path)
        if set(extra) - known:
            raise UserError(f"override file {path}: expected a mapping of params.yaml sections "
                            f"({', '.join(sorted(known))})")
        merge(params, extra)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        if key.split(".")[0] not in known:
            raise UserError(f"--set {item!r}: no section {key.split('.')[0]!r} in {params_file} "
                            "and no step reads one")
        nested: Any = yaml.safe_load(value) if value else ""
        for part in reversed(key.split(".")):
            nested = {part: nested}
        merge(params, nested)
    label = f"{params_file} (with --override/--set)" if overrides or sets else str(params_file)
    from_sections(params, {**settings, **SECTIONS}, label)
    return params


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into `base` (mappings merge, anything else replaces)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def pipeline_settings(params: dict[str, Any]) -> PipelineSettings:
    """The `pipeline` section of params `run_params` has checked."""
    return from_section(PipelineSettings, read_section(params, "pipeline"), "params pipeline")


# --- compile -------------------------------------------------------------------------------------


def load_pipeline_module() -> Any:
    try:
        from cfxray.pipeline import definition
    except ImportError as exc:
        raise UserError(f"cannot load the pipeline ({exc}); install the mlops extras "
                        "(kfp, kfp-kubernetes)") from exc
    return definition


def compile_command(args: argparse.Namespace) -> int:
    module = load_pipeline_module()
    out = module.compile_pipeline(args.out or module.COMPILED_PIPELINE)
    print(f"compiled pipeline {module.PIPELINE_NAME!r} to {out}")
    return 0


# --- run --local ---------------------------------------------------------------------------------


def run_local_command(args: argparse.Namespace) -> int:
    params = run_params(args.params, args.override, args.sets)
    settings = pipeline_settings(params)
    data_repo = Path(args.data_repo or settings.data_repo).resolve()
    if not data_repo.is_dir():
        raise UserError(f"DVC repository {data_repo} not found (a local path for run --local)")
    data_rev = settings.data_rev if args.data_rev is None else args.data_rev
    root = (args.root or Path(settings.local_root)).resolve()
    model_repo = (args.model_repo or Path(settings.model_repository)).resolve()
    arguments = {
        "data_repo_url": str(data_repo),
        "data_rev": data_rev,
        "data_path": args.data_path or settings.data_path,
        "params": yaml.safe_dump(params, sort_keys=False),
        "model_repository": str(model_repo),
    }
    from cfxray.pipeline.steps import added_versions, repository_versions

    before = repository_versions(model_repo)
    run_dir, outputs = run_local(arguments, root, cache=args.cache)
    added = added_versions(before, repository_versions(model_repo))
    if len(added) > 1:
        raise UserError(f"the run added several versions {sorted(added)} to {model_repo}")
    return report_local_run(run_dir, outputs, model_repo, min(added, default=None))


def run_local(arguments: dict[str, Any], root: Path, cache: bool = False
              ) -> tuple[Path | None, dict[str, Any]]:
    """Run the pipeline with kfp.local in subprocesses of this Python (no venv, no image);
    the run's folder under the pipeline root (None when every step came from the cache) and
    the pipeline's outputs (artifacts and the gate verdict)."""
    module = load_pipeline_module()
    from kfp import local

    root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True, enable_caching=cache)
    with warnings.catch_warnings():
        # The components name the project image; locally they run in this environment.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        try:
            task = module.cfxray_pipeline(**arguments)
        except RuntimeError as exc:
            failure = exc
        else:
            failure = None
    new = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in before)
    run_dir = new[-1] if new else None
    if failure is not None:
        where = f" (outputs so far in {run_dir})" if run_dir else ""
        raise UserError(f"{failure}: see that task's log above{where}")
    return run_dir, {name: task.outputs[name] for name in module.PipelineOutputs._fields}


def report_local_run(run_dir: Path | None, outputs: dict[str, Any], model_repo: Path,
                     published: int | None) -> int:
    """Print where every artifact landed; exit 1 when the gate kept the model unpublished."""
    print(f"\npipeline run: {run_dir or '(every step from the cache)'}")
    for name, value in outputs.items():
        shown = getattr(value, "path", None) or getattr(value, "uri", None) or value
        print(f"  {name:<24} {shown}")
    if published is None:
        print("\nquality gate failed: export skipped, nothing published"
              if outputs.get("gate_passed") is False else "\nnothing published")
        return 1
    print(f"\npublished version {published} to {model_repo}")
    for name in sorted(p.name for p in model_repo.iterdir() if (p / str(published)).is_dir()):
        print(f"  {name:<24} {model_repo / name / str(published)}")
    return 0


# --- submit --------------------------------------------------------------------------------------


def submit_command(args: argparse.Namespace) -> int:
    from cfxray.pipeline.cron import kfp_cron

    cron = kfp_cron(args.schedule) if args.schedule is not None else None
    if not re.match(r"^https?://[^/\s]+", args.host):
        raise UserError(f"--host {args.host!r}: expected an http(s):// URL")
    params = run_params(args.params, args.override, args.sets)
    settings = pipeline_settings(params)
    data_repo = args.data_repo or settings.data_repo_url
    if not is_remote_url(data_repo):
        raise UserError("a cluster cannot read a local DVC repository: pass --data-repo with "
                        "a git URL (or set pipeline.data_repo_url in params.yaml)")
    data_rev = settings.data_rev if args.data_rev is None else args.data_rev
    module = load_pipeline_module()
    arguments = {"data_repo_url": data_repo, "data_rev": data_rev,
                 "data_path": args.data_path or settings.data_path,
                 "params": yaml.safe_dump(params, sort_keys=False),
                 **parse_pipeline_args(args.pipeline_args, pipeline_inputs(module))}
    experiment = args.experiment or settings.experiment
    import kfp

    client = kfp.Client(host=args.host, namespace=args.namespace)
    run_name = args.run_name or f"{module.PIPELINE_NAME}-{'scheduled' if cron else 'run'}"
    if cron is None:
        run = client.create_run_from_pipeline_func(
            module.cfxray_pipeline, arguments=arguments, run_name=run_name,
            experiment_name=experiment, namespace=args.namespace, enable_caching=True)
        print(f"submitted run {run.run_id} in experiment {experiment!r} on {args.host}")
        return 0
    import tempfile

    exp = client.create_experiment(name=experiment, namespace=args.namespace)
    with tempfile.TemporaryDirectory() as tmp:
        package = module.compile_pipeline(Path(tmp) / "cfxray_pipeline.yaml")
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=run_name, cron_expression=cron,
            pipeline_package_path=str(package), params=arguments, max_concurrency=1,
            no_catchup=True, enable_caching=True)
    print(f"scheduled recurring run {job.recurring_run_id} ({cron}) in experiment "
          f"{experiment!r} on {args.host}")
    return 0


def is_remote_url(url: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", url) or re.match(r"^[\w.-]+@[\w.-]+:", url))


def pipeline_inputs(module: Any) -> set[str]:
    return set(module.cfxray_pipeline.component_spec.inputs or {})


def parse_pipeline_args(items: list[str], known: set[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--arg {item!r}: expected NAME=VALUE")
        if name not in known:
            raise UserError(f"--arg {name!r}: the pipeline has no such parameter; it takes "
                            f"{', '.join(sorted(known))}")
        parsed[name] = yaml.safe_load(value) if value else ""
    return parsed

