"""`cfxray pipeline` argument handling: params overrides, cron validation, and what `submit`
sends to a Kubeflow Pipelines endpoint (a stand-in client records the calls)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import yaml

from cfxray.cli import main
from cfxray.errors import UserError
from cfxray.pipeline.commands import is_remote_url, run_params
from cfxray.pipeline.cron import kfp_cron

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("given", "expected"), [
    ("0 3 * * 1", "0 0 3 * * 1"),
    ("*/15 * * * *", "0 */15 * * * *"),
    ("30 0 2 * * MON-FRI", "30 0 2 * * MON-FRI"),
    ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"),
    ("0 1 1,15 JAN,jul *", "0 0 1 1,15 JAN,jul *"),
    ("  0   4 * * *  ", "0 0 4 * * *"),
    ("@daily", "@daily"),
    ("@every 12h", "@every 12h"),
    ("@every 1h30m", "@every 1h30m"),
])
def test_valid_cron_becomes_kfp_six_fields(given, expected):
    assert kfp_cron(given) == expected


@pytest.mark.parametrize(("given", "why"), [
    ("0 3 * *", "expected 5 fields"),
    ("0 0 3 * * * *", "expected 5 fields"),
    ("61 * * * *", "minute field '61'"),
    ("0 24 * * *", "hour field '24'"),
    ("0 0 0 * *", "day of month field '0'"),
    ("0 0 * 13 *", "month field '13'"),
    ("0 0 * * 8", "day of week field '8'"),
    ("0 0 * * FUNDAY", "day of week field 'FUNDAY'"),
    ("*/0 * * * *", "bad step"),
    ("5-1 * * * *", "backwards"),
    ("? * * * *", "only allowed"),
    ("@fortnightly", "unknown descriptor"),
    ("@every 0h", "positive duration"),
    ("@every soon", "positive duration"),
])
def test_invalid_cron_is_refused_with_the_reason(given, why):
    with pytest.raises(UserError, match=why):
        kfp_cron(given)


def test_run_params_merges_override_files_then_sets(tmp_path):
    base = tmp_path / "params.yaml"
    base.write_text(yaml.safe_dump({"preprocess": {"size": 64, "resize": "pad"},
                                    "train_cyclegan": {"epochs": 10, "lambda_cycle": 10.0}}))
    override = tmp_path / "gpu.yaml"
    override.write_text(yaml.safe_dump({"preprocess": {"size": 512}}))
    params = run_params(base, [override], ["train_cyclegan.epochs=2",
                                           "evaluate.gate.min_ssim=0.5", "preprocess.resize=crop"])
    assert params == {"preprocess": {"size": 512, "resize": "crop"},
                      "train_cyclegan": {"epochs": 2, "lambda_cycle": 10.0},
                      "evaluate": {"gate": {"min_ssim": 0.5}}}
    with pytest.raises(UserError, match=r"SECTION\.KEY=VALUE"):
        run_params(base, [], ["epochs"])
    with pytest.raises(UserError, match="no section 'train_cyclgan'"):
        run_params(base, [], ["train_cyclgan.epochs=1"])  # a typo is not silently ignored
    with pytest.raises(UserError, match="not found"):
        run_params(base, [tmp_path / "missing.yaml"], [])
    override.write_text("- not a mapping\n")
    with pytest.raises(UserError, match="expected a mapping"):
        run_params(base, [override], [])


def test_run_params_checks_every_step_section_before_the_run(tmp_path):
    base = tmp_path / "params.yaml"
    base.write_text(yaml.safe_dump({"train_cyclegan": {"epochs": 10}}))
    with pytest.raises(UserError, match=r"train_cyclegan\.epochs: expected an integer, got 'two'"):
        run_params(base, [], ["train_cyclegan.epochs=two"])
    with pytest.raises(UserError, match=r"evaluate\.gate: unknown key 'min'"):
        run_params(base, [], ["evaluate.gate.min=0.5"])
    with pytest.raises(UserError, match=r"model_card: unknown key 'owner'"):
        run_params(base, [], ["model_card.owner=me"])  # the export step reads model_card


def test_gpu_512_profile_only_sets_known_parameters():
    """The documented 512 px profile must not drift from what the steps accept: merged over
    params.yaml it passes the same checks as a run."""
    params = run_params(ROOT / "params.yaml", [ROOT / "pipelines" / "params-gpu-512.yaml"], [])
    assert params["preprocess"]["size"] == 512
    assert (params["train_cyclegan"]["ngf"], params["train_cyclegan"]["n_blocks"]) == (64, 9)


def test_remote_url_detection():
    assert is_remote_url("https://github.com/org/cfxray.git")
    assert is_remote_url("git@github.com:org/cfxray.git")
    assert is_remote_url("file:///srv/cfxray")
    assert not is_remote_url(".")
    assert not is_remote_url("/work/cfxray")


class RecordingClient:
    """Stands in for kfp.Client: records the calls submit makes."""

    instances: ClassVar[list[RecordingClient]] = []

    def __init__(self, host, namespace=None):
        self.host, self.namespace, self.calls = host, namespace, []
        RecordingClient.instances.append(self)

    def create_run_from_pipeline_func(self, func, **kwargs):
        self.calls.append(("run", func, kwargs))
        return SimpleNamespace(run_id="run-1")

    def create_experiment(self, name, namespace=None):
        self.calls.append(("experiment", name, namespace))
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, **kwargs):
        package = Path(kwargs["pipeline_package_path"])
        kwargs["package_name"] = next(yaml.safe_load_all(package.read_text()))["pipelineInfo"]["name"]
        self.calls.append(("recurring", kwargs))
        return SimpleNamespace(recurring_run_id="rec-1")


@pytest.fixture
def client(monkeypatch):
    RecordingClient.instances = []
    monkeypatch.setattr("kfp.Client", RecordingClient)
    monkeypatch.chdir(ROOT)
    return RecordingClient


REPO = "https://git.example.org/radiology/cfxray.git"


def test_submit_creates_a_run_with_the_params(client, capsys):
    code = main(["pipeline", "submit", "--host", "https://kfp.example.org", "--data-repo", REPO,
                 "--data-rev", "v1.2", "--set", "train_cyclegan.epochs=3",
                 "--arg", "gpus_per_training_task=4", "--experiment", "nightly"])
    assert code == 0
    (kind, func, kwargs), = client.instances[0].calls
    assert kind == "run" and func.name == "cfxray"
    args = kwargs["arguments"]
    assert (args["data_repo_url"], args["data_rev"]) == (REPO, "v1.2")
    assert args["gpus_per_training_task"] == 4
    params = yaml.safe_load(args["params"])  # params.yaml text: KFP parameters cannot hold nulls
    assert params["train_cyclegan"]["epochs"] == 3
    assert params["preprocess"] == yaml.safe_load((ROOT / "params.yaml").read_text())["preprocess"]
    assert kwargs["experiment_name"] == "nightly"
    assert "run-1" in capsys.readouterr().out


def test_submit_with_schedule_creates_a_recurring_run(client):
    assert main(["pipeline", "submit", "--host", "http://kfp:8888", "--data-repo", REPO,
                 "--schedule", "0 2 * * SUN"]) == 0
    calls = client.instances[0].calls
    assert calls[0][0] == "experiment"
    kind, kwargs = calls[1]
    assert kind == "recurring"
    assert kwargs["cron_expression"] == "0 0 2 * * SUN"
    assert kwargs["experiment_id"] == "exp-1" and kwargs["package_name"] == "cfxray"
    assert kwargs["params"]["data_repo_url"] == REPO and kwargs["max_concurrency"] == 1


@pytest.mark.parametrize(("extra", "message"), [
    (["--schedule", "0 25 * * *"], "hour field"),
    (["--schedule", "nightly"], "expected 5 fields"),
    (["--data-repo", "."], "cannot read a local DVC repository"),
    (["--arg", "gpus=2"], "no such parameter"),
])
def test_submit_refuses_bad_input_before_contacting_the_cluster(client, capsys, extra, message):
    argv = ["pipeline", "submit", "--host", "https://kfp.example.org", "--data-repo", REPO, *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert client.instances == []


def test_submit_refuses_a_host_that_is_not_a_url(client, capsys):
    assert main(["pipeline", "submit", "--host", "kfp.example.org", "--data-repo", REPO]) == 2
    assert "http(s)://" in capsys.readouterr().err
    assert client.instances == []


def test_run_requires_local(capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "run"])
    assert "--local" in capsys.readouterr().err
