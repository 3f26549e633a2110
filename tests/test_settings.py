"""The one settings mechanism (`cfxray.settings`): the committed params.yaml against the
dataclass defaults, the pipeline's step sections against dvc.yaml, the loader's checks, and
the one-line errors every command gives for a bad params file before it does any work."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
from pathlib import Path
from typing import Literal

import pytest
import yaml

from cfxray import cli
from cfxray.errors import UserError
from cfxray.evaluation.gate import GateSettings
from cfxray.evaluation.settings import EvaluateSettings
from cfxray.pipeline import steps
from cfxray.settings import (
    add_settings,
    from_section,
    load_params,
    load_settings,
    parse_params,
    resolve,
)
from cfxray.train.cyclegan_config import CycleGANTrainConfig

ROOT = Path(__file__).resolve().parents[1]
# Sections that are a second configuration of another section's dataclass (`--section`).
VARIANTS = {"train_oracle": "train_classifier"}


def section_classes() -> dict[str, type]:
    """Every params.yaml section a `cfxray` command reads, with its dataclass."""
    found: dict[str, type] = {}
    for module in cli.COMMAND_MODULES:
        for name, cls in getattr(importlib.import_module(module), "SECTIONS", {}).items():
            assert found.setdefault(name, cls) is cls, f"{name}: two dataclasses"
    return found


def test_committed_params_equal_the_dataclass_defaults():
    params = load_params(ROOT / "params.yaml")
    classes = section_classes()
    assert set(params) == set(classes), "a section without a dataclass, or the reverse"
    for name, values in params.items():
        cls = classes[name]
        loaded = from_section(cls, values, f"params.yaml {name}")
        if name in VARIANTS:
            assert classes[VARIANTS[name]] is cls
            continue
        drifted = {f.name: (values[f.name], getattr(cls(), f.name))
                   for f in dataclasses.fields(cls) if getattr(loaded, f.name) != getattr(
                       cls(), f.name)}
        assert not drifted, f"{name}: params.yaml vs {cls.__name__} default: {drifted}"
        undocumented = [f.name for f in dataclasses.fields(cls) if f.name not in values]
        assert not undocumented, f"{name}: {undocumented} missing from params.yaml"


def test_model_configs_default_to_the_trainer_settings():
    """The model-side configs the CycleGAN trainer fills have the same defaults as its
    section, so a library caller gets what a run gets."""
    from cfxray.models.cyclegan import LossConfig
    from cfxray.models.networks import GeneratorConfig

    trainer = CycleGANTrainConfig()
    for cls in (GeneratorConfig, LossConfig):
        shared = [f.name for f in dataclasses.fields(cls) if hasattr(trainer, f.name)]
        assert shared
        assert {k: getattr(cls(), k) for k in shared} == {k: getattr(trainer, k) for k in shared}


def test_pipeline_step_sections_are_dvc_yamls():
    """Each pipeline step DVC also runs reads its stage's `params` sections (the packaged
    dvc.yaml is the checkout's); the export reads what its command lists."""
    from cfxray.export.commands import SECTIONS as EXPORT

    assert steps.DVC_STAGES.read_text() == (ROOT / "dvc.yaml").read_text()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    sections = steps.step_sections()
    for step in steps.DVC_STEPS:
        assert sections[step] == tuple(dict.fromkeys(p.split(".")[0]
                                                     for p in stages[step]["params"]))
    assert sections["export"] == ("export", "preprocess", "model_card") == tuple(EXPORT)
    assert {s for names in sections.values() for s in names} <= set(section_classes())
    edited = yaml.safe_dump({"stages": {**stages, "evaluate": {
        **stages["evaluate"], "params": ["evaluate.gate", "preprocess.size"]}}})
    assert steps.step_sections(edited)["evaluate"] == ("evaluate", "preprocess")


# --- the loader ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inner:
    low: float | None = 0.5
    mode: Literal["pad", "crop"] = "pad"


@dataclasses.dataclass(frozen=True)
class Sample:
    epochs: int = 3
    lr: float = 0.1
    name: str = "x"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = dataclasses.field(default_factory=Inner)


def load(values: dict) -> Sample:
    return from_section(Sample, values, "params.yaml sample")


def test_values_are_checked_against_the_field_types():
    assert load({}) == Sample()
    assert load({"epochs": 5, "lr": "1e-3", "sizes": [4], "inner": {"low": None}}) == Sample(
        epochs=5, lr=0.001, sizes=(4,), inner=Inner(low=None))  # YAML reads 1e-3 as a string
    cases = {
        "epochs: ten": "params.yaml sample.epochs: expected an integer, got 'ten'",
        "epochs: 2.5": "params.yaml sample.epochs: expected an integer, got 2.5",
        "lr: fast": "params.yaml sample.lr: expected a number, got 'fast'",
        "flag: maybe": "params.yaml sample.flag: expected true or false, got 'maybe'",
        "name: [a]": "params.yaml sample.name: expected a string, got ['a']",
        "sizes: 4": "params.yaml sample.sizes: expected a list, got 4",
        "sizes: [4, x]": "params.yaml sample.sizes[1]: expected an integer, got 'x'",
        "epochs: null": "params.yaml sample.epochs: expected an integer, got null",
        "inner: 3": "params.yaml sample.inner: expected a mapping of keys to values, got 3",
        "inner: {low: high}": "params.yaml sample.inner.low: expected a number, got 'high'",
        "inner: {mode: fill}": "params.yaml sample.inner.mode: expected one of pad, crop, "
                               "got 'fill'",
    }
    for text, message in cases.items():
        with pytest.raises(UserError) as caught:
            load(yaml.safe_load(text))
        assert str(caught.value) == message


def test_unknown_keys_name_the_known_ones():
    with pytest.raises(UserError) as caught:
        load({"epoch": 1})
    assert str(caught.value) == ("params.yaml sample: unknown key 'epoch'; known: epochs, "
                                 "flag, inner, lr, name, sizes")
    with pytest.raises(UserError, match=r"sample\.inner: unknown keys 'hi', 'lo'; known: low, "
                                        "mode"):
        load({"inner": {"hi": 1, "lo": 0}})


def test_the_file_invalid_yaml_a_missing_file_and_a_section_that_is_no_mapping(tmp_path):
    assert load_params(os.devnull) == {}
    broken = tmp_path / "params.yaml"
    broken.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(UserError, match=rf"^{broken}: invalid YAML at line 3, column 1: "):
        load_params(broken)
    with pytest.raises(UserError, match=r"^params file \S+missing.yaml not found$"):
        load_params(tmp_path / "missing.yaml")
    broken.write_text("train: [1, 2]\n")
    with pytest.raises(UserError, match=r"params.yaml train: expected a mapping of keys to "
                                        "values, got a list$"):
        load_settings(Sample, "train", broken)
    with pytest.raises(UserError, match="expected a mapping of sections, got a list"):
        parse_params("- a\n- b\n", "x")


def test_no_file_named_and_none_in_the_folder_means_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(Sample, "sample") == Sample()
    (tmp_path / "params.yaml").write_text("sample:\n  epochs: 7\n")
    assert load_settings(Sample, "sample").epochs == 7


def test_an_option_given_on_the_command_line_wins_over_the_file(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("sample:\n  epochs: 7\n  lr: 0.5\n  flag: true\n")
    parser = argparse.ArgumentParser()
    add_settings(parser, Sample, "sample")
    given = parser.parse_args(["--params", str(params), "--epochs", "9", "--sizes", "3,4",
                               "--no-flag"])
    assert resolve(Sample, given, "sample") == Sample(epochs=9, lr=0.5, sizes=(3, 4), flag=False)
    assert resolve(Sample, parser.parse_args(["--params", str(params)]), "sample") == Sample(
        epochs=7, lr=0.5, flag=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--epochs", "ten"])


def test_evaluate_gate_is_a_nested_section():
    settings = from_section(EvaluateSettings, {"gate": {"min_ssim": None, "max_kid": 0.1}},
                            "params.yaml evaluate")
    assert settings.gate == GateSettings(min_ssim=None, max_kid=0.1)
    assert dataclasses.asdict(settings)["gate"]["min_validity"] == 0.6  # lineage records all


# --- through the `cfxray` command ---------------------------------------------------------------


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_shows_the_value_a_run_would_use(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short paths: argparse wraps long ones
    Path("p.yaml").write_text("train_classifier:\n  epochs: 10\ntrain_oracle:\n  epochs: 20\n")
    out = help_text(capsys, "train-classifier", "--params", "p.yaml")
    assert "--epochs EPOCHS (default: 10 from p.yaml train_classifier)" in out
    assert "--lr LR (default: 0.002)" in out  # not in that file: the dataclass's
    out = help_text(capsys, "train-classifier", "--section", "train_oracle", "--params", "p.yaml")
    assert "(default: 20 from p.yaml train_oracle)" in out
    assert "(default: 10)" in help_text(capsys, "train-classifier")  # no file: the dataclass's
    Path("params.yaml").write_text("train_classifier:\n  epochs: 4\n")  # ./params.yaml
    assert "(default: 4 from params.yaml train_classifier)" in help_text(capsys,
                                                                        "train-classifier")
    assert "--resize {pad,crop} aspect-preserving pad (keep all) or centre crop (fill) " \
           "(default: 'pad')" in help_text(capsys, "data", "preprocess")


def test_help_of_the_committed_params_matches_what_runs_use(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = help_text(capsys, "train-classifier")
    assert "--epochs EPOCHS (default: 10 from params.yaml train_classifier)" in out


BAD_VALUE = {
    "train_classifier": ["train-classifier", "--data", "{missing}", "--out", "{tmp}/out"],
    "train_cyclegan": ["train-cyclegan", "--data", "{missing}", "--classifier", "{missing}",
                       "--out", "{tmp}/out"],
    "evaluate": ["evaluate", "--data", "{missing}", "--classifier", "{missing}", "--oracle",
                 "{missing}", "--generators", "{missing}", "--out", "{tmp}/out"],
    "phantom": ["data", "phantom", "--out", "{tmp}/out"],
    "preprocess": ["data", "preprocess", "{missing}", "--out", "{tmp}/out"],
    "export": ["export", "--classifier", "{missing}", "--generators", "{missing}",
               "--out", "{tmp}/repo"],
    "serve": ["serve", "--model-repo", "{missing}"],
    "study": ["study", "create", "--model-repo", "{missing}", "--data", "{missing}",
              "--out", "{tmp}/out"],
}
# A value of the wrong type for one key of each section (nested for evaluate), and that key.
WRONG = {"train_classifier": ("epochs: ten", "epochs"), "train_cyclegan": ("lr: fast", "lr"),
         "evaluate": ("gate: {min_ssim: high}", "gate.min_ssim"), "phantom": ("n: many", "n"),
         "preprocess": ("resize: fill", "resize"),
         "export": ("preferred_batch_sizes: 8", "preferred_batch_sizes"),
         "serve": ("http_port: eighty", "http_port"), "study": ("pairs: many", "pairs")}


def one_line_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1
    return captured.err.strip()


@pytest.mark.parametrize("section", sorted(BAD_VALUE))
def test_a_wrongly_typed_value_is_one_line_before_any_work(section, tmp_path, capsys):
    """The inputs do not exist: the params file is checked before anything is read."""
    text, key = WRONG[section]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({section: yaml.safe_load(text)}))
    argv = [a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in BAD_VALUE[section]]
    err = one_line_error(capsys, [*argv, "--params", str(params)])
    assert f"{params} {section}.{key}: expected " in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "repo").exists()


@pytest.mark.parametrize("section", sorted(BAD_VALUE))
def test_invalid_yaml_is_one_line(section, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"{section}:\n  epochs: [10\n")
    argv = [a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in BAD_VALUE[section]]
    err = one_line_error(capsys, [*argv, "--params", str(params)])
    assert f"{params}: invalid YAML at line" in err, err


def test_a_params_file_named_but_missing_is_one_line(tmp_path, capsys):
    err = one_line_error(capsys, ["data", "phantom", "--out", str(tmp_path / "out"),
                                  "--params", str(tmp_path / "nowhere.yaml")])
    assert err.endswith(f"params file {tmp_path / 'nowhere.yaml'} not found")


def test_export_checks_the_model_card_section_before_exporting(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("model_card:\n  owner: me\n")
    err = one_line_error(capsys, ["export", "--classifier", str(tmp_path / "missing"),
                                  "--out", str(tmp_path / "repo"), "--params", str(params)])
    assert "model_card: unknown key 'owner'; known: license, owners, references" in err
