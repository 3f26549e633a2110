"""`cfxray app`: a Gradio page on the Triton `explain` model.

Upload an X-ray; the page shows the prediction with its probabilities, the counterfactual,
the signed difference heatmap and a slider that blends the original into the counterfactual.
Anything that is not a usable image, or is over the upload limit, gets a one-line message
instead of a stack trace. Each request opens its own Triton client, so the page keeps working
across server restarts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cfxray.conventions import CLASSES
from cfxray.errors import UserError
from cfxray.serving.client import ExplainClient, Explanation, ServingError
from cfxray.serving.render import DISPLAY_SIZE, blend, heatmap_overlay, to_uint8

DIRECTION_LABELS = {
    "auto": "auto: towards the other class",
    "p2n": "p2n: make it look NORMAL",
    "n2p": "n2p: make it look PNEUMONIA",
}


def _display(image: np.ndarray) -> np.ndarray:
    """Upscale small model images so the page shows them at a readable size."""
    image = to_uint8(image)
    if image.shape[0] >= DISPLAY_SIZE:
        return image
    return np.asarray(Image.fromarray(image).resize((DISPLAY_SIZE, DISPLAY_SIZE),
                                                    Image.Resampling.BILINEAR))


def _probabilities(p: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(CLASSES, p, strict=True)}


def describe(result: Explanation) -> str:
    before, after = result.probabilities, result.counterfactual_probabilities
    target = CLASSES[result.target_class]
    verdict = "the decision flips" if result.counterfactual_predicted == result.target_class \
        else "the decision does not flip"
    return (f"**Prediction: {CLASSES[result.predicted]}** "
            f"(P(PNEUMONIA) = {before[1]:.3f}). "
            f"Counterfactual towards **{target}** ({result.direction}): "
            f"P({target}) {before[result.target_class]:.3f} → "
            f"{after[result.target_class]:.3f}, {verdict}. "
            f"Model version {result.model_version}.")


class ExplainPage:
    """The page's callbacks, kept apart from the layout so they are testable without a browser."""

    def __init__(self, url: str, protocol: str, max_upload_mb: float) -> None:
        self.url, self.protocol = url, protocol
        self.max_bytes = int(max_upload_mb * 1e6)

    def explain(self, path: str | None, direction_label: str) -> tuple[Any, ...]:
        """(status, prediction, after, original, counterfactual, heatmap, blend, state)."""
        if not path:
            return ("Upload a chest X-ray to explain.", *[None] * 7)
        direction = next((k for k, v in DIRECTION_LABELS.items() if v == direction_label), "auto")
        try:
            if os.path.getsize(path) > self.max_bytes:
                raise UserError(f"{Path(path).name} is {os.path.getsize(path) / 1e6:.1f} MB; "
                                f"the upload limit is {self.max_bytes / 1e6:g} MB")
            with ExplainClient(self.url, self.protocol) as client:
                image = client.load(path, self.max_bytes)
                result = client.explain(image[None], direction, sources=[Path(path).name])[0]
        except ServingError as exc:
            return (f"**The model server did not answer:** {exc}", *[None] * 7)
        except UserError as exc:
            return (f"**Cannot explain this upload:** {exc}", *[None] * 7)
        state = {"image": result.image, "counterfactual": result.counterfactual}
        return (describe(result), _probabilities(result.probabilities),
                _probabilities(result.counterfactual_probabilities), _display(result.image),
                _display(result.counterfactual),
                heatmap_overlay(result.image, result.difference),
                _display(blend(result.image, result.counterfactual, 0.5)), state)

    @staticmethod
    def blend(state: dict[str, np.ndarray] | None, amount: float) -> np.ndarray | None:
        if not state:
            return None
        return _display(blend(state["image"], state["counterfactual"], amount))


def build_app(page: ExplainPage):  # -> gr.Blocks
    import gradio as gr

    with gr.Blocks(title="cfxray: counterfactual X-ray explanations",
                   analytics_enabled=False) as app:
        gr.Markdown("# cfxray\nCounterfactual explanation of a pneumonia classifier: what "
                    "would this X-ray look like if the classifier decided the other way?")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label=f"Chest X-ray (any image format, at most "
                                       f"{page.max_bytes / 1e6:g} MB)",
                                 file_count="single", type="filepath", elem_id="upload")
                direction = gr.Radio(list(DIRECTION_LABELS.values()),
                                     value=DIRECTION_LABELS["auto"], label="Direction",
                                     elem_id="direction")
                button = gr.Button("Explain", variant="primary", elem_id="explain-button")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload a chest X-ray to explain.", elem_id="status")
                with gr.Row():
                    before = gr.Label(label="Prediction", elem_id="prediction")
                    after = gr.Label(label="Counterfactual's prediction",
                                     elem_id="counterfactual-prediction")
        with gr.Row():
            original = gr.Image(label="Original (as the model sees it)", interactive=False,
                                elem_id="original")
            counterfactual = gr.Image(label="Counterfactual", interactive=False,
                                      elem_id="counterfactual")
            heatmap = gr.Image(label="Difference: red brighter, blue darker",
                               interactive=False, elem_id="heatmap")
        with gr.Row():
            amount = gr.Slider(0.0, 1.0, value=0.5, step=0.05, elem_id="blend-slider",
                               label="Blend: 0 = original, 1 = counterfactual")
            blended = gr.Image(label="Blend", interactive=False, elem_id="blend")
        state = gr.State()
        outputs = [status, before, after, original, counterfactual, heatmap, blended, state]
        for event in (upload.upload, button.click, direction.change):
            event(page.explain, [upload, direction], outputs)
        amount.change(page.blend, [state, amount], blended)
    return app


def launch(url: str, protocol: str = "http", host: str = "127.0.0.1", port: int = 7860,
           max_upload_mb: float = 10.0, block: bool = True):  # -> gr.Blocks
    """Serve the page; with block=False return the running app (call `.close()`)."""
    import gradio as gr

    if protocol not in ("http", "grpc"):
        raise UserError(f"--protocol must be http or grpc, got {protocol!r}")
    if max_upload_mb <= 0:
        raise UserError("--max-upload-mb must be positive")
    with ExplainClient(url, protocol):  # fail now, clearly, when Triton is not there
        pass
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(ExplainPage(url, protocol, max_upload_mb))
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
    # Gradio's own limit is a backstop well above ours, so oversized uploads reach the page's
    # clear message instead of a generic upload failure.
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block,
               max_file_size=int(max_upload_mb * 1e6) * 4 + 1_000_000, ssr_mode=False,
               show_error=True, quiet=True, theme=theme, footer_links=[])
    return app
