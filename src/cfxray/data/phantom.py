"""Synthetic chest radiographs with known lesions: the embedded default dataset.

Why a phantom: it needs no download, and unlike real data it has ground truth for what a
counterfactual should change. Every PNEUMONIA image comes with its lesion-free twin (same
anatomy, noise and distractors, no opacities), rendered from the same float image so the two
differ only where the opacity field is non-zero, and the lesion mask is exactly that support.

Rendering is vectorised numpy on a [-1, 1] grid, so the same parameters give the same picture
at any size. Random draws happen in a fixed order (anatomy, pose, photometry, noise,
distractors, then lesions) so that distractors are drawn identically for both classes and a
classifier cannot learn a shortcut from them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# The opacity field is cut to exactly zero below this value; the lesion mask is its support.
OPACITY_EPSILON = 0.02
# Lesion centres are at least this far (in half-image units) from the lung-field border.
MIN_CENTRE_DEPTH = 0.1
_GEN_STREAM, _PATIENT_STREAM, _IMAGE_STREAM = 0, 1, 2


@dataclass(frozen=True)
class Rendering:
    image: np.ndarray  # uint8 [S, S]
    twin: np.ndarray | None  # uint8 [S, S], lesion-free, PNEUMONIA only
    lesion_mask: np.ndarray  # bool [S, S], empty for NORMAL
    lung_mask: np.ndarray  # bool [S, S]


def patient_rng(seed: int, patient: int) -> np.random.Generator:
    return np.random.default_rng([seed, _PATIENT_STREAM, patient])


def image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _IMAGE_STREAM, index])


def render(size: int, seed: int, index: int, patient: int, pneumonia: bool) -> Rendering:
    """One image; anatomy comes from the patient's stream, everything else from the image's."""
    anatomy = _draw_anatomy(patient_rng(seed, patient))
    rng = image_rng(seed, index)
    x, y = _grid(size)
    px, py = _pose(rng, x, y)
    photometry = _draw_photometry(rng)
    noise = (photometry["low_freq"] * _smooth_noise(rng, size, 6)
             + photometry["sigma"] * rng.standard_normal((size, size)))
    distractors = _draw_distractors(rng, x, y, px, py, anatomy)
    base, lung_soft = _anatomy_image(anatomy, px, py)
    lung_mask = lung_soft > 0.5

    def finish(field: np.ndarray) -> np.ndarray:
        z = np.clip(photometry["contrast"] * (field - 0.5) + 0.5 + photometry["brightness"],
                    0.0, 1.0) ** photometry["gamma"] + noise
        for alpha, value in distractors:
            z = z * (1.0 - alpha) + alpha * value
        return np.round(np.clip(z, 0.0, 1.0) * 255.0).astype(np.uint8)

    if not pneumonia:
        return Rendering(finish(base), None, np.zeros_like(lung_mask), lung_mask)
    opacity = _opacity_field(rng, x, y, lung_soft)
    level = rng.uniform(0.7, 0.85)
    diseased = base + opacity * (level - base)
    return Rendering(finish(diseased), finish(base), opacity > 0.0, lung_mask)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    return np.meshgrid(axis, axis, indexing="xy")


def _smoothstep(edge0: float, edge1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-variance noise with about `cells` blobs across the image, at any resolution."""
    weights = _noise_weights(size, cells)
    return weights @ rng.standard_normal((cells + 3, cells + 3)) @ weights.T


@functools.lru_cache(maxsize=32)
def _noise_weights(size: int, cells: int) -> np.ndarray:
    """Gaussian interpolation from a (cells + 3)-node grid to `size` pixels, rows of unit norm."""
    nodes = np.linspace(-1.0 - 1.5 * 2.0 / cells, 1.0 + 1.5 * 2.0 / cells, cells + 3)
    pixels = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    weights = np.exp(-0.5 * ((pixels[:, None] - nodes[None, :]) / (2.0 / cells)) ** 2)
    return weights / np.linalg.norm(weights, axis=1, keepdims=True)


def _draw_anatomy(rng: np.random.Generator) -> dict[str, float]:
    u = rng.uniform
    return {
        "background": u(0.02, 0.1), "body_level": u(0.42, 0.56),
        "body_rx": u(0.86, 0.97), "body_ry": u(1.05, 1.25), "body_cy": u(0.12, 0.28),
        "lung_sep": u(0.38, 0.45), "lung_cy": u(-0.1, 0.0), "lung_rx": u(0.28, 0.34),
        "lung_ry": u(0.52, 0.64), "lung_shift": u(-0.03, 0.03), "lung_depth": u(0.22, 0.32),
        "dome": u(0.36, 0.48), "dome_k": u(0.8, 1.6), "dome_asym": u(0.02, 0.08),
        "heart_cx": u(0.06, 0.14), "heart_cy": u(0.2, 0.3), "heart_rx": u(0.19, 0.26),
        "heart_ry": u(0.15, 0.21), "heart_level": u(0.02, 0.07), "medi_w": u(0.09, 0.13),
        "spine_w": u(0.05, 0.08), "spine_level": u(0.05, 0.11),
        "rib_period": u(0.15, 0.2), "rib_curve": u(0.5, 0.9), "rib_level": u(0.04, 0.09),
        "rib_phase": u(0.0, 2 * np.pi),
    }


def _pose(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates: the film grid shifted, scaled and slightly rotated."""
    angle, scale = rng.uniform(-0.06, 0.06), rng.uniform(0.92, 1.06)
    dx, dy = rng.uniform(-0.05, 0.05, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    xs, ys = (x - dx) / scale, (y - dy) / scale
    return cos * xs + sin * ys, -sin * xs + cos * ys


def _draw_photometry(rng: np.random.Generator) -> dict[str, float]:
    return {"contrast": rng.uniform(0.85, 1.25), "brightness": rng.uniform(-0.05, 0.05),
            "gamma": rng.uniform(0.85, 1.2), "sigma": rng.uniform(0.008, 0.03),
            "low_freq": rng.uniform(0.01, 0.04)}


def _anatomy_image(a: dict[str, float], x: np.ndarray, y: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The lesion-free radiograph (floats, ~[0, 1]) and the soft lung-field weight."""
    body = _smoothstep(1.0, 0.9, (x / a["body_rx"]) ** 2 + ((y - a["body_cy"]) / a["body_ry"]) ** 2)
    heart = _smoothstep(1.0, 0.85, ((x - a["heart_cx"]) / a["heart_rx"]) ** 2
                        + ((y - a["heart_cy"]) / a["heart_ry"]) ** 2)
    mediastinum = _smoothstep(a["medi_w"], 0.8 * a["medi_w"], np.abs(x))
    lungs = np.zeros_like(x)
    for side in (-1.0, 1.0):
        cx = side * a["lung_sep"] + a["lung_shift"]
        cy = a["lung_cy"]
        rx = a["lung_rx"] * np.clip(0.8 + 0.25 * (y - cy) / a["lung_ry"], 0.45, None)
        inside = _smoothstep(1.0, 0.8, ((x - cx) / rx) ** 2 + ((y - cy) / a["lung_ry"]) ** 2)
        dome_y = cy + a["dome"] - (a["dome_asym"] if side < 0 else 0.0) + a["dome_k"] * (x - cx) ** 2
        lungs = np.maximum(lungs, inside * _smoothstep(dome_y, dome_y - 0.05, y))
    lung_soft = lungs * (1.0 - heart) * (1.0 - mediastinum)

    image = a["background"] + (a["body_level"] - a["background"]) * body
    image = image - a["lung_depth"] * lung_soft + a["heart_level"] * heart
    vertebrae = 0.7 + 0.3 * np.cos(2 * np.pi * y / 0.11)
    image += a["spine_level"] * _smoothstep(a["spine_w"], 0.6 * a["spine_w"], np.abs(x)) * body * vertebrae
    phase = 2 * np.pi * (y - a["rib_curve"] * (np.abs(x) - 0.1) ** 2) / a["rib_period"] + a["rib_phase"]
    chest = (body * _smoothstep(0.08, 0.15, np.abs(x))
             * _smoothstep(a["lung_cy"] + a["lung_ry"] + 0.1, a["lung_cy"] + a["lung_ry"] - 0.1, y))
    image += a["rib_level"] * _smoothstep(0.35, 0.85, np.cos(phase)) * chest
    return image, lung_soft


def _draw_distractors(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                      px: np.ndarray, py: np.ndarray, a: dict[str, float]
                      ) -> list[tuple[np.ndarray, float]]:
    """Side markers, wires, ECG electrodes and pacemakers: bright, class-independent clutter.

    Every draw happens whatever is later chosen, so the random stream (and hence the lesions
    that follow) does not depend on which distractors appear.
    """
    layers: list[tuple[np.ndarray, float]] = []
    marker_draws = rng.uniform(size=4)
    if marker_draws[0] < 0.7:
        layers.append((_marker(x, y, marker_draws[1:]), 0.97))
    wire_draws = rng.uniform(size=(3, 6))
    for k in range(int(wire_draws[0, 0] < 0.45) + int(wire_draws[0, 1] < 0.2)):
        layers.append((_wire(x, y, wire_draws[k + 1]), 0.88))
    electrode_draws = rng.uniform(size=(5, 3))
    for k in range(int(electrode_draws[0, 0] < 0.4) * (1 + int(electrode_draws[0, 1] * 4))):
        layers.append((_electrode(px, py, electrode_draws[k + 1]), 0.95))
    device_draws = rng.uniform(size=4)
    if device_draws[0] < 0.15:
        layers.extend(_pacemaker(px, py, device_draws[1:], a))
    return layers


def _box(x: np.ndarray, y: np.ndarray, x0: float, y0: float, x1: float, y1: float,
         soft: float = 0.01) -> np.ndarray:
    return (_smoothstep(x0 - soft, x0, x) * _smoothstep(x1 + soft, x1, x)
            * _smoothstep(y0 - soft, y0, y) * _smoothstep(y1 + soft, y1, y))


def _segment(x: np.ndarray, y: np.ndarray, p: tuple[float, float], q: tuple[float, float],
             width: float) -> np.ndarray:
    dx, dy = q[0] - p[0], q[1] - p[1]
    t = np.clip(((x - p[0]) * dx + (y - p[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist = np.hypot(x - p[0] - t * dx, y - p[1] - t * dy)
    return _smoothstep(width, 0.4 * width, dist)


def _marker(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """An 'L' or 'R' lead marker in an upper corner of the film."""
    side = -1.0 if d[0] < 0.5 else 1.0
    x0 = side * (0.62 + 0.2 * d[1]) - 0.06
    y0 = -0.9 + 0.2 * d[2]
    h, w, s = 0.13, 0.08, 0.028
    stem = _box(x, y, x0, y0, x0 + s, y0 + h)
    if side < 0:
        glyph = np.maximum(stem, _box(x, y, x0, y0 + h - s, x0 + w, y0 + h))
    else:
        bowl = np.maximum(_box(x, y, x0, y0, x0 + w, y0 + s),
                          _box(x, y, x0 + w - s, y0, x0 + w, y0 + h / 2))
        bowl = np.maximum(bowl, _box(x, y, x0, y0 + h / 2 - s / 2, x0 + w, y0 + h / 2 + s / 2))
        leg = _segment(x, y, (x0 + s, y0 + h / 2), (x0 + w, y0 + h), s / 2)
        glyph = np.maximum(np.maximum(stem, bowl), leg)
    return glyph


def _wire(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A thin curved line crossing the film (monitoring lead)."""
    y0, slope = -0.6 + 1.2 * d[0], -0.6 + 1.2 * d[1]
    amp, freq, phase = 0.05 + 0.2 * d[2], 1.0 + 3.0 * d[3], 2 * np.pi * d[4]
    width = 0.012 + 0.012 * d[5]
    curve = y0 + slope * x + amp * np.sin(freq * x + phase)
    return 0.85 * _smoothstep(width, 0.3 * width, np.abs(y - curve))


def _electrode(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """An ECG electrode: a bright disc anywhere on the chest, lungs included."""
    cx, cy, r = -0.7 + 1.4 * d[0], -0.65 + 1.1 * d[1], 0.03 + 0.025 * d[2]
    return _smoothstep(r, 0.75 * r, np.hypot(x - cx, y - cy))


def _pacemaker(x: np.ndarray, y: np.ndarray, d: np.ndarray, a: dict[str, float]
               ) -> list[tuple[np.ndarray, float]]:
    """A pacemaker can in the upper chest and its lead running to the heart."""
    side = -1.0 if d[0] < 0.5 else 1.0
    cx, cy = side * (0.35 + 0.25 * d[1]), -0.72 + 0.2 * d[2]
    can = _box(x, y, cx - 0.08, cy - 0.05, cx + 0.08, cy + 0.05, soft=0.02)
    lead = _segment(x, y, (cx, cy), (a["heart_cx"], a["heart_cy"]), 0.014)
    return [(0.9 * lead, 0.9), (can, 1.0)]


def _opacity_field(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                   lung_soft: np.ndarray) -> np.ndarray:
    """One to three textured, soft-edged opacities inside the lung fields, in [0, 1).

    Values under OPACITY_EPSILON are set to exactly 0, so the support of the field is the
    lesion mask and the diseased image differs from its twin only there.
    """
    size = x.shape[0]
    # Centres lie well inside a lung, so an opacity is never mostly cut off by the pleura.
    depth = ndimage.distance_transform_edt(lung_soft > 0.5) / (size / 2)
    centres = np.flatnonzero(depth >= MIN_CENTRE_DEPTH)
    if centres.size == 0:
        centres = np.flatnonzero(depth == depth.max())
    opacity = np.zeros_like(x)
    for k in range(int(rng.integers(1, 4))):
        row, col = divmod(int(centres[rng.integers(len(centres))]), size)
        radius = rng.uniform(0.18, 0.32) if k == 0 else rng.uniform(0.1, 0.24)
        aspect, angle = rng.uniform(0.6, 1.4), rng.uniform(0.0, np.pi)
        harmonics = rng.uniform(0.0, 0.12, size=3)
        phases = rng.uniform(0.0, 2 * np.pi, size=3)
        density = rng.uniform(0.6, 0.95)
        dx, dy = x - x[row, col], y - y[row, col]
        u = (np.cos(angle) * dx + np.sin(angle) * dy) / (radius * aspect)
        v = (-np.sin(angle) * dx + np.cos(angle) * dy) * aspect / radius
        theta = np.arctan2(v, u)
        wobble = 1.0 + sum(h * np.cos((j + 2) * theta + p)
                           for j, (h, p) in enumerate(zip(harmonics, phases, strict=True)))
        profile = _smoothstep(1.0, 0.35, np.hypot(u, v) / wobble)
        texture = np.clip(0.7 + 0.25 * _smooth_noise(rng, size, 10)
                          + 0.12 * _smooth_noise(rng, size, 24), 0.15, 1.0)
        opacity = 1.0 - (1.0 - opacity) * (1.0 - density * profile * texture)
    opacity *= _smoothstep(0.5, 0.9, lung_soft)
    opacity[opacity < OPACITY_EPSILON] = 0.0
    return opacity
