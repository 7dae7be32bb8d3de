"""Per-class training histories drawn as one figure per family: a method that reports values
named '<family>/c<k>' (SAM's per-(modality, class) margins, 'margin_image/c3') gets, in its run's
artifacts, training/<family>.png with one line per class over the optimizer steps, beside the
MLflow metric history of each ('epoch/<family>/c<k>'). Like every training value a method
reports, each point is the mean over the report interval ending at that step (an epoch by
default: methods.training.TrainingLoop)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

CLASS_KEY = re.compile(r"(?:epoch/)?(?P<family>[A-Za-z0-9_-]+)/c(?P<index>\d+)")  # family: a file name
FOLDER = "training"


def class_histories(rows: Iterable[tuple[str, float, int, int]]) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """Return {family: {class index: [(step, value), ...] in step order}} from history rows
    (key, value, step, timestamp ms); keys not of the '<family>/c<k>' form are left out."""
    found: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for key, value, step, _ in rows:
        match = CLASS_KEY.fullmatch(key)
        if match:
            found.setdefault(match["family"], {}).setdefault(int(match["index"]), []).append((int(step), float(value)))
    return {f: {c: sorted(points) for c, points in sorted(classes.items())} for f, classes in sorted(found.items())}


def plot_class_histories(rows: Iterable[tuple[str, float, int, int]], folder: Path, title: str) -> list[Path]:
    """Write training/<family>.png for each per-class family in `rows`; return the files written."""
    families = class_histories(rows)
    if not families:
        return []
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out = folder / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for family, classes in families.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        try:
            for index, points in classes.items():
                steps, values = zip(*points)
                ax.plot(steps, values, linewidth=1.0, marker="." if len(points) < 30 else None, label=f"class {index}")
            ax.set_xlabel("optimizer step (mean over the interval ending there)")
            ax.set_ylabel(family)
            ax.set_title(f"{title}: {family} per class", fontsize=9)
            if len(classes) <= 24:
                ax.legend(fontsize=6, ncol=3)
            fig.tight_layout()
            path = out / f"{family}.png"
            fig.savefig(path, dpi=150)
        finally:
            plt.close(fig)
        written.append(path)
    return written
