"""Saliency maps for the prediction task's control arm (Captum integrated gradients).

The published GANterfactual study compared counterfactuals with saliency methods (LIME, LRP);
this control arm uses integrated gradients, a gradient method with a completeness guarantee
that Captum implements for any differentiable model, on the PyTorch classifier the version
was exported from. It runs only after that checkpoint is shown to be the served model: same
hash as the export recorded, and the same probabilities as the served ONNX classifier on the
study's images (within the export's parity tolerance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfxray.errors import UserError


def integrated_gradients(checkpoint: Path, images: np.ndarray, targets: np.ndarray,
                         served_probabilities: np.ndarray, steps: int, atol: float
                         ) -> np.ndarray:
    """float32 [N, H, W]: attribution of each pixel to the logit of `targets` (the served
    classifier's decisions), from a black image to the X-ray in `steps` steps."""
    import torch
    from captum.attr import IntegratedGradients

    from cfxray.data.tensors import unit_images
    from cfxray.models.classifier import load_classifier

    model = load_classifier(checkpoint, expect_size=images.shape[-1])
    x = unit_images(torch.from_numpy(images))
    probabilities = model.probabilities(x).numpy()
    gap = float(np.abs(probabilities - served_probabilities).max()) if len(x) else 0.0
    if gap > atol:
        raise UserError(f"the classifier checkpoint {checkpoint} does not reproduce the served "
                        f"classifier (probabilities differ by {gap:.2e} > {atol:g}); the saliency "
                        "maps would explain another model")
    attributions = IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=torch.as_tensor(targets, dtype=torch.long),
        n_steps=steps, internal_batch_size=steps)
    return attributions[:, 0].detach().numpy().astype(np.float32)


def signed_unit(attribution: np.ndarray) -> np.ndarray:
    """One map scaled to [-1, 1] by its largest magnitude, for the red/blue overlay."""
    scale = float(np.abs(attribution).max())
    return attribution / scale if scale > 0 else attribution
