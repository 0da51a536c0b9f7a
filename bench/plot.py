"""Bar chart of a benchmark run, baseline vs ours per stage: ``python -m bench.plot RESULTS_JSON OUT_PNG``."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(res: dict):
    """Three panels: view building (views/s), ResNet-18 pre-training step (clips/s), kNN monitor (seconds)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    v = res["views"]
    batches = sorted({k.split("/")[-1] for k in v if k.startswith("batched/")}, key=lambda b: int(b[1:]))
    best_ref = [max(r for k, r in v.items() if k.startswith("reference/") and k.endswith("/" + b)) for b in batches]
    ours = [v[f"batched/{b}"] for b in batches]
    x = range(len(batches))
    axes[0].bar([i - 0.2 for i in x], best_ref, 0.4, label="per-example chain (best DataLoader)")
    axes[0].bar([i + 0.2 for i in x], ours, 0.4, label="batched on device")
    axes[0].set(
        xticks=list(x),
        xticklabels=[f"batch {b[1:]}" for b in batches],
        yscale="log",
        ylabel="views / s",
        title="view building",
    )
    rows = [r for r in res["train_step"] if r["arch"] == "resnet18" and r["bf16"] and not r["compile"]]
    labels = [f"b{r['batch']}" + (" graphed" if r.get("graphed_views") else " eager") for r in rows]
    x = range(len(rows))
    axes[1].bar([i - 0.2 for i in x], [r["network_clips_s"] for r in rows], 0.4, label="network alone")
    axes[1].bar([i + 0.2 for i in x], [r["pipeline_clips_s"] for r in rows], 0.4, label="full pipeline")
    axes[1].axhline(3000, color="gray", ls="--", label="released pipeline (~3,000)")
    axes[1].set(xticks=list(x), xticklabels=labels, ylabel="clips / s", title="ResNet-18 SimCLR step, bf16")
    k = res["knn"]
    loop = k["loop_vs_vectorised"]
    per_clip = loop["loop_s"] / loop["clips"]
    n_clips = sum(s["clips"] for s in k["sets"].values())
    axes[2].bar(["per-clip loop\n(extrapolated)", "vectorised"], [per_clip * n_clips, k["val_plus_test_seconds"]])
    axes[2].set(yscale="log", ylabel="seconds", title=f"kNN monitor, val + test ({n_clips} clips)")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    fig.suptitle(f"{res['machine'].get('gpu', 'CPU')}, torch {res['machine']['torch']}, {res['date']}")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    plot(json.load(open(sys.argv[1]))).savefig(sys.argv[2], dpi=120, bbox_inches="tight")
