"""What `cfxray explain` and `cfxray app` run; `cfxray.serving.commands` imports it lazily."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cfxray.conventions import CLASSES
from cfxray.errors import UserError
from cfxray.serving.client import ExplainClient
from cfxray.serving.render import unique_stems, write_explanation


def explain_command(images: list[Path], url: str, protocol: str, direction: str,
                    out: Path) -> int:
    """Explain every readable image; unreadable ones are named and skipped (exit status 2)."""
    with ExplainClient(url, protocol) as client:
        loaded, sources, skipped = [], [], []
        for path in images:
            try:
                loaded.append(client.load(path))
                sources.append(str(path))
            except UserError as exc:
                skipped.append(f"{exc}")
        if not loaded:
            raise UserError("no image could be read: " + "; ".join(skipped))
        results = client.explain(np.stack(loaded), direction, sources=sources)
    for result, stem in zip(results, unique_stems(sources), strict=True):
        paths = write_explanation(result, out, stem)
        before, after = result.probabilities, result.counterfactual_probabilities
        print(f"{result.source}: {CLASSES[result.predicted]} "
              f"(P(PNEUMONIA) {before[1]:.3f}) -> {result.direction} -> "
              f"{CLASSES[result.counterfactual_predicted]} (P(PNEUMONIA) {after[1]:.3f}); "
              f"{paths['heatmap'].name}")
    print(f"wrote {len(results)} explanations to {out} (model version "
          f"{results[0].model_version})")
    for reason in skipped:
        print(f"cfxray explain: skipped {reason}", file=sys.stderr)
    return 2 if skipped else 0


def app_command(url: str, protocol: str, host: str, port: int, max_upload_mb: float) -> int:
    from cfxray.serving.app import launch

    launch(url, protocol, host=host, port=port, max_upload_mb=max_upload_mb)
    return 0
