"""Benchmark suite: ``python -m bench [--quick] [--out DIR] [--device cuda|cpu]``.

Measures side by side, in one run, on the device present: feature extraction (the fast batched path vs
librosa per file, 1 and N processes), view building (batched on the device vs the per-example chain), one
pre-training step (network alone vs full pipeline; fp32 vs bf16 + channels_last, eager vs CUDA-graph views,
compile), the kNN monitor (vectorised vs a per-clip loop) and the real loop; with the peak host and device
memory after each section. Writes ``results-<device>.json`` and a Markdown
table ``results-<device>.md`` to ``--out`` (default ``$OUT`` when set, else ``bench/out``); with
``--update-results`` the table (machine, device, versions, command, date) is also added to the top of
``bench/RESULTS.md``, newest first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

from uclser_lib.runtime import describe_machine, pick_device, write_atomic

from .pipeline import bench_epochs, bench_knn, bench_train_step
from .synthetic import FSD_SIZES


def markdown(res: dict) -> str:
    lines = [
        f"### {res['date']} — {res['machine'].get('gpu', 'CPU')} ({res['machine']['cpus']} CPUs), "
        f"torch {res['machine']['torch']}",
        f"Command: `{res['command']}`",
        "",
    ]
    if res.get("features"):
        f = res["features"]
        w = f["workers"]
        resamplers = {
            k: r
            for k, r in (("fast", f.get("resampler", "torchaudio")), ("fast-torchaudio", "torchaudio"))
            if f"{k}/w0" in f
        }
        best_of = len(next(iter(f["rounds"].values()))) if f.get("rounds") else 1
        cpu = "fast/w0/cpu" in f  # audio s per CPU s of the process, for the 1-process runs
        columns = ["1 process"] + (["1 process, per CPU second"] if cpu else []) + [f"{w} processes"]
        title = (
            f"feature extraction ({f['files']} files, {f['audio_seconds']:.0f} s of audio), "
            f"1 thread per process, best of {best_of}"
        )
        lines += [f"| {title} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]

        def row(label: str, key: str, one: str, fmt: str, unit: str = "") -> str:
            cells = [f[f"{key}/{one}"]] + ([f[f"{key}/{one}/cpu"]] if cpu else []) + [f[f"{key}/w{w}"]]
            return f"| {label} | " + " | ".join(format(c, fmt) + unit for c in cells) + " |"

        lines += [
            row(f"fast batched path ({f['device']}, {r} resampler), audio s/s", k, "w0", ".0f")
            for k, r in resamplers.items()
        ]
        if "librosa/w1" in f:
            lines.append(row("librosa per file, audio s/s", "librosa", "w1", ".0f"))
            lines += [
                row(f"ratio, fast ({r}) / librosa", f"{k}_over_librosa", "w1", ".1f", "x")
                for k, r in resamplers.items()
            ]
        lines.append("")
    if res.get("views"):
        v = res["views"]
        lines += [
            "| view building | batch | batched views/s | per-example chain views/s (DataLoader workers) | ratio |",
            "|---|---|---|---|---|",
        ]
        for key in (k for k in v if k.startswith("batched/")):
            b = key.split("/")[1]
            refs = {k.split("/")[1]: r for k, r in v.items() if k.startswith("reference/") and k.endswith("/" + b)}
            best = max(refs, key=refs.get)
            ref_text = ", ".join(f"{r:.0f} ({w[1:]})" for w, r in refs.items())
            lines.append(f"| paper chain | {b[1:]} | {v[key]:.0f} | {ref_text} | {v[key] / refs[best]:.1f}x vs best |")
        lines.append("")
    if res["train_step"]:
        lines += [
            "| step | arch | batch | precision | network clips/s | pipeline clips/s | pipeline/network "
            "| views % of step |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for r in res["train_step"]:
        prec = (
            ("bf16" if r["bf16"] else "fp32")
            + (" + CL" if r["channels_last"] else "")
            + (" + compile" if r["compile"] else "")
        )
        prec += ", graphed views" if r.get("graphed_views") else ""
        lines.append(
            f"| SimCLR | {r['arch']} | {r['batch']} | {prec} | {r['network_clips_s']:.0f} "
            f"| {r['pipeline_clips_s']:.0f} | {100 * r['pipeline_over_network']:.0f}% "
            f"| {100 * r['views_fraction_of_step']:.1f}% |"
        )
    k = res.get("knn") or {}
    if k:
        lines += [
            "",
            f"kNN monitor (k={k['k']}): val {k['sets']['val']['patches']} "
            f"+ test {k['sets']['test']['patches']} patches in {k['val_plus_test_seconds']:.2f} s",
        ]
    if "loop_vs_vectorised" in k:
        b = k["loop_vs_vectorised"]
        lines[-1] += (
            f"; per-clip loop on {b['clips']} clips: {b['loop_s']:.2f} s "
            f"vs {b['vectorised_s']:.3f} s vectorised ({b['speedup']:.0f}x)"
        )
    if res.get("memory"):
        lines += ["", "| section | " + " | ".join(res["memory"]) + " |", "|---|" + "---|" * len(res["memory"])]
        lines.append(
            "| host peak so far (MB) | " + " | ".join(f"{m['host_peak_mb']:.0f}" for m in res["memory"].values()) + " |"
        )
        if any("device_peak_mb" in m for m in res["memory"].values()):
            lines.append(
                "| device peak (MB) | "
                + " | ".join(f"{m.get('device_peak_mb', 0):.0f}" for m in res["memory"].values())
                + " |"
            )
    if res.get("epochs"):
        e = res["epochs"]
        rates = ", ".join(f"{h['clips_per_s']:.0f}" for h in e["epochs"])
        lines += [
            "",
            f"Real loop (`uclser_lib.train.pretrain`, {e['arch']}, batch {e['batch']}, kNN on val + test every epoch): "
            f"clips/s per epoch {rates}; kNN evaluation {e['knn_s_per_eval']:.2f} s",
        ]
    if res.get("schedule_estimate_min") is not None:
        lines += [
            "",
            f"Paper schedule estimate (500 epochs x {FSD_SIZES['pretrain']} clips at the batch-128 pipeline rate, "
            f"kNN every 10 epochs): {res['schedule_estimate_min']:.1f} min",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, a smoke test (< 2 min on 2 CPU cores); its timings mean little",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=os.environ.get("OUT") or "bench/out")
    p.add_argument("--sections", default="features,views,train,knn,epochs")
    p.add_argument(
        "--update-results",
        nargs="?",
        const="bench/RESULTS.md",
        default=None,
        metavar="FILE",
        help="also add this run's table to the top of FILE (default bench/RESULTS.md)",
    )
    args = p.parse_args(argv)
    device = pick_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = set(args.sections.split(","))
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m bench " + " ".join(argv or sys.argv[1:]),
        "machine": describe_machine(device),
        "device": str(device),
    }
    quick = args.quick
    n_clips = 300 if quick else FSD_SIZES["pretrain"]
    steps = dict(warmup=1, steps=2) if quick else dict(warmup=10, steps=30)

    def memory(section: str) -> None:
        """Host high-water mark so far (ru_maxrss, MB) and the device peak of this section (MB)."""
        mem = {"host_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if device.type == "cuda":
            mem["device_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
        res.setdefault("memory", {})[section] = mem

    if "features" in sections:
        from .bench_features import bench_features

        res["features"] = bench_features(
            device, n_files=8 if quick else 200, max_seconds=5.0 if quick else 30.0, rounds=1 if quick else 3
        )
        print(json.dumps(res["features"]), flush=True)
        memory("features")
    if "views" in sections:
        from .bench_views import bench_views

        res["views"] = bench_views(
            device,
            batch_sizes=(16,) if quick else (128, 512),
            n_clips=200 if quick else 2000,
            seconds=0.5 if quick else 3.0,
        )
        print(json.dumps(res["views"], indent=1), flush=True)
        memory("views")
    res["train_step"] = []
    if "train" in sections:
        if quick:
            grid = [("vgglike", 16, True, False, False)]
        else:  # (arch, batch, bf16 + channels_last, compile, CUDA-graph views)
            cuda = device.type == "cuda"
            grid = [("resnet18", b, True, False, g) for b in (128, 512) for g in ((False, True) if cuda else (False,))]
            grid += [(a, b, True, False, cuda) for a in ("vgglike", "crnn") for b in (128, 512)]
            grid += [("resnet18", 128, False, False, False), ("resnet18", 512, False, False, False)]
            if cuda:
                grid += [("resnet18", 128, True, True, True)]
        for arch, batch, bf16, comp, graphed in grid:
            try:
                r = bench_train_step(
                    device,
                    arch,
                    batch,
                    bf16=bf16,
                    channels_last=bf16,
                    compile=comp,
                    graphed=graphed,
                    n_clips=n_clips,
                    **steps,
                )
            except Exception as err:
                print(f"FAILED {arch} b{batch} compile={comp} graphed={graphed}: {err!r}", flush=True)
                continue
            res["train_step"].append(r)
            print(json.dumps(r), flush=True)
        memory("train")
    if "knn" in sections:
        sizes = (60, 40) if quick else (FSD_SIZES["val"], FSD_SIZES["test"])
        res["knn"] = bench_knn(device, k=20 if quick else 200, sizes=sizes, baseline_clips=20 if quick else 300)
        print(json.dumps(res["knn"]), flush=True)
        memory("knn")
    if "epochs" in sections:
        res["epochs"] = bench_epochs(
            device,
            epochs=1 if quick else 2,
            batch_size=16 if quick else 128,
            sizes={"pretrain": 48, "val": 20, "test": 20} if quick else None,
        )
        print(json.dumps(res["epochs"]), flush=True)
        memory("epochs")
    base = next(
        (
            r
            for r in res["train_step"]
            if r["arch"] == "resnet18"
            and r["batch"] == 128
            and r["bf16"]
            and not r["compile"]
            and r.get("graphed_views") == (device.type == "cuda")
        ),
        None,
    )  # the default training setup
    if base and "knn" in res:
        epoch_s = FSD_SIZES["pretrain"] / base["pipeline_clips_s"]
        res["schedule_estimate_min"] = (500 * epoch_s + 50 * res["knn"]["val_plus_test_seconds"]) / 60
    tag = "cuda" if device.type == "cuda" else "cpu"
    (out / f"results-{tag}.json").write_text(json.dumps(res, indent=1))
    table = markdown(res)
    (out / f"results-{tag}.md").write_text(table)
    print(table)
    if args.update_results:
        add_to_results(Path(args.update_results), table)
    return 0


def add_to_results(path: Path, table: str) -> None:
    """Insert ``table`` (one run's Markdown) above the first run section (``## ``) of ``path``, atomically."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    at = text.find("\n## ")
    section = "## " + table.removeprefix("### ") + "\n"
    text = text + "\n" + section if at < 0 else text[: at + 1] + section + text[at + 1 :]
    write_atomic(path, text)


if __name__ == "__main__":
    sys.exit(main())
