"""The counterfactual CycleGAN objective and its update step.

L = w_adv * (L_GAN(G, D_P) + L_GAN(F, D_N)) + lambda * L_cycle + mu * L_identity
    + gamma * L_counter + w_sparsity * L_sparsity + w_tv * L_tv
L_cycle = |F(G(x)) - x| + |G(F(y)) - y|

G = n2p (NORMAL -> PNEUMONIA), F = p2n. L_GAN is least squares (LSGAN). L_counter pushes the
frozen classifier C towards the one-hot TARGET class of each direction, (0, 1) for G and
(1, 0) for F, with C seeing the generator output exactly as it sees any image (C maps [0, 1]
images to logits itself). L_sparsity is the mean absolute change a generator makes: it keeps
counterfactuals minimal, so the difference map shows what C needs changed and no more.
L_tv is the total variation of those changes: it keeps them smooth (see `change_variation`).

D_P learns PNEUMONIA (real P against G's fakes), D_N learns NORMAL (real N against F's
fakes), each from a history pool of its own fakes. C stays frozen and in eval mode: its
gradients reach the generators, its weights and BatchNorm statistics never move.
Why each choice, and what the alternatives measured: docs/CYCLEGAN.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from cfxray.conventions import NORMAL, PNEUMONIA
from cfxray.errors import UserError
from cfxray.models.networks import PatchDiscriminator, ResnetGenerator
from cfxray.models.parallel import unwrap

COUNTER_FORMS = ("mse", "margin")
LOSS_KEYS = ("adv", "cycle", "identity", "counter", "sparsity", "variation", "g_total", "d_p",
             "d_n", "flip_n2p", "flip_p2n")


@dataclass(frozen=True)
class LossConfig:
    adversarial: float = 1.0
    lambda_cycle: float = 10.0
    mu_identity: float = 0.0
    gamma_counter: float = 1.0
    counter_form: str = "margin"
    counter_margin: float = 5.0
    sparsity: float = 5.0
    tv_change: float = 150.0

    def validate(self) -> None:
        if self.counter_form not in COUNTER_FORMS:
            raise UserError(f"unknown counterfactual loss form {self.counter_form!r}; "
                            f"choose one of {COUNTER_FORMS}")
        weights = (self.adversarial, self.lambda_cycle, self.mu_identity, self.gamma_counter,
                   self.sparsity, self.counter_margin, self.tv_change)
        if min(weights) < 0:
            raise UserError("loss weights and the margin must be non-negative")


def counterfactual_loss(logits: torch.Tensor, target: int, form: str = "mse",
                        margin: float = 2.0) -> torch.Tensor:
    """How far the classifier is from calling every image the target class (mean over batch).

    - `mse`: squared distance of the softmax from the one-hot target (the published objective);
      bounded, but flat where the classifier is confidently wrong (no gradient to start from).
    - `margin`: hinge on the logit margin, max(0, margin - (z_target - max other z)); a constant
      push until the target wins by `margin`, then nothing more to gain from fooling C.
    """
    target_idx = torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)
    if form == "mse":
        onehot = nnf.one_hot(target_idx, logits.shape[1]).to(logits.dtype)
        return (torch.softmax(logits, dim=1) - onehot).pow(2).sum(dim=1).mean()
    if form == "margin":
        target_logit = logits[:, target]
        others = torch.cat([logits[:, :target], logits[:, target + 1:]], dim=1)
        return torch.relu(margin - (target_logit - others.max(dim=1).values)).mean()
    raise UserError(f"unknown counterfactual loss form {form!r}; choose one of {COUNTER_FORMS}")


def change_variation(original: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """Total variation (mean absolute neighbour difference) of the change map.

    A real edit (a lesion faded out) is a smooth field; the fine stripes a generator uses to
    fool the classifier or to hide the source image for the cycle are all edges, so they cost
    much more here than their amplitude does under the sparsity term.
    """
    d = changed - original
    return ((d[..., 1:, :] - d[..., :-1, :]).abs().mean()
            + (d[..., :, 1:] - d[..., :, :-1]).abs().mean())


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(scores) if real else torch.zeros_like(scores)
    return nnf.mse_loss(scores, target)


class ImagePool:
    """The last `size` generated images; the discriminator sees a mix of new and replayed fakes.

    Replaying older fakes keeps the discriminator from chasing the generator's latest mode.
    The choices use Python's `random` (captured in checkpoints), so no device sync is needed.
    """

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif random.random() < 0.5:
                i = random.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        stacked = torch.stack(self.images).cpu() if self.images else None
        return {"size": self.size, "images": stacked}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.size = state["size"]
        stacked = state["images"]
        self.images = [] if stacked is None else [im.to(device) for im in stacked]


class GeneratorPair(nn.Module):
    """G and F in one module, so one forward (and one DDP gradient sync) serves a whole step."""

    def __init__(self, n2p: ResnetGenerator, p2n: ResnetGenerator) -> None:
        super().__init__()
        self.n2p, self.p2n = n2p, p2n

    def forward(self, x_n: torch.Tensor, y_p: torch.Tensor,
                identity: bool = True) -> dict[str, torch.Tensor]:
        """All generator outputs of a step."""
        fake_p = self.n2p(x_n)
        fake_n = self.p2n(y_p)
        out = {"fake_p": fake_p, "fake_n": fake_n,
               "rec_n": self.p2n(fake_p), "rec_p": self.n2p(fake_n)}
        if identity:
            out["idt_p"] = self.n2p(y_p)
            out["idt_n"] = self.p2n(x_n)
        return out


class DiscriminatorPair(nn.Module):
    """D_P judges the PNEUMONIA domain, D_N the NORMAL domain, in one module so one forward
    (and one DDP gradient sync) trains both."""

    def __init__(self, d_p: PatchDiscriminator, d_n: PatchDiscriminator) -> None:
        super().__init__()
        self.d_p, self.d_n = d_p, d_n

    def forward(self, real_p: torch.Tensor, fake_p: torch.Tensor, real_n: torch.Tensor,
                fake_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both discriminators' LSGAN losses on real images and (pooled) fakes."""
        loss_p = 0.5 * (lsgan_loss(self.d_p(real_p), True) + lsgan_loss(self.d_p(fake_p), False))
        loss_n = 0.5 * (lsgan_loss(self.d_n(real_n), True) + lsgan_loss(self.d_n(fake_n), False))
        return loss_p, loss_n


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class CycleGANStep:
    """One optimisation step: the generators against fixed discriminators, then both
    discriminators on real images and pooled fakes. Returns detached per-step losses (tensors
    on the training device, so the caller decides when to sync with the host)."""

    def __init__(self, gens: nn.Module, discs: nn.Module, classifier: nn.Module,
                 losses: LossConfig, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 pool_p: ImagePool, pool_n: ImagePool,
                 autocast: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        losses.validate()
        # C is explained, never trained: eval mode keeps its BatchNorm statistics fixed.
        classifier.eval().requires_grad_(False)
        self.gens, self.discs, self.classifier = gens, discs, classifier
        self.losses = losses
        self.opt_g, self.opt_d = opt_g, opt_d
        self.pool_p, self.pool_n = pool_p, pool_n
        self.autocast = autocast

    def generator_loss(self, x_n: torch.Tensor,
                       y_p: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        w = self.losses
        discs = unwrap(self.discs)
        out = self.gens(x_n, y_p, identity=w.mu_identity > 0)
        fake_p, fake_n = out["fake_p"], out["fake_n"]
        adv = lsgan_loss(discs.d_p(fake_p), True) + lsgan_loss(discs.d_n(fake_n), True)
        cycle = nnf.l1_loss(out["rec_n"], x_n) + nnf.l1_loss(out["rec_p"], y_p)
        zero = adv.new_zeros(())
        identity = (nnf.l1_loss(out["idt_p"], y_p) + nnf.l1_loss(out["idt_n"], x_n)
                    if w.mu_identity > 0 else zero)
        logits_p, logits_n = self.classifier(fake_p).float(), self.classifier(fake_n).float()
        counter = (counterfactual_loss(logits_p, PNEUMONIA, w.counter_form, w.counter_margin)
                   + counterfactual_loss(logits_n, NORMAL, w.counter_form, w.counter_margin))
        sparsity = (fake_p - x_n).abs().mean() + (fake_n - y_p).abs().mean()
        variation = (change_variation(x_n, fake_p) + change_variation(y_p, fake_n)
                     if w.tv_change > 0 else zero)
        total = (w.adversarial * adv + w.lambda_cycle * cycle + w.mu_identity * identity
                 + w.gamma_counter * counter + w.sparsity * sparsity + w.tv_change * variation)
        terms = {"adv": adv, "cycle": cycle, "identity": identity, "counter": counter,
                 "sparsity": sparsity, "variation": variation, "g_total": total,
                 "flip_n2p": (logits_p.argmax(1) == PNEUMONIA).float().mean(),
                 "flip_p2n": (logits_n.argmax(1) == NORMAL).float().mean()}
        return total, terms, out

    def __call__(self, x_n: torch.Tensor, y_p: torch.Tensor) -> dict[str, torch.Tensor]:
        discs = unwrap(self.discs)
        set_requires_grad(discs, False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            total, terms, out = self.generator_loss(x_n, y_p)
        total.backward()
        self.opt_g.step()

        set_requires_grad(discs, True)
        self.opt_d.zero_grad(set_to_none=True)
        fake_p = self.pool_p.query(out["fake_p"].detach().float())
        fake_n = self.pool_n.query(out["fake_n"].detach().float())
        with self.autocast():
            loss_p, loss_n = self.discs(y_p, fake_p, x_n, fake_n)
        (loss_p + loss_n).backward()
        self.opt_d.step()
        terms.update(d_p=loss_p, d_n=loss_n)
        return {k: v.detach().float() for k, v in terms.items()}


def linear_decay(total_steps: int, decay_steps: int) -> Callable[[int], float]:
    """LR factor: 1 for the first total-decay steps, then linearly down to 0 at total_steps."""
    constant = max(total_steps - decay_steps, 0)

    def factor(step: int) -> float:
        if step < constant or decay_steps <= 0:
            return 1.0
        return max(0.0, 1.0 - (step - constant) / decay_steps)

    return factor
