"""Serving wrappers: raw UINT8 pixels in, float results out, preprocessing folded in.

A served model must not depend on its caller normalising images the way training did (the
published implementation this project replaces fed its classifier differently normalised
images in different places). So every exported graph starts from the raw pixels a client
has, converts them to the library's [0, 1] convention, and lets each model apply its own
normalisation inside `forward`, exactly as in training and evaluation.
"""

from __future__ import annotations

import torch
from torch import nn

from cfxray.conventions import NORMAL, PNEUMONIA
from cfxray.data.tensors import unit_images
from cfxray.models.classifier import XrayClassifier


class ClassifierServing(nn.Module):
    def __init__(self, classifier: XrayClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(unit_images(image))
        return torch.softmax(logits, dim=1), logits


class GeneratorServing(nn.Module):
    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.generator(unit_images(image)).clamp(0.0, 1.0).squeeze(1)


class ExplainServing(nn.Module):
    """Prediction, counterfactual, its probabilities and the difference map in one graph.

    Both generators run on every image and a per-image `where` picks the requested one: a
    data-dependent branch would not export to a static graph, and the generators are cheap
    next to a request's round trip.
    """

    def __init__(self, classifier: XrayClassifier, n2p: nn.Module, p2n: nn.Module) -> None:
        super().__init__()
        self.classifier, self.n2p, self.p2n = classifier, n2p, p2n

    def forward(self, image: torch.Tensor, target_class: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        x = unit_images(image)
        probabilities = torch.softmax(self.classifier(x), dim=1)
        opposite = PNEUMONIA - probabilities.argmax(dim=1, keepdim=True)  # flips 0 <-> 1
        requested = target_class.to(torch.int64)
        valid = (requested == NORMAL) | (requested == PNEUMONIA)
        target = torch.where(valid, requested, opposite)
        to_pneumonia = (target == PNEUMONIA).view(-1, 1, 1, 1)
        counterfactual = torch.where(to_pneumonia, self.n2p(x), self.p2n(x)).clamp(0.0, 1.0)
        cf_probabilities = torch.softmax(self.classifier(counterfactual), dim=1)
        difference = counterfactual - x
        return (probabilities, counterfactual.squeeze(1), cf_probabilities,
                difference.squeeze(1), target.to(torch.int32))
