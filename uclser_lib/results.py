"""Results files of ``python -m uclser_lib evaluate``: summaries over seeds, merging reruns, tables.

A results file (``pretrained/results/results-<encoder>.json``) holds ``rows`` (one per init, stage, task and
seed), their ``summary`` (mean / std / n over seeds), ``encoder``, ``dataset``, ``epochs``, ``seeds`` and
``runs`` (how each part was made).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .runtime import REPO_ROOT

__all__ = ["RESULTS_DIR", "load_results", "markdown_table", "merge_results", "paired_summary", "summarise"]

RESULTS_DIR = REPO_ROOT / "pretrained" / "results"


def summarise(rows: list[dict], keys=("arch", "init", "stage", "task", "fraction", "wrong_rate")) -> list[dict]:
    """Mean and sample std of ``test_balanced`` over seeds for each combination of ``keys`` present in the rows."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r["test_balanced"])
    return [
        dict(zip(keys, g), mean=float(np.mean(v)), std=float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n=len(v))
        for g, v in groups.items()
    ]


def merge_results(base: dict, update: dict) -> dict:
    """``base`` results (of ``python -m uclser_lib evaluate``) with the rows of ``update`` put in.

    A row of ``update`` replaces the ``base`` row of the same (arch, init, stage, task, seed); the curves
    (``label_efficiency``, ``label_noise``) of ``update`` replace those of ``base``; the summary is recomputed
    and ``runs`` (how each part was made) lists both. Encoder, dataset and epochs must agree: a table mixing
    them would mislead.
    """
    for key in ("encoder", "dataset", "epochs"):
        if base.get(key) != update.get(key):
            raise ValueError(f"cannot merge results with different {key}: {base.get(key)!r} vs {update.get(key)!r}")
    keys = ("arch", "init", "stage", "task", "seed")
    new = {tuple(r[k] for k in keys) for r in update["rows"]}
    rows = [r for r in base["rows"] if tuple(r[k] for k in keys) not in new] + update["rows"]
    merged = {**base, **{k: update[k] for k in ("label_efficiency", "label_noise") if k in update}}
    return merged | dict(
        rows=rows,
        summary=summarise(rows),
        seeds=sorted({r["seed"] for r in rows}),
        runs=base.get("runs", []) + update.get("runs", []),
    )


def load_results(encoder: str, folder=None) -> dict:
    """``<folder>/results-<encoder>.json`` (default ``pretrained/results/``), e.g. ``load_results("course-resnet18")``.

    Keys: ``rows`` (one per init, stage, task and seed), ``summary`` (mean / std / n over seeds), ``encoder``,
    ``dataset``, ``epochs``, ``seeds``.
    """
    path = Path(folder or RESULTS_DIR) / f"results-{encoder}.json"
    if not path.is_file():
        found = sorted(p.stem.removeprefix("results-") for p in path.parent.glob("results-*.json"))
        raise FileNotFoundError(f"{path}: no results for encoder {encoder!r} (found: {found})")
    results = json.loads(path.read_text())
    missing = {"rows", "summary"} - set(results)
    if missing:
        raise ValueError(f"{path}: not a results file of `python -m uclser_lib evaluate` (missing {sorted(missing)})")
    return results


def paired_summary(summary: list[dict]) -> list[dict]:
    """Pre-trained vs random init side by side, from :func:`~uclser_lib.results.summarise` rows.

    One dict per (arch, stage, task, fraction) present with both inits: those keys plus ``pretrained`` /
    ``pretrained_std``, ``random`` / ``random_std`` (test balanced accuracy %, mean and std over ``n`` seeds)
    and ``gain`` = pretrained - random (points), in the order of first appearance.
    """
    keys = ("arch", "stage", "task", "fraction")
    groups: dict[tuple, dict] = {}
    for row in summary:
        if row.get("init") not in ("pretrained", "random"):
            raise ValueError(f"summary row {row} has init {row.get('init')!r}, expected 'pretrained' or 'random'")
        groups.setdefault(tuple(row.get(k) for k in keys), {})[row["init"]] = row
    out = []
    for group, inits in groups.items():
        if len(inits) == 2:
            pre, rnd = inits["pretrained"], inits["random"]
            out.append(
                dict(
                    zip(keys, group),
                    pretrained=pre["mean"],
                    pretrained_std=pre["std"],
                    random=rnd["mean"],
                    random_std=rnd["std"],
                    n=min(pre["n"], rnd["n"]),
                    gain=pre["mean"] - rnd["mean"],
                )
            )
    return out


def markdown_table(header: list[str], rows: list[list], digits: int = 1) -> str:
    """A Markdown table; float cells are written with ``digits`` decimals (for ``IPython.display.Markdown``)."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError(
            f"every row must have {len(header)} cells (the header's), got lengths {[len(r) for r in rows]}"
        )

    def cell(v):
        return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
