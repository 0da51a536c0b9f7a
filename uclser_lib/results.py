"""Results files of ``python -m uclser_lib evaluate``: summaries over seeds, merging reruns, tables.

A results file (``pretrained/results/results-<encoder>.json``) holds ``rows`` (one per init, stage, task and
seed), their ``summary`` (mean / std / n over seeds), ``encoder``, ``dataset``, ``epochs``, ``seeds`` and
``runs`` (how each part was made).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .runtime import shipped_dir

__all__ = [
    "BASELINES",
    "RESULTS_DIR",
    "gain_interval",
    "gains",
    "load_results",
    "markdown_table",
    "merge_results",
    "paired_summary",
    "scores_by_seed",
    "summarise",
]

RESULTS_DIR = shipped_dir() / "results"
#: What a pre-trained encoder is compared with: the same architecture at random initialisation (eval-mode
#: BatchNorm statistics as initialised; for fine-tuning, training from scratch), the same with its BatchNorm
#: statistics re-estimated on training patches (the fair random-features baseline), per-band statistics of the
#: log-mel (handcrafted), and the authors' published encoder.
BASELINES = ("random", "random_bn", "handcrafted", "released")


def score_key(row: dict) -> str:
    """The test score a results row is summarised by: ``test_balanced`` (balanced accuracy, %) for a single-label
    task, ``test_map`` (macro mAP, in [0, 1]) for a multi-label one."""
    return "test_balanced" if "test_balanced" in row else "test_map"


def summarise(
    rows: list[dict], keys=("arch", "init", "stage", "task", "fraction", "wrong_rate"), metric: str | None = None
) -> list[dict]:
    """Mean and sample std of ``metric`` (default: each row's :func:`score_key`) over seeds for each combination of
    ``keys`` present in the rows."""
    groups: dict[tuple, list[float]] = {}
    names = set()
    for r in rows:
        names.add(metric or score_key(r))
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r[metric or score_key(r)])
    if len(names) > 1:
        raise ValueError(f"summarise: the rows mix metrics {sorted(names)}; summarise one kind of task at a time")
    with np.errstate(invalid="ignore"):  # an infinite d' gives an infinite mean and a NaN std, without a warning
        return [
            dict(zip(keys, g), mean=float(np.mean(v)), std=float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n=len(v))
            for g, v in groups.items()
        ]


def merge_results(base: dict, update: dict) -> dict:
    """``base`` results (of ``python -m uclser_lib evaluate``) with the rows of ``update`` put in.

    A row of ``update`` replaces the ``base`` row of the same (arch, init, stage, task, seed); the curves
    (``label_efficiency``, ``label_noise``) of ``update`` replace those of ``base``; the summary is recomputed
    and ``runs`` (how each part was made) lists both; the validation ``selection`` of each rerun init replaces the
    earlier one. Encoder, dataset, epochs and the recipe (the protocol's grid and budget, when recorded; the seeds
    may differ) must agree, and every pre-trained row must come from one encoder file (``encoder_sha256``): a
    table mixing them would mislead.
    """
    for key in ("encoder", "dataset", "epochs"):
        if base.get(key) != update.get(key):
            raise ValueError(f"cannot merge results with different {key}: {base.get(key)!r} vs {update.get(key)!r}")
    if (base.get("recipe") or update.get("recipe")) and _recipe_key(base) != _recipe_key(update):
        raise ValueError(
            f"cannot merge results made with different recipes: {_recipe_key(base)!r} vs {_recipe_key(update)!r} "
            "(one table, one recipe: rerun every row with the same one)"
        )
    keys = ("arch", "init", "stage", "task", "seed")
    new = {tuple(r[k] for k in keys) for r in update["rows"]}
    rows = [r for r in base["rows"] if tuple(r[k] for k in keys) not in new] + update["rows"]
    made_by = {r.get("encoder_sha256") for r in rows if r["init"] == "pretrained"}
    if len(made_by) > 1:  # a new encoder file under the same name: every pre-trained row must be rerun with it
        raise ValueError(
            "cannot merge pre-trained rows made by different encoder files (sha256 "
            + ", ".join(sorted(str(m)[:12] for m in made_by))
            + "): rerun every pre-trained row with the new encoder"
        )
    picked = {tuple(e[k] for k in keys[:4]) for e in update.get("selection", [])}
    selection = [e for e in base.get("selection", []) if tuple(e[k] for k in keys[:4]) not in picked]
    merged = {**base, **{k: update[k] for k in ("label_efficiency", "label_noise") if k in update}}
    return merged | dict(
        rows=rows,
        selection=selection + update.get("selection", []),
        gains=[g for b in sorted({r["init"] for r in rows} - {"pretrained"}) for g in gains(rows, b)],
        summary=summarise(rows),
        seeds=sorted({r["seed"] for r in rows}),
        runs=base.get("runs", []) + update.get("runs", []),
    )


def _recipe_key(results: dict) -> dict | None:
    recipe = results.get("recipe")
    return None if recipe is None else {k: v for k, v in recipe.items() if k != "seeds"}


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
        if row.get("init") not in ("pretrained", *BASELINES):
            raise ValueError(f"summary row {row} has init {row.get('init')!r}, expected 'pretrained' or {BASELINES}")
        if row["init"] not in ("pretrained", "random"):
            continue
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


def gain_interval(pretrained: list[float], baseline: list[float], confidence: float = 0.95) -> dict:
    """Paired gain over seeds: ``pretrained[i] - baseline[i]`` (the same seed's split draws and classifier init).

    Returns ``mean``, ``std`` (sample std of the differences), ``n``, and the Student-t interval ``low`` /
    ``high`` of the mean gain at ``confidence`` (None with fewer than 2 seeds), and ``excludes_zero``. A score that
    is not finite (d' is +inf for a perfectly separated class) gives a NaN mean and no interval.
    """
    a, b = np.asarray(pretrained, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"gain_interval needs two equal-length score lists, got {len(a)} and {len(b)} scores")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):  # e.g. d' = +inf for a perfectly separated class
        return dict(mean=float("nan"), std=float("nan"), n=len(a), low=None, high=None, excludes_zero=False)
    d = a - b
    out = dict(mean=float(d.mean()), std=float(d.std(ddof=1)) if len(d) > 1 else 0.0, n=len(d), low=None, high=None)
    if len(d) > 1:
        from scipy.stats import t

        half = float(t.ppf(0.5 + confidence / 2, len(d) - 1) * out["std"] / np.sqrt(len(d)))
        out.update(low=out["mean"] - half, high=out["mean"] + half)
    out["excludes_zero"] = bool(out["low"] is not None and (out["low"] > 0 or out["high"] < 0))
    return out


def scores_by_seed(
    rows: list[dict], keys=("arch", "stage", "task"), metric: str | None = None
) -> dict[tuple, dict[str, dict[int, float]]]:
    """The rows' test score (``metric``, default :func:`score_key`: balanced accuracy %, or mAP) as ``{group: {init:
    {seed: score}}}``, a group being the row's values of ``keys`` (in that order), groups in order of first appearance.

    One row per (group, init, seed) is expected: a result file keeps only the selected setting's rows. Two rows of
    one seed (rows of several settings, or a ``keys`` that leaves a field out) raise ValueError instead of letting
    the later row hide the earlier one."""
    groups: dict[tuple, dict[str, dict[int, float]]] = {}
    for r in rows:
        group = tuple(r.get(k) for k in keys)
        by_seed = groups.setdefault(group, {}).setdefault(r["init"], {})
        if r["seed"] in by_seed:
            raise ValueError(
                f"two result rows for {dict(zip(keys, group))}, init {r['init']!r}, seed {r['seed']}: one row per "
                "seed expected (keep only the selected setting's rows, or group by more keys)"
            )
        by_seed[r["seed"]] = r[metric or score_key(r)]
    return groups


def gains(
    rows: list[dict], baseline: str, keys=("arch", "stage", "task"), confidence: float = 0.95, metric: str | None = None
) -> list[dict]:
    """Pre-trained vs ``baseline`` init for each combination of ``keys``: the paired :func:`gain_interval` over
    the seeds both have, with both means and stds (test ``metric``, default :func:`score_key`: balanced accuracy %,
    or mAP), in order of first appearance."""
    out = []
    for group, inits in scores_by_seed(rows, keys, metric).items():
        if "pretrained" not in inits or baseline not in inits:
            continue
        seeds = sorted(set(inits["pretrained"]) & set(inits[baseline]))
        a = [inits["pretrained"][s] for s in seeds]
        b = [inits[baseline][s] for s in seeds]

        def std(v):
            with np.errstate(invalid="ignore"):
                return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

        out.append(
            dict(zip(keys, group), baseline=baseline, seeds=seeds, pretrained=float(np.mean(a)), pretrained_std=std(a))
            | dict(baseline_mean=float(np.mean(b)), baseline_std=std(b))
            | {f"gain_{k}": v for k, v in gain_interval(a, b, confidence).items()}
        )
    return out
