"""Synthetic chest radiographs with known lesions: the embedded default dataset.

Why a phantom: it needs no download, and unlike real data it has ground truth for what a
counterfactual should change. Every PNEUMONIA image comes with its lesion-free twin (same
anatomy, noise and distractors, no opacities), rendered from the same float image so the two
differ only where the opacity field is non-zero, and the lesion mask is exactly that support.

Two realism levels: `simple` (smooth round opacities in flat lungs; the default, unchanged
since the first release) and `hard` (vessels, patchy and diffuse disease, air bronchograms,
wider exposure and positioning: `cfxray.data.phantom_hard`). Optionally an image carries the
shortcut marker, a burnt-in "AP" annotation in a fixed corner whose presence the dataset plan
may tie to the label (`cfxray.data.phantom_dataset`); its region is returned as a mask and the
image is also rendered with the marker toggled, so both a generator's edits on it and a
classifier's reliance on it can be measured.

Rendering is vectorised numpy on a [-1, 1] grid, so the same parameters give the same picture
at any size. Random draws happen in a fixed order (anatomy, pose, photometry, noise,
distractors, then lesions) so that distractors are drawn identically for both classes and a
classifier cannot learn a shortcut from them; the shortcut marker draws nothing.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cfxray.data import phantom_hard
from cfxray.data.phantom_shapes import Pose, box, grid, segment, smooth_noise, smoothstep
from cfxray.data.settings import Realism

REALISM_LEVELS: tuple[str, ...] = typing.get_args(Realism)
# The opacity field is cut to exactly zero below this value; the lesion mask is its support.
OPACITY_EPSILON = 0.02
# Lesion centres are at least this far (in half-image units) from the lung-field border.
MIN_CENTRE_DEPTH = 0.1
# The shortcut marker's region on the film (x0, y0, x1, y1): lower right, below the lungs.
SHORTCUT_REGION = (0.52, 0.74, 0.84, 0.95)
_GEN_STREAM, _PATIENT_STREAM, _IMAGE_STREAM = 0, 1, 2


@dataclass(frozen=True)
class Rendering:
    image: np.ndarray  # uint8 [S, S]
    twin: np.ndarray | None  # uint8 [S, S], lesion-free, PNEUMONIA only
    lesion_mask: np.ndarray  # bool [S, S], empty for NORMAL
    lung_mask: np.ndarray  # bool [S, S]
    shortcut_mask: np.ndarray | None = None  # bool [S, S], the marker's region (option on)
    shortcut_twin: np.ndarray | None = None  # uint8 [S, S], the image with the marker toggled


def patient_rng(seed: int, patient: int) -> np.random.Generator:
    return np.random.default_rng([seed, _PATIENT_STREAM, patient])


def image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _IMAGE_STREAM, index])


def render(size: int, seed: int, index: int, patient: int, pneumonia: bool,
           realism: Realism = "simple", marker: bool | None = None) -> Rendering:
    """One image; anatomy comes from the patient's stream, everything else from the image's.

    `marker` None renders no shortcut marker and no shortcut outputs; True or False draws it
    or not and adds its region and the toggled image. The lesion twin carries the marker
    exactly as the image does.
    """
    if realism not in REALISM_LEVELS:
        raise ValueError(f"realism must be one of {REALISM_LEVELS}, got {realism!r}")
    hard = realism == "hard"
    anatomy_rng = patient_rng(seed, patient)
    anatomy = _draw_anatomy(anatomy_rng)
    vessels = phantom_hard.draw_vessels(anatomy_rng, anatomy) if hard else None
    rng = image_rng(seed, index)
    x, y = grid(size)
    pose = phantom_hard.draw_pose(rng) if hard else _draw_pose(rng)
    px, py = pose.patient_coords(x, y)
    photometry = phantom_hard.draw_photometry(rng) if hard else _draw_photometry(rng)
    noise = (photometry["low_freq"] * smooth_noise(rng, size, 6)
             + photometry["sigma"] * rng.standard_normal((size, size)))
    distractors = _draw_distractors(rng, x, y, px, py, anatomy)
    if hard:
        noise = noise + phantom_hard.exposure_gradient(photometry, x, y)
        anatomy = phantom_hard.breathe(anatomy, photometry)
    base, lung_soft = _anatomy_image(anatomy, px, py)
    if vessels is not None:
        base = base + phantom_hard.vessel_image(vessels, pose, size) * lung_soft
    lung_mask = lung_soft > 0.5
    shortcut = None if marker is None else _shortcut_marker(x, y)

    def finish(field: np.ndarray, with_marker: bool | None = marker) -> np.ndarray:
        z = np.clip(photometry["contrast"] * (field - 0.5) + 0.5 + photometry["brightness"],
                    0.0, 1.0) ** photometry["gamma"] + noise
        for alpha, value in distractors:
            z = z * (1.0 - alpha) + alpha * value
        if with_marker:
            z = z * (1.0 - shortcut) + shortcut
        return np.round(np.clip(z, 0.0, 1.0) * 255.0).astype(np.uint8)

    if not pneumonia:
        lesion_mask, seen, twin = np.zeros_like(lung_mask), base, None
    else:
        if hard:
            hila = pose.film_coords(phantom_hard.hila(anatomy))
            opacity = _restrict_to_lungs(
                phantom_hard.opacity_field(rng, x, y, px, lung_soft, hila), lung_soft)
            level = rng.uniform(0.6, 0.78)
        else:
            opacity = _opacity_field(rng, x, y, lung_soft)
            level = rng.uniform(0.7, 0.85)
        seen = base + opacity * (level - base)
        lesion_mask, twin = opacity > 0.0, finish(base)
    if marker is None:
        return Rendering(finish(seen), twin, lesion_mask, lung_mask)
    return Rendering(finish(seen), twin, lesion_mask, lung_mask,
                     shortcut_mask=_in_region(x, y, SHORTCUT_REGION),
                     shortcut_twin=finish(seen, not marker))


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


def _draw_pose(rng: np.random.Generator) -> Pose:
    angle, scale = rng.uniform(-0.06, 0.06), rng.uniform(0.92, 1.06)
    dx, dy = rng.uniform(-0.05, 0.05, size=2)
    return Pose(angle, scale, dx, dy)


def _draw_photometry(rng: np.random.Generator) -> dict[str, float]:
    return {"contrast": rng.uniform(0.85, 1.25), "brightness": rng.uniform(-0.05, 0.05),
            "gamma": rng.uniform(0.85, 1.2), "sigma": rng.uniform(0.008, 0.03),
            "low_freq": rng.uniform(0.01, 0.04)}


def _anatomy_image(a: dict[str, float], x: np.ndarray, y: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The lesion-free radiograph (floats, ~[0, 1]) and the soft lung-field weight."""
    body = smoothstep(1.0, 0.9, (x / a["body_rx"]) ** 2 + ((y - a["body_cy"]) / a["body_ry"]) ** 2)
    heart = smoothstep(1.0, 0.85, ((x - a["heart_cx"]) / a["heart_rx"]) ** 2
                        + ((y - a["heart_cy"]) / a["heart_ry"]) ** 2)
    mediastinum = smoothstep(a["medi_w"], 0.8 * a["medi_w"], np.abs(x))
    lungs = np.zeros_like(x)
    for side in (-1.0, 1.0):
        cx = side * a["lung_sep"] + a["lung_shift"]
        cy = a["lung_cy"]
        rx = a["lung_rx"] * np.clip(0.8 + 0.25 * (y - cy) / a["lung_ry"], 0.45, None)
        inside = smoothstep(1.0, 0.8, ((x - cx) / rx) ** 2 + ((y - cy) / a["lung_ry"]) ** 2)
        dome_y = cy + a["dome"] - (a["dome_asym"] if side < 0 else 0.0) + a["dome_k"] * (x - cx) ** 2
        lungs = np.maximum(lungs, inside * smoothstep(dome_y, dome_y - 0.05, y))
    lung_soft = lungs * (1.0 - heart) * (1.0 - mediastinum)

    image = a["background"] + (a["body_level"] - a["background"]) * body
    image = image - a["lung_depth"] * lung_soft + a["heart_level"] * heart
    vertebrae = 0.7 + 0.3 * np.cos(2 * np.pi * y / 0.11)
    image += a["spine_level"] * smoothstep(a["spine_w"], 0.6 * a["spine_w"], np.abs(x)) * body * vertebrae
    phase = 2 * np.pi * (y - a["rib_curve"] * (np.abs(x) - 0.1) ** 2) / a["rib_period"] + a["rib_phase"]
    chest = (body * smoothstep(0.08, 0.15, np.abs(x))
             * smoothstep(a["lung_cy"] + a["lung_ry"] + 0.1, a["lung_cy"] + a["lung_ry"] - 0.1, y))
    image += a["rib_level"] * smoothstep(0.35, 0.85, np.cos(phase)) * chest
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


def _marker(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """An 'L' or 'R' lead marker in an upper corner of the film."""
    side = -1.0 if d[0] < 0.5 else 1.0
    x0 = side * (0.62 + 0.2 * d[1]) - 0.06
    y0 = -0.9 + 0.2 * d[2]
    h, w, s = 0.13, 0.08, 0.028
    stem = box(x, y, x0, y0, x0 + s, y0 + h)
    if side < 0:
        glyph = np.maximum(stem, box(x, y, x0, y0 + h - s, x0 + w, y0 + h))
    else:
        bowl = np.maximum(box(x, y, x0, y0, x0 + w, y0 + s),
                          box(x, y, x0 + w - s, y0, x0 + w, y0 + h / 2))
        bowl = np.maximum(bowl, box(x, y, x0, y0 + h / 2 - s / 2, x0 + w, y0 + h / 2 + s / 2))
        leg = segment(x, y, (x0 + s, y0 + h / 2), (x0 + w, y0 + h), s / 2)
        glyph = np.maximum(np.maximum(stem, bowl), leg)
    return glyph


def _wire(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A thin curved line crossing the film (monitoring lead)."""
    y0, slope = -0.6 + 1.2 * d[0], -0.6 + 1.2 * d[1]
    amp, freq, phase = 0.05 + 0.2 * d[2], 1.0 + 3.0 * d[3], 2 * np.pi * d[4]
    width = 0.012 + 0.012 * d[5]
    curve = y0 + slope * x + amp * np.sin(freq * x + phase)
    return 0.85 * smoothstep(width, 0.3 * width, np.abs(y - curve))


def _electrode(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """An ECG electrode: a bright disc anywhere on the chest, lungs included."""
    cx, cy, r = -0.7 + 1.4 * d[0], -0.65 + 1.1 * d[1], 0.03 + 0.025 * d[2]
    return smoothstep(r, 0.75 * r, np.hypot(x - cx, y - cy))


def _pacemaker(x: np.ndarray, y: np.ndarray, d: np.ndarray, a: dict[str, float]
               ) -> list[tuple[np.ndarray, float]]:
    """A pacemaker can in the upper chest and its lead running to the heart."""
    side = -1.0 if d[0] < 0.5 else 1.0
    cx, cy = side * (0.35 + 0.25 * d[1]), -0.72 + 0.2 * d[2]
    can = box(x, y, cx - 0.08, cy - 0.05, cx + 0.08, cy + 0.05, soft=0.02)
    lead = segment(x, y, (cx, cy), (a["heart_cx"], a["heart_cy"]), 0.014)
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
        profile = smoothstep(1.0, 0.35, np.hypot(u, v) / wobble)
        texture = np.clip(0.7 + 0.25 * smooth_noise(rng, size, 10)
                          + 0.12 * smooth_noise(rng, size, 24), 0.15, 1.0)
        opacity = 1.0 - (1.0 - opacity) * (1.0 - density * profile * texture)
    return _restrict_to_lungs(opacity, lung_soft)


def _restrict_to_lungs(opacity: np.ndarray, lung_soft: np.ndarray) -> np.ndarray:
    """Fade the field out at the pleura and cut it to exactly zero below OPACITY_EPSILON."""
    opacity *= smoothstep(0.5, 0.9, lung_soft)
    opacity[opacity < OPACITY_EPSILON] = 0.0
    return opacity


def _in_region(x: np.ndarray, y: np.ndarray, region: tuple[float, float, float, float]
               ) -> np.ndarray:
    x0, y0, x1, y1 = region
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _shortcut_marker(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A burnt-in "AP" annotation (opacity of pure white), entirely inside SHORTCUT_REGION.

    Unlike the L/R markers it sits in a fixed place and draws nothing from the random stream,
    so switching it on or off changes no other pixel of any image.
    """
    x0, y0 = SHORTCUT_REGION[0] + 0.04, SHORTCUT_REGION[1] + 0.04
    h, w, s = 0.13, 0.1, 0.03
    apex, foot = (x0 + w / 2, y0), y0 + h
    letter_a = np.maximum(segment(x, y, apex, (x0, foot), s / 2),
                          segment(x, y, apex, (x0 + w, foot), s / 2))
    letter_a = np.maximum(letter_a, box(x, y, x0 + 0.25 * w, y0 + 0.6 * h,
                                        x0 + 0.75 * w, y0 + 0.6 * h + s))
    x0 += w + 0.05
    letter_p = np.maximum(box(x, y, x0, y0, x0 + s, y0 + h), box(x, y, x0, y0, x0 + w, y0 + s))
    letter_p = np.maximum(letter_p, box(x, y, x0 + w - s, y0, x0 + w, y0 + h / 2))
    letter_p = np.maximum(letter_p, box(x, y, x0, y0 + h / 2 - s / 2, x0 + w, y0 + h / 2 + s / 2))
    return np.maximum(letter_a, letter_p)
