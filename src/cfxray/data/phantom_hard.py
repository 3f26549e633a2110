"""The phantom's `hard` realism level: what makes real pneumonia harder than bright blobs.

The `simple` level's lesions are one to three smooth round opacities in flat lungs, exactly
the change a generator's regularisers (mask, sparsity, smooth total variation) favour. This
level adds what real radiographs have: branching lung vessels (anatomy, in both classes and
in the twins) that a dense consolidation hides and a faint one does not; lesions of three
kinds and widely varied size and density (dense consolidation, sometimes bounded by a
fissure and crossed by air bronchograms; patchy clusters; faint ground glass), often in both
lungs and mostly in the lower zones; and wider exposure and positioning variation (tube-heel
gradient, contrast, gamma, rotation, depth of inspiration).

Only the draws differ from the simple level; the draw order and the twin construction are
the ones `cfxray.data.phantom.render` uses for both levels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cfxray.data.phantom_shapes import Pose, smooth_noise, smoothstep, tubes

SIDES = (-1.0, 1.0)
# Vessel trunks leave each hilum at these angles from the outward horizontal (y points down).
_TRUNK_ANGLES = (-1.25, -0.7, -0.15, 0.4, 0.95)
_VESSEL_GENERATIONS = 6
_CONSOLIDATION, _PATCHY, _GROUND_GLASS = 0, 1, 2
_KIND_P = (0.35, 0.4, 0.25)
_RADIUS = {_CONSOLIDATION: (0.16, 0.38), _PATCHY: (0.08, 0.32), _GROUND_GLASS: (0.2, 0.5)}
_DENSITY = {_CONSOLIDATION: (0.65, 1.0), _PATCHY: (0.35, 0.85), _GROUND_GLASS: (0.15, 0.4)}
# Lesion centres lie at least this far (half-image units) inside a lung field.
_MIN_CENTRE_DEPTH = 0.06


def draw_pose(rng: np.random.Generator) -> Pose:
    """Positioning about twice as variable as the simple level's (portable films, rotation)."""
    angle, scale = rng.uniform(-0.12, 0.12), rng.uniform(0.88, 1.1)
    dx, dy = rng.uniform(-0.09, 0.09, size=2)
    return Pose(angle, scale, dx, dy)


def draw_photometry(rng: np.random.Generator) -> dict[str, float]:
    """Exposure (contrast, brightness, gamma, heel-effect gradient), noise and inspiration."""
    return {"contrast": rng.uniform(0.7, 1.35), "brightness": rng.uniform(-0.1, 0.1),
            "gamma": rng.uniform(0.75, 1.35), "sigma": rng.uniform(0.008, 0.035),
            "low_freq": rng.uniform(0.01, 0.05), "heel": rng.uniform(0.0, 0.08),
            "heel_angle": rng.uniform(0.0, 2 * np.pi), "inspiration": rng.uniform(0.86, 1.04)}


def exposure_gradient(photometry: dict[str, float], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The anode-heel effect: film density falls off linearly along one direction."""
    angle = photometry["heel_angle"]
    return photometry["heel"] * (np.cos(angle) * x + np.sin(angle) * y)


def breathe(anatomy: dict[str, float], photometry: dict[str, float]) -> dict[str, float]:
    """A shallower or deeper breath than the patient's usual: lungs shorter or longer."""
    f = photometry["inspiration"]
    return dict(anatomy, lung_ry=anatomy["lung_ry"] * f, dome=anatomy["dome"] * f)


def hila(anatomy: dict[str, float]) -> np.ndarray:
    """Both hila in patient coordinates, [2, 2] (x, y), left then right of the film."""
    y = anatomy["lung_cy"] + 0.06
    return np.array([[side * (anatomy["lung_sep"] - 0.6 * anatomy["lung_rx"])
                      + anatomy["lung_shift"], y] for side in SIDES])


def branches(rng: np.random.Generator, roots: np.ndarray, angles: np.ndarray, length: np.ndarray,
             width: np.ndarray, generations: int, taper: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A binary branching tree per root: (starts [K, 2], ends [K, 2], widths [K], generation [K]).

    Every segment forks into two children turned 0.25-0.6 rad either way, 65-85 % as long and
    `taper` times as wide, which is roughly how bronchi and pulmonary vessels divide.
    """
    starts, lengths, widths = roots.astype(np.float64), length.astype(np.float64), width
    parts = []
    for generation in range(generations):
        ends = starts + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        parts.append((starts, ends, widths, np.full(len(starts), generation)))
        turns = rng.uniform(0.25, 0.6, size=(len(starts), 2)) * np.array([-1.0, 1.0])
        shrink = rng.uniform(0.65, 0.85, size=2 * len(starts))
        starts = np.repeat(ends, 2, axis=0)
        angles = np.repeat(angles, 2) + turns.ravel()
        lengths = np.repeat(lengths, 2) * shrink
        widths = np.repeat(widths, 2) * taper
    return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))  # type: ignore[return-value]


def draw_vessels(rng: np.random.Generator, anatomy: dict[str, float]) -> dict[str, np.ndarray]:
    """The patient's pulmonary vessel trees (patient coordinates): part of the anatomy."""
    roots, angles = [], []
    for (hx, hy), side in zip(hila(anatomy), SIDES, strict=True):
        jitter = rng.uniform(-0.15, 0.15, size=len(_TRUNK_ANGLES))
        for base, turn in zip(_TRUNK_ANGLES, jitter, strict=True):
            roots.append((hx, hy))
            angles.append(base + turn if side > 0 else np.pi - base - turn)
    n = len(roots)
    starts, ends, widths, generation = branches(
        rng, np.array(roots), np.array(angles), rng.uniform(0.07, 0.1, size=n),
        rng.uniform(0.016, 0.022, size=n), _VESSEL_GENERATIONS, taper=0.75)
    return {"starts": starts, "ends": ends, "widths": widths,
            "strengths": 0.8 ** generation, "level": np.float64(rng.uniform(0.06, 0.1))}


def vessel_image(vessels: dict[str, np.ndarray], pose: Pose, size: int) -> np.ndarray:
    """Brightness the vessels add on this film (before the lung-field weight), [S, S]."""
    density = tubes(size, pose.film_coords(vessels["starts"]), pose.film_coords(vessels["ends"]),
                    vessels["widths"] * pose.scale, vessels["strengths"])
    return vessels["level"] * (1.0 - np.exp(-1.5 * density))


def opacity_field(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, px: np.ndarray,
                  lung_soft: np.ndarray, hila_film: np.ndarray) -> np.ndarray:
    """One to five opacities, in one lung or both, each consolidation, patchy or ground glass.

    Returns the raw field in [0, 1); the caller restricts it to the lungs and cuts it to the
    lesion mask exactly as for the simple level.
    """
    size = x.shape[0]
    depth = ndimage.distance_transform_edt(lung_soft > 0.5) / (size / 2)
    inside = np.flatnonzero(depth >= _MIN_CENTRE_DEPTH)
    if inside.size == 0:
        inside = np.flatnonzero(depth == depth.max())
    right = px.ravel()[inside] > 0
    n_foci = int(rng.integers(1, 5))
    bilateral = rng.uniform() < 0.45
    first_side = rng.uniform() < 0.5
    opacity = np.zeros_like(x, dtype=np.float64)
    for k in range(n_foci):
        side = first_side != (bilateral and k % 2 == 1)
        pool = inside[right == side] if (right == side).any() else inside
        weights = np.exp(2.5 * y.ravel()[pool].astype(np.float64))  # mostly the lower zones
        centre = int(pool[rng.choice(len(pool), p=weights / weights.sum())])
        focus = _focus(rng, x, y, centre, hila_film[int(side)])
        opacity = 1.0 - (1.0 - opacity) * (1.0 - focus)
    return opacity


def _focus(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, centre: int,
           hilum: np.ndarray) -> np.ndarray:
    size = x.shape[0]
    row, col = divmod(centre, size)
    cx, cy = float(x[row, col]), float(y[row, col])
    kind = int(rng.choice(3, p=_KIND_P))
    radius, density = rng.uniform(*_RADIUS[kind]), rng.uniform(*_DENSITY[kind])
    aspect, angle = rng.uniform(0.6, 1.6), rng.uniform(0.0, np.pi)
    harmonics, phases = rng.uniform(0.0, 0.25, size=4), rng.uniform(0.0, 2 * np.pi, size=4)
    fissure = rng.uniform(size=3)
    dx, dy = x - cx, y - cy
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / (radius * aspect)
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) * aspect / radius
    theta = np.arctan2(v, u)
    wobble = 1.0 + sum(h * np.cos((j + 2) * theta + p)
                       for j, (h, p) in enumerate(zip(harmonics, phases, strict=True)))
    envelope = smoothstep(1.1, 0.2, np.hypot(u, v) / wobble)  # ill-defined margins
    if kind == _CONSOLIDATION and fissure[0] < 0.5:  # a fissure bounds it with a sharp edge
        normal = 2 * np.pi * fissure[1]
        offset = -(0.1 + 0.4 * fissure[2]) * radius  # behind the centre, which stays inside
        envelope = envelope * smoothstep(-0.012, 0.012,
                                         np.cos(normal) * dx + np.sin(normal) * dy - offset)
    clumps = 0.8 * smooth_noise(rng, size, 10) + 0.6 * smooth_noise(rng, size, 20)
    threshold = {_CONSOLIDATION: -1.0, _PATCHY: rng.uniform(-0.4, 0.3), _GROUND_GLASS: -1.6}[kind]
    # Raised where needed so a patch always covers the centre: the lesion is never empty.
    clumps = clumps + max(0.0, threshold + 0.9 - float(clumps[row, col]))
    patches = smoothstep(threshold, threshold + 1.2, clumps)
    texture = np.clip(0.78 + 0.18 * smooth_noise(rng, size, 36), 0.3, 1.0)
    focus = density * envelope * patches * texture
    if kind == _CONSOLIDATION or (kind == _PATCHY and density > 0.55):
        focus = focus * (1.0 - 0.85 * np.clip(_bronchi(rng, size, cx, cy, radius, hilum), 0, 1))
    return focus


def _bronchi(rng: np.random.Generator, size: int, cx: float, cy: float, radius: float,
             hilum: np.ndarray) -> np.ndarray:
    """Air bronchograms: aerated bronchi, darker branching tubes running away from the hilum
    through the consolidation."""
    away = np.arctan2(cy - hilum[1], cx - hilum[0])
    root = np.array([[cx - 0.5 * radius * np.cos(away), cy - 0.5 * radius * np.sin(away)]])
    starts, ends, widths, _ = branches(
        rng, root, np.array([away + rng.uniform(-0.3, 0.3)]), np.array([0.45 * radius]),
        np.array([rng.uniform(0.014, 0.02)]), generations=3, taper=0.78)
    return tubes(size, starts, ends, widths, np.ones(len(widths)))
