"""Before/after grids of the augmentations, from synthetic frames: docs/augmentations/*.png.

    python docs/make_aug_figures.py [--out docs/augmentations] [--size 128]

One PNG per ultrasound augmentation (lusjax.data.us_augment, that operation
alone at probability 1), one of the estimated fan geometry, and one of the
whole default view augmentation (lusjax.data.augment.augment_batch). Rows are
synthetic frames (convex and linear probes, data_prep.synthetic); the first
column is the input, the others are independent draws. Runs on CPU in ~1 min.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OPS = {  # file name -> (config key, title)
    "depth_zoom": ("zoom_prob", "depth zoom along the beams (x0.8-1.25 about the transducer face)"),
    "speckle": ("speckle_prob", "speckle re-synthesis (Rayleigh speckle on the smoothed envelope)"),
    "rib_shadow": ("shadow_prob", "rib shadow (dark band along the beams)"),
    "tgc": ("tgc_prob", "time-gain compensation (smooth random gain vs depth, +-4 dB)"),
    "fan_wedge": ("wedge_prob", "fan wedge (narrower sector)"),
}


def synthetic_frames(size: int, n_convex: int = 2, n_linear: int = 1, seed: int = 5) -> np.ndarray:
    """uint8 [N, size, size, 1]: a mid-clip frame of the first clips of each probe type."""
    from data_prep import synthetic

    want = {"convex": n_convex, "linear": n_linear}
    out = {"convex": [], "linear": []}
    for clip in synthetic.generate_clips(40, n_frames=4, size=size, seed=seed):
        if len(out[clip.probe]) < want[clip.probe]:
            out[clip.probe].append(clip.frames[2])
        if all(len(out[k]) == want[k] for k in want):
            break
    return np.stack(out["convex"] + out["linear"])[..., None]


def grid(
    rows: list[list[np.ndarray]], title: str, path: Path, col_titles=None, overlay=None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_r, n_c = len(rows), len(rows[0])
    fig, axes = plt.subplots(n_r, n_c, figsize=(1.6 * n_c, 1.6 * n_r + 0.35), squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(
                np.asarray(img)[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"
            )
            if overlay is not None:
                overlay(ax, r, c)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and col_titles:
                ax.set_title(col_titles[c], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.2, rect=(0, 0, 1, 0.9 if n_r == 1 else 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90)
    plt.close(fig)
    # Grayscale PNG unless something is drawn in colour: a third of the bytes.
    from PIL import Image

    img = Image.open(buf)
    img = img.convert("RGB" if overlay is not None else "L")
    img.save(path, optimize=True)
    print(f"{path} ({os.path.getsize(path) / 1024:.0f} KB)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "augmentations"))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--draws", type=int, default=4)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from lusjax.data import augment, us_augment

    out = Path(args.out)
    frames = synthetic_frames(args.size)
    x = jnp.asarray(frames, jnp.float32) / 255.0
    n = len(frames)
    cols = ["input"] + [f"draw {i + 1}" for i in range(args.draws)]

    u8 = jnp.asarray(frames)
    for name, (key, title) in OPS.items():
        cfg = augment.none_config()  # resize to the input size = identity
        cfg.us[key] = 1.0
        fn = jax.jit(lambda k, im, cfg=cfg: augment.augment_batch(k, im, None, cfg))
        draws = [fn(jax.random.key(100 + d), u8) for d in range(args.draws)]
        rows = [[x[i]] + [draws[d][i] for d in range(args.draws)] for i in range(n)]
        grid(rows, title, out / f"{name}.png", cols)

    # The estimated geometry (apex, edges) drawn over the input.
    geos = [us_augment.estimate_geometry(np, np.asarray(x[i]), 0.0) for i in range(n)]

    def draw_geometry(ax, r, c):
        g = geos[c]
        for th in (float(g.theta_l), float(g.theta_r)):
            r1 = float(g.r_max)
            ax.plot(
                [float(g.ax), float(g.ax) + r1 * np.sin(th)],
                [float(g.ay), float(g.ay) + r1 * np.cos(th)],
                "r-",
                lw=0.6,
            )
        t = np.linspace(float(g.theta_l), float(g.theta_r), 50)
        for rad in (float(g.r0), float(g.r_max)):
            ax.plot(float(g.ax) + rad * np.sin(t), float(g.ay) + rad * np.cos(t), "y-", lw=0.6)
        ax.set_xlim(-0.5, args.size - 0.5)
        ax.set_ylim(args.size - 0.5, -0.5)

    grid(
        [[x[i] for i in range(n)]],
        "fan geometry estimated per frame (apex, edges, r0, r_max)",
        out / "geometry.png",
        [f"frame {i + 1}" for i in range(n)],
        overlay=draw_geometry,
    )

    # The whole default view augmentation (generic ops after the US ones).
    cfg = augment.default_config()
    fn = jax.jit(lambda k, im: augment.augment_batch(k, im, None, cfg))
    draws = [fn(jax.random.key(200 + d), u8) for d in range(args.draws)]
    rows = [[x[i]] + [draws[d][i] for d in range(args.draws)] for i in range(n)]
    grid(
        rows,
        "default training view augmentation (augment.default_config())",
        out / "default_views.png",
        cols,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
