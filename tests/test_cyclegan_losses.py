"""The counterfactual CycleGAN objective, the update step and the networks, on tiny tensors."""

from __future__ import annotations

import random

import pytest
import torch

from cfxray.checkpoint import save_atomic
from cfxray.conventions import NORMAL, PNEUMONIA
from cfxray.errors import UserError
from cfxray.models.classifier import ClassifierConfig, build_classifier
from cfxray.models.cyclegan import (
    CycleGANStep,
    DiscriminatorPair,
    GeneratorPair,
    ImagePool,
    LossConfig,
    change_variation,
    counterfactual_loss,
    linear_decay,
)
from cfxray.models.networks import (
    VARIANTS,
    GeneratorConfig,
    build_discriminator,
    build_generator,
    generators_state,
    init_weights,
    load_generators,
)

torch.set_num_threads(1)

TINY = GeneratorConfig(image_size=32, ngf=4, n_blocks=1, n_downsampling=2)


def _logits_for(p_pneumonia: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose softmax gives P(PNEUMONIA) = p."""
    return torch.stack([torch.zeros_like(p_pneumonia), torch.logit(p_pneumonia)], dim=1)


@pytest.mark.parametrize("target", [NORMAL, PNEUMONIA])
def test_mse_counterfactual_loss_is_minimal_exactly_at_the_one_hot_target(target):
    p = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    logits = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)  # softmax is exactly (1-p, p)
    losses = torch.stack([counterfactual_loss(row[None], target, "mse") for row in logits])
    best = int(losses.argmin())
    assert p[best] == (1.0 if target == PNEUMONIA else 0.0)  # the one-hot target, not 50/50
    assert losses[best] == 0.0
    assert losses[500] == pytest.approx(0.5)  # (0.5^2 + 0.5^2): 50/50 is not a minimum
    # The seed's form: ||softmax - onehot||^2 = 2 * (1 - p_target)^2 for two classes.
    p_target = p if target == PNEUMONIA else 1 - p
    assert torch.allclose(losses, 2 * (1 - p_target) ** 2, atol=1e-12)


def test_margin_loss_decreases_towards_the_target():
    p = torch.tensor([0.01, 0.3, 0.7, 0.99])
    to_pneumonia = [float(counterfactual_loss(_logits_for(v[None]), PNEUMONIA, "margin"))
                    for v in p]
    to_normal = [float(counterfactual_loss(_logits_for(v[None]), NORMAL, "margin")) for v in p]
    assert to_pneumonia == sorted(to_pneumonia, reverse=True)
    assert to_normal == sorted(to_normal)


def test_margin_loss_is_zero_once_the_target_wins_by_the_margin():
    logits = torch.tensor([[0.0, 2.5], [0.0, 1.0]])
    assert float(counterfactual_loss(logits[:1], PNEUMONIA, "margin", margin=2.0)) == 0.0
    assert float(counterfactual_loss(logits[1:], PNEUMONIA, "margin", margin=2.0)) == 1.0
    assert float(counterfactual_loss(logits[1:], NORMAL, "margin", margin=2.0)) == 3.0


def test_mse_loss_is_flat_where_the_classifier_is_confidently_wrong():
    """Why the margin form exists: at p_target ~ 0 the MSE gradient vanishes, the margin's not."""
    logits = _logits_for(torch.tensor([1e-4])).requires_grad_(True)
    counterfactual_loss(logits, PNEUMONIA, "mse").backward()
    mse_grad = logits.grad.abs().max()
    logits.grad = None
    counterfactual_loss(logits, PNEUMONIA, "margin").backward()
    assert mse_grad < 1e-3 < logits.grad.abs().max()


def test_unknown_loss_form_is_refused():
    with pytest.raises(UserError, match="counterfactual loss form"):
        LossConfig(counter_form="hinge").validate()


def _models(variant: str = "mask"):
    torch.manual_seed(0)
    cfg = GeneratorConfig(**{**TINY.__dict__, "variant": variant})
    nets = [build_generator(cfg), build_generator(cfg), build_discriminator(1, 8, 2),
            build_discriminator(1, 8, 2)]
    for net in nets:
        init_weights(net)
    classifier = build_classifier(ClassifierConfig(arch="smallcnn", image_size=32)).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    return GeneratorPair(nets[0], nets[1]), DiscriminatorPair(nets[2], nets[3]), classifier


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_step_changes_every_generator_and_both_discriminators(variant):
    gens, discs, classifier = _models(variant)
    before = {name: p.detach().clone() for name, p in
              [*gens.named_parameters(prefix="G"), *discs.named_parameters(prefix="D")]}
    clf_before = [p.clone() for p in classifier.parameters()]
    opt_g = torch.optim.Adam(gens.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discs.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step = CycleGANStep(gens, discs, classifier, LossConfig(counter_form="margin", sparsity=1.0),
                        opt_g, opt_d, ImagePool(50), ImagePool(50))
    terms = step(torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32))
    assert all(torch.isfinite(v) for v in terms.values())
    after = dict([*gens.named_parameters(prefix="G"), *discs.named_parameters(prefix="D")])
    for module in ("G.n2p", "G.p2n", "D.d_p", "D.d_n"):
        names = [n for n in before if n.startswith(module + ".")]
        unchanged = [n for n in names if torch.equal(before[n], after[n].detach())]
        assert names and not unchanged, f"{module}: {unchanged} did not move"
    assert all(torch.equal(a, b) for a, b in zip(clf_before, classifier.parameters(),
                                                  strict=True))


def test_discriminators_learn_from_real_images_and_pooled_fakes():
    random.seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling the pool returns the new fakes
    later = pool.query(torch.full((64, 1, 1, 1), 9.0))
    replayed = later[later != 9.0]
    assert 0 < len(replayed) <= 4 and set(replayed.tolist()) <= {0.0, 1.0, 2.0, 3.0}
    restored = ImagePool(0)
    restored.load_state_dict(pool.state_dict())
    assert restored.size == 4 and all(torch.equal(a, b) for a, b in
                                      zip(restored.images, pool.images, strict=True))


def test_learning_rate_is_constant_then_decays_linearly_to_zero():
    factor = linear_decay(total_steps=10, decay_steps=4)
    assert [factor(s) for s in range(11)] == [1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25, 0.0]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("upsampling", ["transpose", "resize"])
def test_generators_map_unit_images_to_unit_images(variant, upsampling):
    cfg = GeneratorConfig(**{**TINY.__dict__, "variant": variant, "upsampling": upsampling})
    g = build_generator(cfg)
    init_weights(g)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        y = g(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    if variant != "plain":
        assert float((y - x).abs().mean()) < 0.1  # starts near the identity


def test_load_generators_round_trip(tmp_path):
    gens, _, _ = _models()
    save_atomic(generators_state(gens.n2p, gens.p2n, gens.n2p.config), tmp_path / "generators.pt")
    loaded = load_generators(tmp_path)  # the folder holding generators.pt
    assert loaded.config == gens.n2p.config and not loaded.n2p.training
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(loaded.p2n(x), gens.p2n(x))
    assert not any(p.requires_grad for p in loaded.n2p.parameters())


def test_bad_generator_settings_are_refused():
    with pytest.raises(UserError, match="variant"):
        build_generator(GeneratorConfig(variant="unet"))
    with pytest.raises(UserError, match="divisible"):
        build_generator(GeneratorConfig(image_size=30, n_downsampling=2))


def test_change_variation_charges_stripes_more_than_a_smooth_edit_of_the_same_size():
    x = torch.rand(1, 1, 32, 32)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 200).view(1, 1, 32, 32)
    stripes = (xx % 2).view(1, 1, 32, 32) * blob.mean() * 2  # same mean absolute change
    assert (stripes.abs().mean() - blob.abs().mean()).abs() < 1e-3 * blob.mean()
    assert float(change_variation(x, x)) == 0.0
    assert float(change_variation(x, x + 0.3)) == pytest.approx(0.0, abs=1e-6)  # constant shift
    assert float(change_variation(x, x + stripes)) > 10 * float(change_variation(x, x - blob))


def test_change_variation_weight_enters_the_generator_loss():
    gens, discs, classifier = _models()
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)

    def losses(weight: float) -> tuple[float, float]:
        opt = torch.optim.Adam(gens.parameters())
        step = CycleGANStep(gens, discs, classifier, LossConfig(tv_change=weight), opt, opt,
                            ImagePool(0), ImagePool(0))
        with torch.no_grad():
            total, terms, out = step.generator_loss(x, y)
        expected = change_variation(x, out["fake_p"]) + change_variation(y, out["fake_n"])
        return float(total), float(terms["variation"]), float(expected)

    total_off, variation_off, _ = losses(0.0)
    total_on, variation_on, expected = losses(3.0)
    assert variation_off == 0.0
    assert variation_on == pytest.approx(expected)
    assert total_on - total_off == pytest.approx(3.0 * expected, rel=1e-4)
