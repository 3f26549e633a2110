"""Resolution-independent drawing primitives for the phantom, on the [-1, 1] film grid.

Every shape is a function of coordinate arrays, so the same parameters draw the same picture
at any image size; values outside a shape's soft edge are exactly zero, which is what keeps
the phantom's masks exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    return np.meshgrid(axis, axis, indexing="xy")


def smoothstep(edge0: float, edge1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
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


def box(x: np.ndarray, y: np.ndarray, x0: float, y0: float, x1: float, y1: float,
        soft: float = 0.01) -> np.ndarray:
    return (smoothstep(x0 - soft, x0, x) * smoothstep(x1 + soft, x1, x)
            * smoothstep(y0 - soft, y0, y) * smoothstep(y1 + soft, y1, y))


def segment(x: np.ndarray, y: np.ndarray, p: tuple[float, float], q: tuple[float, float],
            width: float) -> np.ndarray:
    dx, dy = q[0] - p[0], q[1] - p[1]
    t = np.clip(((x - p[0]) * dx + (y - p[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    dist = np.hypot(x - p[0] - t * dx, y - p[1] - t * dy)
    return smoothstep(width, 0.4 * width, dist)


def tubes(size: int, starts: np.ndarray, ends: np.ndarray, widths: np.ndarray,
          strengths: np.ndarray) -> np.ndarray:
    """Sum of projected tubes (vessels, bronchi) p -> q in film coordinates, float [S, S].

    Each tube has a Gaussian cross-section of half-width `width`; one narrower than a pixel is
    drawn a pixel wide and proportionally fainter, so thin branches fade out instead of
    breaking into dots. Each tube is evaluated only in its own bounding window: hundreds of
    small branches cost little more than one full-image shape.
    """
    out = np.zeros((size, size), dtype=np.float64)
    pixel = 2.0 / size
    centres = (np.arange(size) + 0.5) * pixel - 1.0
    for (x0, y0), (x1, y1), width, strength in zip(starts, ends, widths, strengths, strict=True):
        drawn = max(float(width), 0.6 * pixel)
        reach = 3.0 * drawn
        c0, c1 = np.searchsorted(centres, [min(x0, x1) - reach, max(x0, x1) + reach])
        r0, r1 = np.searchsorted(centres, [min(y0, y1) - reach, max(y0, y1) + reach])
        if c0 >= c1 or r0 >= r1:
            continue
        wx, wy = np.meshgrid(centres[c0:c1], centres[r0:r1], indexing="xy")
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((wx - x0) * dx + (wy - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        dist = np.hypot(wx - x0 - t * dx, wy - y0 - t * dy)
        out[r0:r1, c0:c1] += strength * (width / drawn) * np.exp(-((dist / drawn) ** 2))
    return out


@dataclass(frozen=True)
class Pose:
    """Where the patient lies on the film: shifted, scaled and slightly rotated."""
    angle: float
    scale: float
    dx: float
    dy: float

    def patient_coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        xs, ys = (x - self.dx) / self.scale, (y - self.dy) / self.scale
        return cos * xs + sin * ys, -sin * xs + cos * ys

    def film_coords(self, points: np.ndarray) -> np.ndarray:
        """The inverse of `patient_coords` for points [..., 2] (x, y)."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        px, py = points[..., 0], points[..., 1]
        xs, ys = cos * px - sin * py, sin * px + cos * py
        return np.stack([xs * self.scale + self.dx, ys * self.scale + self.dy], axis=-1)
