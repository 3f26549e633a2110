"""Per-epoch loss log (CSV) and its loss-curve picture, appended so a resumed run continues it."""

from __future__ import annotations

import csv
from pathlib import Path


class RunLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def rows(self) -> list[dict[str, float]]:
        if not self.path.exists():
            return []
        with self.path.open() as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def truncate_after(self, epoch: int) -> None:
        """Drop rows written after the checkpoint a run resumes from."""
        kept = [r for r in self.rows() if r["epoch"] <= epoch]
        self.path.unlink(missing_ok=True)
        for row in kept:
            self.append(row)

    def append(self, row: dict[str, float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def plot(self, out: str | Path, title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        if not rows:
            return
        keys = [k for k in rows[0] if k != "epoch"]
        fig, ax = plt.subplots(figsize=(7, 4))
        epochs = [r["epoch"] for r in rows]
        for key in keys:
            ax.plot(epochs, [r[key] for r in rows], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
