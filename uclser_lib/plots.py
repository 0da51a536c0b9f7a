"""Figures of the course. Each function draws on a matplotlib Axes (or makes a Figure) and returns it."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .data import PATCH_FRAMES
from .features import DEFAULT_PARAMS, LogMelParams
from .runtime import dataset_choice, smoke_mode, work_root

__all__ = [
    "augmentation_gallery",
    "bars",
    "class_colours",
    "confusion_matrix",
    "dataset_overview",
    "downstream_curves",
    "embedding_map",
    "figures_dir",
    "init_curves",
    "label_efficiency_curve",
    "label_noise_curve",
    "mel_filterbank",
    "patches",
    "save_figure",
    "similarity_matrix",
    "spectrogram",
    "training_curves",
    "waveform",
]


def figures_dir() -> Path:
    """``figures/`` in :func:`~uclser_lib.runtime.work_root` (the checkout's; created if needed).

    In smoke mode ``build/figures-smoke/``, so tests never overwrite the committed figures. On another dataset
    than the course's (``UCLSER_DATASET``, :func:`~uclser_lib.runtime.dataset_choice`): ``build/figures-<its name>/``
    (``build/figures-smoke-<its name>/`` in smoke mode), so its figures never replace the course's either.
    """
    choice = dataset_choice()
    other = f"-{Path(choice).expanduser().name}" if choice not in (None, "course") else ""
    if smoke_mode():
        path = work_root() / f"build/figures-smoke{other}"
    else:
        path = work_root() / (f"build/figures{other}" if other else "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, name: str) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (150 dpi) and return the path."""
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def waveform(ax, y: np.ndarray, sr: int, title: str = ""):
    """A waveform (N,) sampled at ``sr`` Hz, time in seconds."""
    ax.plot(np.arange(len(y)) / sr, y, lw=0.5)
    ax.set(xlabel="time (s)", ylabel="amplitude", title=title, xlim=(0, len(y) / sr))
    return ax


def spectrogram(
    ax,
    x: np.ndarray,
    hop_s: float | None = None,
    ylabel: str = "mel band",
    title: str = "",
    vmin=None,
    vmax=None,
    colorbar: bool = False,
):
    """A time-first spectrogram (T, F) with time on the x axis (frames, or seconds when ``hop_s`` is given)."""
    extent = None if hop_s is None else (0, len(x) * hop_s, 0, x.shape[1])
    im = ax.imshow(
        x.T, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest"
    )
    ax.set(xlabel="frame" if hop_s is None else "time (s)", ylabel=ylabel, title=title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, pad=0.01)
    return ax


def mel_filterbank(ax, fbank: np.ndarray, params: LogMelParams = DEFAULT_PARAMS, every: int = 4):
    """Every ``every``-th triangle of a (n_freqs, n_mels) filterbank against frequency in Hz."""
    freqs = np.linspace(0, params.sr / 2, fbank.shape[0])
    for m in range(0, fbank.shape[1], every):
        ax.plot(freqs, fbank[:, m], lw=0.8)
    ax.set(
        xlabel="frequency (Hz)",
        ylabel="weight",
        xlim=(0, params.sr / 2),
        title=f"{fbank.shape[1]} Slaney mel bands, {params.fmin:g}-{params.fmax:g} Hz (every {every}th shown)",
    )
    return ax


def patches(ax, clip: np.ndarray, starts, length: int = PATCH_FRAMES, title: str = "", color: str = "cyan"):
    """A clip (T, F) with the patches starting at ``starts`` (frames) outlined."""
    spectrogram(ax, clip, title=title)
    for k, s in enumerate(starts):
        ax.add_patch(
            plt.Rectangle(
                (s - 0.5, 0.5 + 2 * (k % 2)), length, clip.shape[1] - 2 - 4 * (k % 2), fill=False, ec=color, lw=1.5
            )
        )
    return ax


def dataset_overview(lengths_s: np.ndarray, labels: np.ndarray, clean: np.ndarray, classes: list[str], title: str = ""):
    """Clip-length histogram and per-class counts of clean vs noisy clips; returns the Figure."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 2]})
    a.hist(lengths_s, bins=np.logspace(np.log10(max(lengths_s.min(), 0.1)), np.log10(lengths_s.max()), 30))
    a.set(xscale="log", xlabel="clip length (s)", ylabel="clips", title="clip lengths")
    n = len(classes)
    counts = [np.bincount(labels[m], minlength=n) for m in (clean, ~clean)]
    x = np.arange(n)
    b.bar(x, counts[1], label="noisy (web labels)", color="tab:orange")
    b.bar(x, counts[0], bottom=counts[1], label="clean (verified)", color="tab:blue")
    b.set_xticks(x, classes, rotation=60, ha="right", fontsize=8)
    b.set(ylabel="clips", title="clips per class")
    b.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def augmentation_gallery(panels, ncols: int = 6, vmin=None, vmax=None):
    """Spectrogram panels on one colour scale, each above its change from a "before" patch; returns the Figure.

    ``panels``: (title, patch (T, F), before (T, F) or None) triples. Below each patch, patch - before on
    a symmetric red-blue scale of its own (its range in the title); nothing when before is None.
    ``vmin`` / ``vmax`` default to the extremes over all patches.
    """
    nrows = -(-len(panels) // ncols)
    fig = plt.figure(figsize=(2.5 * ncols + 1, 3.5 * nrows), layout="constrained")
    axes = fig.subplots(2 * nrows, ncols, squeeze=False, gridspec_kw={"height_ratios": [1, 0.6] * nrows})
    vmin = min(float(p.min()) for _, p, _ in panels) if vmin is None else vmin
    vmax = max(float(p.max()) for _, p, _ in panels) if vmax is None else vmax
    for ax in axes.ravel():
        ax.axis("off")
    for k, (title, patch, before) in enumerate(panels):
        top, bottom = axes[2 * (k // ncols), k % ncols], axes[2 * (k // ncols) + 1, k % ncols]
        top.axis("on")
        spectrogram(top, patch, title=title, vmin=vmin, vmax=vmax, ylabel="mel band" if k % ncols == 0 else "")
        top.set_xlabel("")
        top.title.set_fontsize(9)
        if before is None:
            continue
        bottom.axis("on")
        change = patch - before
        lim = max(float(np.abs(change).max()), 1e-6)
        bottom.imshow(
            change.T, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest"
        )
        bottom.set_title(f"change (±{lim:.2g})", fontsize=8)
        bottom.set(xlabel="frame", ylabel="mel band" if k % ncols == 0 else "")
    fig.colorbar(axes[0, 0].images[0], ax=axes[0::2].ravel().tolist(), shrink=0.6, label="log10 mel energy")
    return fig


def similarity_matrix(ax, sim: np.ndarray, n: int, title: str = "cosine similarity / τ"):
    """The (2N, 2N) similarity matrix of NT-Xent with the positives of each anchor outlined (views 1 then views 2)."""
    im = ax.imshow(sim, cmap="viridis")
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    labels = [f"{k}a" for k in range(n)] + [f"{k}b" for k in range(n)]
    ax.set_xticks(range(2 * n), labels)
    ax.set_yticks(range(2 * n), labels)
    ax.set(title=title, xlabel="candidate", ylabel="anchor")
    ax.figure.colorbar(im, ax=ax, pad=0.01)
    return ax


def training_curves(history: list[dict], title: str = ""):
    """Loss per epoch and, where measured, kNN balanced accuracy on val and test; returns the Figure."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.5))
    epochs = [h["epoch"] for h in history]
    a.plot(epochs, [h["loss"] for h in history])
    a.set(xlabel="epoch", ylabel="NT-Xent loss", title="pre-training loss")
    for split in ("val", "test"):
        pts = [(h["epoch"], h[f"{split}_knn_balanced"]) for h in history if f"{split}_knn_balanced" in h]
        if pts:
            b.plot(*zip(*pts), marker="o", ms=3, label=split)
    b.set(xlabel="epoch", ylabel="balanced accuracy (%)", title="kNN monitor")
    if b.lines:
        b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def bars(
    ax,
    groups: list[str],
    series: dict[str, list[float]],
    errors: dict[str, list[float]] | None = None,
    chance: float | None = None,
    ylabel: str = "test balanced accuracy (%)",
    title: str = "",
):
    """Grouped bars: one group per entry of ``groups``, one bar per series (name -> one value per group), each
    value written above its bar; ``errors`` (same shape) draws ± error bars, ``chance`` a dotted line."""
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        err = None if errors is None else errors.get(name)
        rects = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, yerr=err, capsize=3, label=name)
        ax.bar_label(rects, fmt="%.1f", fontsize=7, padding=2)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    many = len(groups) > 6
    ax.set_xticks(x, groups, rotation=60 if many else 0, ha="right" if many else "center", fontsize=8 if many else None)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 105))
    if len(series) > 1 or chance is not None:
        ax.legend(fontsize=8)
    return ax


def downstream_curves(histories: dict[str, list[dict]], title: str = "", levels: dict[str, float] | None = None):
    """Supervised runs (``DownstreamResult.history`` by run name): training loss and balanced accuracy per epoch.

    Val is dashed; test is a solid line where it was scored every epoch, a dot where it was scored at the selected
    epoch only (``test_every_epoch=False``), and the legend and title say which; one colour per run, the selected
    (best validation) epoch circled. ``levels`` (label -> balanced accuracy %) draws dotted horizontal reference
    lines on the accuracy panel, e.g. the score of the probe a fine-tuning run starts from. Returns the Figure.
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.5))
    every = True
    for k, (name, history) in enumerate(histories.items()):
        color = f"C{k}"
        epochs = [h["epoch"] for h in history]
        a.plot(epochs, [h["loss"] for h in history], color=color, label=name)
        b.plot(epochs, [h["val_balanced"] for h in history], color=color, ls="--", label=f"{name}: val")
        scored = [h for h in history if "test_balanced" in h]  # every epoch, or the selected one only
        once = len(scored) == 1 and len(history) > 1
        every = every and not once
        label = f"{name}: test at the selected epoch" if once else f"{name}: test"
        b.plot(
            [h["epoch"] for h in scored],
            [h["test_balanced"] for h in scored],
            color=color,
            marker="o" if once else None,
            ms=3.5,
            label=label,
        )
        best = max(history, key=lambda h: h["val_balanced"])  # the first best epoch, as the selection keeps it
        b.plot(best["epoch"], best["test_balanced"], "o", color=color, ms=6, mfc="none")
    for j, (label, level) in enumerate((levels or {}).items()):
        b.axhline(level, color="0.35", ls=":", lw=1.5 - 0.4 * j, label=label)
    a.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    a.legend(fontsize=8)
    shown = "val (dashed), test (solid)" if every else "val (dashed), test at the selected epoch (dot)"
    b.set(xlabel="epoch", ylabel="balanced accuracy (%)", title=f"{shown}; o = selected epoch")
    if every:
        b.legend(fontsize=7, ncol=2)
    else:  # beside the panel: a dot inside it may lie where a legend would go
        b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def init_curves(
    ax,
    summary: list[dict],
    x: str,
    xlabel: str,
    log_x: bool = False,
    tick_labels: dict | None = None,
    chance: float | None = None,
    title: str = "",
):
    """Test balanced accuracy (mean +- std over seeds) against ``x``, one line per init.

    ``summary``: :func:`~uclser_lib.results.summarise` rows with init, ``x``, mean, std. ``tick_labels``
    (x value -> extra text) labels the ticks; ``chance`` draws a dotted line.
    """
    for init in sorted({r["init"] for r in summary}):
        rows = sorted((r for r in summary if r["init"] == init), key=lambda r: r[x])
        ax.errorbar(
            [r[x] for r in rows],
            [r["mean"] for r in rows],
            yerr=[r["std"] for r in rows],
            marker="o",
            capsize=3,
            label=init,
        )
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    values = sorted({r[x] for r in summary})
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(values, [f"{v:g}" + (f"\n({tick_labels[v]})" if tick_labels else "") for v in values])
    ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel="test balanced accuracy (%)", title=title)
    ax.legend()
    return ax


def label_efficiency_curve(
    ax,
    summary: list[dict],
    n_train: dict[float, int] | None = None,
    chance: float | None = None,
    title: str = "",
    n_classes: int | None = None,
):
    """:func:`init_curves` of ``label_efficiency``'s summary against the amount of clean labels.

    With ``n_train`` (fraction -> training clips) and ``n_classes``, the x axis is **clips per class** (log axis),
    each tick naming the fractions that gave it: at least one clip per class is kept, so several small fractions
    can give the very same clips, and their points then share one x. Otherwise the x axis is the fraction (log
    axis), ``n_train`` labelling its ticks.
    """
    if not (n_train and n_classes):
        ticks = {f: f"{n} clips" for f, n in n_train.items()} if n_train else None
        return init_curves(ax, summary, "fraction", "fraction of the clean training labels", True, ticks, chance, title)
    per_class = {f: n_train[f] / n_classes for f in n_train}
    rows = [dict(r, per_class=per_class[r["fraction"]]) for r in summary if r["fraction"] in per_class]
    fractions: dict[float, list[float]] = {}
    for f in sorted(per_class):
        fractions.setdefault(per_class[f], []).append(f)
    ticks = {x: ", ".join(f"{100 * f:g} %" for f in fs) for x, fs in fractions.items()}
    return init_curves(
        ax,
        rows,
        "per_class",
        "clean training clips per class (fractions of the clean labels)",
        True,
        ticks,
        chance,
        title,
    )


def label_noise_curve(ax, summary: list[dict], chance: float | None = None, title: str = ""):
    """:func:`init_curves` of ``label_noise``'s summary against the wrong-label rate of the training labels."""
    return init_curves(ax, summary, "wrong_rate", "fraction of wrong training labels", chance=chance, title=title)


def class_colours(classes: list[str], pairs=()) -> dict[str, tuple]:
    """One colour per class (tab20), chosen so that the classes of each confusable pair (``pairs``: (a, b) names)
    look as different as possible: classes with most confusable neighbours choose first, each taking the free
    colour farthest (RGB distance) from its neighbours' colours. Beyond 20 classes the colours repeat."""
    palette = [plt.get_cmap("tab20")(k) for k in (*range(0, 20, 2), *range(1, 20, 2))]  # dark hues first
    neighbours = {c: set() for c in classes}
    for a, b in pairs:
        if a in neighbours and b in neighbours:
            neighbours[a].add(b)
            neighbours[b].add(a)
    colours: dict[str, tuple] = {}
    for c in sorted(classes, key=lambda c: (-len(neighbours[c]), classes.index(c))):
        free = [p for p in palette if p not in colours.values()] or palette
        taken = [np.array(colours[n][:3]) for n in neighbours[c] if n in colours]
        colours[c] = max(free, key=lambda p: min((np.linalg.norm(np.array(p[:3]) - t) for t in taken), default=0.0))
    return colours


def embedding_map(
    ax,
    xy: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    title: str = "",
    legend: bool = True,
    pairs=(),
    names: bool = True,
):
    """A 2-D map (N, 2) of clips coloured by class.

    Colours come from :func:`class_colours`, so the classes of each confusable pair in ``pairs`` (e.g.
    ``coursedata.CONFUSABLE_PAIRS``) get clearly different colours. ``names`` writes each class's name at the
    median of its points (its centre), on a box of the class's colour; ``legend`` adds a
    legend on the right.
    """
    colours = class_colours(list(classes), pairs)
    labels = np.asarray(labels)
    for c, name in enumerate(classes):
        m = labels == c
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=10, color=colours[name], marker="o^s"[(c // 20) % 3], label=name)
    if names:
        for c, name in enumerate(classes):
            m = labels == c
            if m.any():
                x, y = np.median(xy[m], axis=0)
                ax.text(
                    x,
                    y,
                    name,
                    fontsize=7,
                    ha="center",
                    va="center",
                    bbox=dict(boxstyle="round,pad=0.15", facecolor=colours[name], alpha=0.75, linewidth=0),
                )
    ax.set(title=title, xticks=[], yticks=[])
    if legend:
        ax.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return ax


def confusion_matrix(ax, confusion: np.ndarray, classes: list[str], title: str = ""):
    """A (C, C) confusion matrix of counts (rows = true class), shown as % of each true class."""
    totals = confusion.sum(1, keepdims=True)
    pct = 100.0 * confusion / np.maximum(totals, 1)
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=90, fontsize=7)
    ax.set_yticks(ticks, classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.figure.colorbar(im, ax=ax, pad=0.01, label="% of the true class")
    return ax


# ----------------------------------------------------------------------------------------------------------------------
# Figures of the lessons (notebooks 01-03)


def length_histograms(
    ax, lengths_s, label: str, reference_s=None, reference: str = "FSDnoisy18k", published: dict | None = None
):
    """Clip-length histograms (share of clips, log axis 0.3-30 s) of ``lengths_s`` and, when given, ``reference_s``.

    Without ``reference_s``, ``published`` (keys ``min_s``, ``max_s``, ``mean_s``) draws the reference's published
    range (shaded) and mean (dashed line): facts, not a histogram. Each mean is marked by a dashed line.
    """
    lengths_s = np.asarray(lengths_s, dtype=np.float64)
    lo = min(0.25, float(lengths_s.min()))
    hi = max(32.0, float(lengths_s.max()) * 1.05)
    bins = np.logspace(np.log10(lo), np.log10(hi), 36)
    series = [(lengths_s, label, "tab:blue")]
    if reference_s is not None:
        series.append((np.asarray(reference_s, dtype=np.float64), reference, "tab:orange"))
    for x, name, colour in series:
        ax.hist(x, bins, weights=np.full(len(x), 100.0 / len(x)), alpha=0.55, color=colour, label=name)
        ax.axvline(x.mean(), color=colour, ls="--", lw=1.2, label=f"{name}: mean {x.mean():.1f} s")
    if reference_s is None and published:
        ax.axvspan(
            published["min_s"],
            published["max_s"],
            color="tab:orange",
            alpha=0.12,
            label=f"{reference}: published range {published['min_s']:g}-{published['max_s']:g} s",
        )
        ax.axvline(
            published["mean_s"],
            color="tab:orange",
            ls="--",
            lw=1.2,
            label=f"{reference}: published mean {published['mean_s']:g} s",
        )
    ax.set(xscale="log", xlabel="clip length (s)", ylabel="% of clips")
    ax.legend(fontsize=7, loc="upper left")
    return ax


def class_noise_bars(ax, classes: list[str], shares, overall: float | None = None, title: str = ""):
    """One bar per class: the share (%) of its noisy-subset labels that are wrong or out of vocabulary;
    ``overall`` (%) a dotted line."""
    x = np.arange(len(classes))
    ax.bar(x, shares, color="tab:red", alpha=0.75)
    if overall is not None:
        ax.axhline(overall, color="black", ls=":", lw=1, label=f"all classes: {overall:.0f} %")
        ax.legend(fontsize=8)
    ax.set_xticks(x, classes, rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="% of the class's noisy labels", title=title)
    return ax


def change_keys(fig, label: str = "after − before\n(log10 units)"):
    """A colour bar under every change panel of :func:`augmentation_gallery` (red: the step raised the value, blue:
    lowered it), each with that panel's own range. Returns the Figure."""
    for ax in fig.axes:
        if ax.images and ax.images[0].get_cmap().name == "RdBu_r":
            bar = fig.colorbar(ax.images[0], ax=ax, orientation="horizontal", shrink=0.8, aspect=15, pad=0.02)
            bar.ax.tick_params(labelsize=6)
            bar.set_label(label, fontsize=6)
    return fig


def live_pretraining(history: list[dict], start: dict, milestones, key: str, ranks: dict | None = None, title=""):
    """A short pre-training run: loss and kNN balanced accuracy (``key`` of the history rows; ``start``: the same
    metrics at epoch 0, before any step) per epoch with the learning-rate drops (``milestones``) marked, and, with
    ``ranks`` (name -> ranks of the positive among the 2N - 1 candidates), their histograms. Returns the Figure."""
    fig, axes = plt.subplots(1, 3 if ranks else 2, figsize=(15 if ranks else 10, 3.4), layout="constrained")
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h["loss"] for h in history], marker="o", ms=3)
    axes[0].set(xlabel="epoch", ylabel="NT-Xent loss", title="training loss")
    pts = [(0, start[key])] + [(h["epoch"], h[key]) for h in history if key in h]
    axes[1].plot(*zip(*pts), marker="o", ms=3, color="tab:green")
    axes[1].axhline(start[key], color="gray", ls=":", lw=1, label="random init (epoch 0)")
    axes[1].set(xlabel="epoch", ylabel="kNN balanced accuracy (%)", title="kNN monitor, encoder embedding")
    for ax in axes[:2]:
        for m in milestones:
            ax.axvline(m, color="tab:red", ls="--", lw=0.8)
    axes[1].plot([], [], color="tab:red", ls="--", lw=0.8, label="learning rate × 0.1")
    axes[1].legend(fontsize=8)
    if ranks:
        top = max(int(max(r.max() for r in ranks.values())), 2)
        bins = np.arange(0.5, top + 1.5)
        for name, r in ranks.items():
            axes[2].hist(np.asarray(r), bins, alpha=0.6, label=f"{name}: median {float(np.median(r)):g}")
        axes[2].set(
            xlabel="rank of the positive (1: the most similar candidate)", ylabel="anchors", title="held-out batch"
        )
        axes[2].legend(fontsize=8)
    fig.suptitle(title)
    return fig


__all__ += ["change_keys", "class_noise_bars", "length_histograms", "live_pretraining"]
