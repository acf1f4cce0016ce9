"""docs/colormaps.png: diffscope's colormaps before and after they became matplotlib's tables.

"before" is diffscope 0.1's piecewise-linear maps (the stops below, interpolated and rounded as
engine/src/export/colormap.rs did); "after" is matplotlib's own table, which diffscope now draws
(engine/src/export/colormap/tables.rs); under each pair, the largest channel difference.

Run from the repository root: /work/venv/bin/python docs/make_colormap_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402

# diffscope 0.1's stops (engine/src/export/colormap.rs before the change).
OLD_STOPS = {
    "viridis": [0x440154, 0x472D7B, 0x3B528B, 0x2C728E, 0x21918C, 0x28AE80, 0x5EC962, 0xADDC30, 0xFDE725],
    "magma": [0x000004, 0x1C1044, 0x4F127B, 0x812581, 0xB5367A, 0xE55964, 0xFB8761, 0xFEC287, 0xFCFDBF],
    "turbo": [
        0x30123B, 0x4454C4, 0x4490FE, 0x1FC8DE, 0x29EFA2, 0x7EFF55, 0xC3F134, 0xF1CA3A, 0xFE922A,
        0xEA4F0D, 0x7A0403,
    ],
    "diverging": [0x3B4CC0, 0x8DB0FE, 0xDDDDDD, 0xF49A7B, 0xB40426],
    "gray": [0x000000, 0xFFFFFF],
}
MATPLOTLIB_NAME = {"diverging": "coolwarm"}


def old_map(name: str, xs: np.ndarray) -> np.ndarray:
    stops = np.array([[(h >> 16) & 255, (h >> 8) & 255, h & 255] for h in OLD_STOPS[name]], float)
    x = np.clip(xs, 0, 1) * (len(stops) - 1)
    i = np.minimum(np.floor(x).astype(int), len(stops) - 2)
    f = (x - i)[:, None]
    return np.round(stops[i] + f * (stops[i + 1] - stops[i])).astype(np.uint8)


def new_map(name: str, xs: np.ndarray) -> np.ndarray:
    return colormaps[MATPLOTLIB_NAME.get(name, name)](xs.astype(np.float32), bytes=True)[:, :3]


def main() -> None:
    xs = np.linspace(0, 1, 1024)
    names = list(OLD_STOPS)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.15 * len(names)), dpi=110)
    for ax, name in zip(axes, names):
        before, after = old_map(name, xs), new_map(name, xs)
        diff = np.abs(before.astype(int) - after.astype(int)).max(axis=1)
        strip = np.stack([before, after], axis=0)
        ax.imshow(strip, aspect="auto", interpolation="nearest", extent=(0, 1, 2, 0))
        ax.set_yticks([0.5, 1.5], ["before", "after"])
        ax.set_xticks([])
        worst = int(diff.argmax())
        ax.set_title(
            f"{name}: largest difference {diff.max()}/255 (at x = {xs[worst]:.2f})",
            fontsize=9,
            loc="left",
        )
    fig.tight_layout()
    out = Path(__file__).resolve().parent / "colormaps.png"
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
