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

    Each image goes through its own generator only: the images are split by target class,
    each generator runs on its share (gather), and the results are written back in request
    order (scatter). The graph's cost is one generator pass and two classifier passes per
    image, whatever the mix (a `where` over both generators' outputs paid for two).
    Either share may be empty at run time; onnxruntime runs convolutions on an empty batch.
    Tracing needs to be told the shares are not empty: with an unknown (data-dependent)
    batch the exporter cannot decide the layers' empty-tensor branches. The exported graph
    holds no such assumption (the parity batches include one-direction batches).
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
        to_pneumonia = target.view(-1) == PNEUMONIA
        counterfactual = torch.zeros_like(x)
        for generator, chosen in ((self.n2p, to_pneumonia), (self.p2n, ~to_pneumonia)):
            index = torch.nonzero(chosen).view(-1)
            if torch.compiler.is_exporting():
                torch._check(index.shape[0] > 0)
            counterfactual = counterfactual.index_put((index,), generator(x[index]))
        counterfactual = counterfactual.clamp(0.0, 1.0)
        cf_probabilities = torch.softmax(self.classifier(counterfactual), dim=1)
        difference = counterfactual - x
        return (probabilities, counterfactual.squeeze(1), cf_probabilities,
                difference.squeeze(1), target.to(torch.int32))
