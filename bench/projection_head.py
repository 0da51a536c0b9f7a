"""Does the projection head discard what the augmentations change? Issue #23 part 2, measured on a shipped encoder.

SimCLR's "why" for evaluating the layer before the projection head (h) rather than the head's output g(h): the
head, trained to make two views agree, discards what differs between them (what the augmentations change),
some of which a downstream task needs. Two measurements, both on the frozen shipped encoder and its shipped head:

1. Linear probes on h and on g(h) (``downstream.linear_eval``'s protocol: ``LinearEvalConfig`` defaults, ``epochs``
   epochs with ``lr_milestones(epochs)``, the test set scored at the best validation epoch), on the noisy-label
   and the clean-label task, one run per probe seed; the paired difference h - g(h) with its Student-t interval
   (``results.gain_interval``). g(h) is ``analysis.ProjectedEncoder``; both go through the embedding disk cache.
2. What the head discards: every evaluation patch of the test set (clips never pre-trained on) gets one
   augmentation with a known, drawn strength: the compander factor c ~ U(0.75, 1) (``augment.Compander``'s own
   draw and arithmetic), a gain g ~ U(-G, G) added to the log10 mel (the power times 10**g; not a step of the
   course's recipe: a control), or mix-back with lambda ~ U(0, 0.05) and a patch of another test clip as background
   (``views.other_clips``, ``views.random_starts``, ``mixback.mix_back``). A ridge regression
   (``analysis.ridge_probe``: standardised features, penalty chosen on a validation split) predicts the strength
   from h and from g(h) of the augmented patch ("view"), and from the change h(x') - h(x), g(x') - g(x) ("pair");
   its R^2 on held-out clips, for ``--seeds`` splits of the test clips into 60/20/20 % (``analysis.group_split``).
   The hypothesis predicts R^2(h) > R^2(g(h)).

    OMP_NUM_THREADS=1 .venv/bin/python bench/projection_head.py --seeds 0 1 2

writes ``bench/results-projection-head.json`` (atomically); ``--smoke`` (or ``UCLSER_SMOKE=1``) shrinks everything
to seconds and writes to a temporary folder unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from uclser_lib import analysis, datasets, pretrained
from uclser_lib.augment import Compander
from uclser_lib.downstream import LinearEvalConfig, linear_eval, lr_milestones, subsample_per_class, task_splits
from uclser_lib.embed import cached_eval_patches
from uclser_lib.mixback import mix_back
from uclser_lib.models import Encoder
from uclser_lib.results import gain_interval
from uclser_lib.runtime import PAPER_SEED, checkout_root, describe_machine, smoke_mode, write_atomic
from uclser_lib.sampling import uniform
from uclser_lib.views import eval_patches, gather_patches, other_clips, random_starts

DEFAULT_OUT = checkout_root() / "bench" / "results-projection-head.json"
FACTORS = ("compander", "gain", "mixback")
REPS = ("h", "g(h)")
PROBE_REPS = ("h", "g(h)", "g(h)*s")  # g(h)*s: g(h) scaled to the mean norm of h


def _mean_std(v) -> dict:
    v = np.asarray(v, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


class _Scaled(Encoder):
    """``scale`` times another encoder's embedding: g(h) (unit norm) at the mean norm of h, so that one SGD protocol
    (the same lr, weight decay and steps) meets both at the same feature scale."""

    def __init__(self, inner: Encoder, scale: float):
        super().__init__()
        self.inner, self.embedding_dim = inner.eval(), inner.embedding_dim
        self.register_buffer("scale", torch.tensor(float(scale)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.embed(x) * self.scale


def probes(encoder, projected, mean, std, splits, seeds, epochs, disk_cache, progress) -> tuple[list, list, float]:
    """Rows (task, rep, seed, test/val balanced and top-1, best epoch), their summary per task, and the scale
    (mean norm of h over the noisy task's training patches) of the rep "g(h)*s"."""
    rows, reps = [], {"h": encoder, "g(h)": projected}
    caches = {rep: {} for rep in PROBE_REPS}
    scale = None
    for task in ("noisy", "clean"):
        train, val, test = task_splits(splits, task)
        for seed in seeds:
            cfg = LinearEvalConfig(epochs=epochs, milestones=lr_milestones(epochs), seed=seed, test_every_epoch=False)
            for rep in PROBE_REPS:
                if rep == "g(h)*s":
                    if scale is None:
                        h_train, _ = cached_eval_patches(
                            encoder, splits["pretrain"].clips, mean, std, "cpu", cache=disk_cache
                        )
                        scale = float(h_train.norm(dim=1).mean())
                        reps[rep] = _Scaled(projected, scale)
                    # the g(h) embeddings already made, scaled: linear_eval's embedding_cache entries are
                    # (kept tensors, embeddings, clip index); a set missing there is embedded by _Scaled itself
                    caches[rep] = {k: (v[0], v[1] * scale, v[2]) for k, v in caches["g(h)"].items()}
                res = linear_eval(
                    reps[rep],
                    mean,
                    std,
                    train,
                    val,
                    test,
                    cfg,
                    device="cpu",
                    progress=progress,
                    embedding_cache=caches[rep],
                    disk_cache=disk_cache,
                )
                rows.append(
                    dict(task=task, rep=rep, seed=seed, best_epoch=res.best_epoch)
                    | {f"test_{k}": float(res.test[k]) for k in ("balanced", "top1")}
                    | {f"val_{k}": float(res.val[k]) for k in ("balanced", "top1")}
                )
                print(
                    f"probe {task:5s} seed {seed} {rep:6s}: test balanced {rows[-1]['test_balanced']:.1f}%, "
                    f"best epoch {res.best_epoch}",
                    flush=True,
                )
    summary = []
    for task in ("noisy", "clean"):
        score = {rep: [r["test_balanced"] for r in rows if (r["task"], r["rep"]) == (task, rep)] for rep in PROBE_REPS}
        summary.append(
            dict(task=task, h=_mean_std(score["h"]), gh=_mean_std(score["g(h)"]), gh_scaled=_mean_std(score["g(h)*s"]))
            | {"h_minus_gh": gain_interval(score["h"], score["g(h)"])}
            | {"h_minus_gh_scaled": gain_interval(score["h"], score["g(h)*s"])}
        )
    return rows, summary, scale


@torch.no_grad()
def augmented_patches(test, factor: str, gain_range: float, seed: int, chunk: int = 512):
    """Every evaluation patch of ``test`` with one augmentation ``factor`` of a drawn strength, in chunks:
    yields (augmented patches (B, 101, F) log10 mel, strengths (B,)). The draws come from one generator seeded
    by ``seed``, in patch order."""
    patches, clip_index = eval_patches(test.clips)
    gen = torch.Generator().manual_seed(seed)
    compander = Compander(0.75)
    for a in range(0, len(patches), chunk):
        x, clips = patches[a : a + chunk], clip_index[a : a + chunk]
        if factor == "compander":
            params = compander.sample_params(x, gen)
            yield compander.apply_params(x, params), params["c"]
        elif factor == "gain":
            g = uniform((len(x),), gen, x.device, -gain_range, gain_range)
            yield x + g[:, None, None], g
        elif factor == "mixback":
            back = other_clips(clips, len(test), gen)[:, 0]
            background = gather_patches(test.clips, back, random_starts(test.clips.lengths[back], gen))
            lam = uniform((len(x),), gen, x.device, 0.0, 0.05)
            yield mix_back(x, background, lam), lam
        else:
            raise ValueError(f"unknown factor {factor!r}; expected one of {FACTORS}")


@torch.no_grad()
def factor_probes(encoder, head, mean, std, test, seeds, gain_range, draw_seed, disk_cache, progress):
    """R^2 of ridge probes predicting each factor's strength from h and g(h); rows and summary."""
    clean_h, clip_index = cached_eval_patches(encoder, test.clips, mean, std, "cpu", cache=disk_cache)
    clean = {"h": clean_h, "g(h)": head(clean_h)}
    clip_index = clip_index.numpy()
    rows, strengths = [], {}
    for k, factor in enumerate(FACTORS):
        feats = {"h": [], "g(h)": []}
        ys = []
        n = len(clip_index)
        bar = tqdm(total=n, desc=f"embedding {factor}", disable=not progress)
        for x, y in augmented_patches(test, factor, gain_range, draw_seed + k):
            for xb, yb in zip(x.split(256), y.split(256)):
                h = encoder.embed(((xb - mean) / std)[:, None])
                feats["h"].append(h)
                feats["g(h)"].append(head(h))
                ys.append(yb)
                bar.update(len(xb))
        bar.close()
        y = torch.cat(ys).double().numpy()
        strengths[factor] = {"min": float(y.min()), "max": float(y.max()), "n": len(y)}
        for rep in REPS:
            view = torch.cat(feats[rep])
            for kind, f in (("view", view), ("pair", view - clean[rep])):
                f = f.double().numpy()
                for seed in seeds:
                    tr, va, te = analysis.group_split(clip_index, seed)
                    out = analysis.ridge_probe(f[tr], y[tr], f[va], y[va], f[te], y[te])
                    rows.append(
                        dict(factor=factor, rep=rep, features=kind, seed=seed, n_test=len(te))
                        | {k2: out[k2] for k2 in ("penalty", "train_r2", "val_r2", "test_r2")}
                    )
        for kind in ("view", "pair"):
            got = {
                rep: np.mean(
                    [r["test_r2"] for r in rows if (r["factor"], r["rep"], r["features"]) == (factor, rep, kind)]
                )
                for rep in REPS
            }
            print(f"{factor:9s} {kind}: R^2 h {got['h']:.3f}, g(h) {got['g(h)']:.3f}", flush=True)
    summary = []
    for factor in FACTORS:
        for kind in ("view", "pair"):
            r2 = {
                rep: [r["test_r2"] for r in rows if (r["factor"], r["rep"], r["features"]) == (factor, rep, kind)]
                for rep in REPS
            }
            summary.append(
                dict(factor=factor, features=kind, h=_mean_std(r2["h"]), gh=_mean_std(r2["g(h)"]))
                | {"h_minus_gh": gain_interval(r2["h"], r2["g(h)"])}
            )
    return rows, summary, strengths


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="course-resnet18", help="a shipped encoder (pretrained/manifest.json)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="probe seeds and ridge split seeds")
    parser.add_argument("--epochs", type=int, default=100, help="linear-probe epochs (lr drops: lr_milestones)")
    parser.add_argument("--gain-range", type=float, default=0.5, help="gain ~ U(-G, G) in log10 units (x10 dB)")
    parser.add_argument("--draw-seed", type=int, default=PAPER_SEED, help="seed of the augmentation strengths")
    parser.add_argument("--skip-probes", action="store_true", help="only the factor probes (part 2)")
    parser.add_argument("--smoke", action="store_true", help="seconds: 5 %% of every split, 2 probe epochs")
    parser.add_argument("--out", type=Path, default=None, help=f"results JSON (default {DEFAULT_OUT})")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    smoke = args.smoke or smoke_mode()
    out = args.out or (Path(tempfile.gettempdir()) / "results-projection-head-smoke.json" if smoke else DEFAULT_OUT)
    progress = not args.no_progress
    t0 = time.perf_counter()

    course = datasets.prepare(progress=False)
    splits = course.splits()
    epochs = 2 if smoke else args.epochs
    if smoke:
        splits = {name: subsample_per_class(fs, 0.05, seed=0) for name, fs in splits.items()}
    encoder, info = pretrained.load_pretrained(args.encoder)
    result = {
        "what": "linear probes and augmentation-strength ridge probes on h (encoder) vs g(h) (projection head)",
        "encoder": args.encoder,
        "encoder_sha256": info["sha256"],
        "encoder_dataset": info.get("dataset"),
        "encoder_epochs": info.get("epochs"),
        "dataset": course.name,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python " + shlex.join(["bench/projection_head.py", *sys.argv[1:]]),
        "machine": describe_machine(torch.device("cpu")) | {"torch_threads": torch.get_num_threads()},
        "smoke": smoke,
        "seeds": args.seeds,
    }
    try:
        head = pretrained.load_head(args.encoder)
    except ValueError as err:  # an encoder exported before heads were shipped: nothing to compare
        result["no_head"] = str(err)
        print(err)
        write_atomic(out, json.dumps(result, indent=1) + "\n")
        return result
    mean, std = float(info["mean"]), float(info["std"])
    projected = analysis.ProjectedEncoder(encoder, head)
    disk_cache = not smoke
    if not args.skip_probes:
        rows, summary, scale = probes(encoder, projected, mean, std, splits, args.seeds, epochs, disk_cache, progress)
        result["probe"] = {
            "g(h)*s": f"g(h) times s = {scale:.4g}, the mean norm of h over the noisy task's training patches "
            "(g(h) has norm 1): the same SGD protocol at the same feature scale",
            "protocol": f"linear_eval, LinearEvalConfig(epochs={epochs}, milestones=lr_milestones({epochs}), seed=s), "
            "test scored once at the best validation epoch; test balanced accuracy, %",
            "rows": rows,
            "summary": summary,
        }
    test = splits["test"]
    rows, summary, strengths = factor_probes(
        encoder, head, mean, std, test, args.seeds, args.gain_range, args.draw_seed, disk_cache, progress
    )
    result["factors"] = {
        "protocol": "every evaluation patch of the test set, one augmentation each: compander c ~ U(0.75, 1), "
        f"gain g ~ U(-{args.gain_range}, {args.gain_range}) log10 units added, mix-back lambda ~ U(0, 0.05) with a "
        "patch of another test clip; ridge_probe (standardised features, penalty on val) of the strength; split "
        "60/20/20 % of the test clips by group_split(seed); R^2 on the held-out clips. Features "
        "'view': h(x'), g(h(x')); 'pair': h(x') - h(x), g(h(x')) - g(h(x))",
        "n_patches": int(strengths[FACTORS[0]]["n"]),
        "n_clips": len(test),
        "strengths": strengths,
        "rows": rows,
        "summary": summary,
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_atomic(out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
