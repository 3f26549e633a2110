"""What `cfxray explain` and `cfxray app` run (the library imports this lazily)."""

from __future__ import annotations

from pathlib import Path

from cfxray.conventions import CLASSES
from serving.client import ExplainClient
from serving.render import unique_stems, write_explanation


def explain_command(images: list[Path], url: str, protocol: str, direction: str,
                    out: Path) -> int:
    with ExplainClient(url, protocol) as client:
        results = client.explain_files(images, direction)
    for result, stem in zip(results, unique_stems([r.source for r in results]), strict=True):
        paths = write_explanation(result, out, stem)
        before, after = result.probabilities, result.counterfactual_probabilities
        print(f"{result.source}: {CLASSES[result.predicted]} "
              f"(P(PNEUMONIA) {before[1]:.3f}) -> {result.direction} -> "
              f"{CLASSES[result.counterfactual_predicted]} (P(PNEUMONIA) {after[1]:.3f}); "
              f"{paths['heatmap'].name}")
    print(f"wrote {len(results)} explanations to {out} (model version "
          f"{results[0].model_version})")
    return 0


def app_command(url: str, protocol: str, host: str, port: int, max_upload_mb: float) -> int:
    from serving.app import launch

    launch(url, protocol, host=host, port=port, max_upload_mb=max_upload_mb)
    return 0
