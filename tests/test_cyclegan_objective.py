"""Tests that fail when the counterfactual objective itself goes wrong, not only its plumbing.

On blob data (32 px) with a classifier trained to tell blobs from none: the shipped objective
must flip that classifier in both directions within a few dozen steps (with the targets
swapped it never does), must leave the classifier exactly as it was while its gradients
reach the generators, and must train each discriminator on its own domain.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path

import pytest
import torch
from conftest import make_blob_split

from cfxray.checkpoint import load_checkpoint, save_atomic
from cfxray.conventions import NORMAL, PNEUMONIA
from cfxray.data.tensors import SplitData
from cfxray.models.classifier import ClassifierConfig, build_classifier, classifier_state
from cfxray.models.cyclegan import (
    CycleGANStep,
    DiscriminatorPair,
    GeneratorPair,
    ImagePool,
    LossConfig,
    lsgan_loss,
)
from cfxray.models.networks import (
    GeneratorConfig,
    build_discriminator,
    build_generator,
    init_weights,
)
from cfxray.train import cyclegan as trainer
from cfxray.train.cyclegan_config import CycleGANTrainConfig

torch.set_num_threads(1)

# The shipped objective (margin form, sparsity, TV; params.yaml's train_cyclegan), on tiny
# networks.
SHIPPED = CycleGANTrainConfig()
TINY = GeneratorConfig(image_size=32, ngf=8, n_blocks=1, n_downsampling=2)


def _train_classifier(data: SplitData) -> torch.nn.Module:
    """A small CNN (with BatchNorm) that separates blobs from empty images."""
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(arch="smallcnn", image_size=32))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data.as_float(), data.labels
    weight = len(y) / (2 * torch.bincount(y).float())
    for _ in range(40):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, weight=weight).backward()
        optimiser.step()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory) -> Path:
    model = _train_classifier(make_blob_split(96, 32, seed=0))
    val = make_blob_split(40, 32, seed=1)
    with torch.no_grad():
        accuracy = (model(val.as_float()).argmax(1) == val.labels).float().mean()
    assert accuracy >= 0.95  # a trained classifier, or nothing below means anything
    path = tmp_path_factory.mktemp("objective") / "classifier.pt"
    save_atomic(classifier_state(model), path)
    return path


def _classifier(path: Path) -> torch.nn.Module:
    from cfxray.models.classifier import load_classifier

    return load_classifier(path)


def _networks(seed: int = 0) -> tuple[GeneratorPair, DiscriminatorPair]:
    torch.manual_seed(seed)
    nets = [build_generator(TINY), build_generator(TINY), build_discriminator(1, 8, 2),
            build_discriminator(1, 8, 2)]
    for net in nets:
        init_weights(net)
    return GeneratorPair(nets[0], nets[1]), DiscriminatorPair(nets[2], nets[3])


def _step(gens, discs, classifier, losses: LossConfig, pool: int = 0,
          lr: float = 5e-4) -> CycleGANStep:
    return CycleGANStep(gens, discs, classifier, losses,
                        torch.optim.Adam(gens.parameters(), lr=lr, betas=(0.5, 0.999)),
                        torch.optim.Adam(discs.parameters(), lr=lr, betas=(0.5, 0.999)),
                        ImagePool(pool), ImagePool(pool))


@torch.no_grad()
def _validity(gens: GeneratorPair, classifier, data: SplitData) -> dict[str, float]:
    """Share of counterfactuals the classifier gives the target class, per direction."""
    to_p = classifier(gens.n2p(data.as_float(data.class_indices(NORMAL)))).argmax(1)
    to_n = classifier(gens.p2n(data.as_float(data.class_indices(PNEUMONIA)))).argmax(1)
    return {"n2p": float((to_p == PNEUMONIA).float().mean()),
            "p2n": float((to_n == NORMAL).float().mean())}


def _record_modes(classifier: torch.nn.Module) -> list[bool]:
    """Every training flag the classifier's modules have whenever they run."""
    seen: list[bool] = []
    for module in classifier.modules():
        module.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    return seen


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_shipped_objective_flips_the_classifier_both_ways(classifier_file):
    """G must make C say PNEUMONIA = (0, 1), F must make it say NORMAL = (1, 0): with the
    targets swapped, validity stays where it starts (about 0) and this fails."""
    train, val = make_blob_split(96, 32, seed=0), make_blob_split(40, 32, seed=1)
    classifier = _classifier(classifier_file)
    gens, discs = _networks()
    before = _validity(gens, classifier, val)
    assert before["n2p"] <= 0.1 and before["p2n"] <= 0.1  # near-identity start: C not fooled

    clf_state, modes = _state(classifier), _record_modes(classifier)
    step = _step(gens, discs, classifier, SHIPPED.settings_for(LossConfig))
    x_n = train.as_float(train.class_indices(NORMAL))
    y_p = train.as_float(train.class_indices(PNEUMONIA))
    draw = torch.Generator().manual_seed(0)
    random.seed(0)
    for _ in range(24):
        step(x_n[torch.randint(len(x_n), (8,), generator=draw)],
             y_p[torch.randint(len(y_p), (8,), generator=draw)])
    after = _validity(gens, classifier, val)
    assert after["n2p"] >= 0.8 and after["p2n"] >= 0.8, (before, after)

    # C was explained, not trained: every parameter and BatchNorm buffer as it was, and every
    # one of its modules ran in eval mode.
    assert modes and not any(modes)
    for name, value in classifier.state_dict().items():
        assert torch.equal(value, clf_state[name]), name


def test_classifier_gradients_reach_the_generators_but_not_its_weights(classifier_file):
    classifier = _classifier(classifier_file)
    gens, discs = _networks()
    only_counter = LossConfig(adversarial=0.0, lambda_cycle=0.0, mu_identity=0.0,
                              gamma_counter=1.0, counter_form="margin", counter_margin=5.0)
    step = _step(gens, discs, classifier, only_counter)
    data = make_blob_split(16, 32, seed=3)
    x_n = data.as_float(data.class_indices(NORMAL))
    y_p = data.as_float(data.class_indices(PNEUMONIA))
    total, terms, _ = step.generator_loss(x_n, y_p)
    assert float(terms["counter"].detach()) > 0
    total.backward()
    for name, module in (("n2p", gens.n2p), ("p2n", gens.p2n)):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), name
    assert all(p.grad is None for p in classifier.parameters())
    assert not classifier.training


def test_each_discriminator_learns_its_own_domain(classifier_file):
    """D_P: real PNEUMONIA as real, G's fakes as fake; D_N: real NORMAL, F's fakes. Both move."""
    classifier = _classifier(classifier_file)
    gens, discs = _networks()
    data = make_blob_split(24, 32, seed=4)
    x_n = data.as_float(data.class_indices(NORMAL))[:4]
    y_p = data.as_float(data.class_indices(PNEUMONIA))[:4]
    with torch.no_grad():
        fake_p, fake_n = gens.n2p(x_n), gens.p2n(y_p)
    frozen = copy.deepcopy(discs)
    seen: dict[str, list[torch.Tensor]] = {"d_p": [], "d_n": []}
    for name in seen:
        disc = getattr(discs, name)
        # Only the discriminator update (its weights then require gradients), not the
        # generators' adversarial term.
        disc.register_forward_pre_hook(
            lambda m, args, name=name: seen[name].append(args[0].detach().clone())
            if next(m.parameters()).requires_grad else None)

    terms = _step(gens, discs, classifier, SHIPPED.settings_for(LossConfig))(x_n, y_p)

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return len(a) == len(b) and all(torch.allclose(u, v, atol=1e-6) for u, v in
                                        zip(a, b, strict=True))

    assert same(seen["d_p"], [y_p, fake_p]), "D_P must see real PNEUMONIA and G(NORMAL)"
    assert same(seen["d_n"], [x_n, fake_n]), "D_N must see real NORMAL and F(PNEUMONIA)"
    with torch.no_grad():
        want_p = 0.5 * (lsgan_loss(frozen.d_p(y_p), True) + lsgan_loss(frozen.d_p(fake_p), False))
        want_n = 0.5 * (lsgan_loss(frozen.d_n(x_n), True) + lsgan_loss(frozen.d_n(fake_n), False))
    assert float(terms["d_p"]) == pytest.approx(float(want_p), rel=1e-5)
    assert float(terms["d_n"]) == pytest.approx(float(want_n), rel=1e-5)
    for name in ("d_p", "d_n"):
        moved = [not torch.equal(a, b) for a, b in zip(getattr(frozen, name).parameters(),
                                                         getattr(discs, name).parameters(),
                                                         strict=True)]
        assert all(moved), f"{name} was not trained"


def test_the_trainer_keeps_the_classifier_frozen_and_in_eval_mode(blob_data, classifier_file,
                                                                  tmp_path, monkeypatch):
    """The same guarantee through `train-cyclegan`'s own loop (epochs, train() calls)."""
    loaded: dict[str, object] = {}
    real_load = trainer.load_classifier

    def spying_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        loaded.update(model=model, modes=_record_modes(model))
        return model

    monkeypatch.setattr(trainer, "load_classifier", spying_load)
    cfg = dataclasses.replace(SHIPPED, ngf=4, n_blocks=1, ndf=8, d_layers=2, epochs=2,
                              decay_epochs=1, batch_size=16, sample_count=1, max_steps=5,
                              checkpoint_every=0, device="cpu")
    trainer.train_cyclegan(blob_data, classifier_file, tmp_path / "run", cfg)
    model, modes = loaded["model"], loaded["modes"]
    assert modes and not any(modes)  # epochs 1 and 2 (step 5) ran, validation included
    saved = load_checkpoint(classifier_file)["state_dict"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
