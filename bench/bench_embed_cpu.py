"""Embedding on a CPU against the core's fp32 peak (issue #35): every encoder's eval-mode forward, before and after.

For each encoder (ResNet-18, VGG-like, CRNN) with trained-looking BatchNorm statistics, on batches of ``--batch``
(128) patches of 101 x 96, with 1 thread and with torch's default thread count:

- the forward's FLOPs per patch, counted by ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs);
- ms per patch, GFLOP/s and the share of the peak (of one core per thread) of: ``plain`` (eager, default layout),
  ``channels-last`` (eager, weights and inputs channels-last: the library's path before #35) and ``library`` (what
  :func:`uclser_lib.embed.embed_eval_patches` runs now: :func:`uclser_lib.embed.inference_fn`, i.e. a frozen
  TorchScript graph with BatchNorm folded, oneDNN layouts, :data:`~uclser_lib.embed.FROZEN_BATCH` patches at a
  time, for the encoders of :data:`~uclser_lib.embed.FROZEN_ARCHS`; channels-last eager for the others), and with
  ``--alternatives`` the approaches measured and not chosen; the variants interleaved round by round, best of
  ``--repeats``; speed-ups are ratios within the same run;
- end to end: :func:`~uclser_lib.embed.embed_eval_patches` over ``--patches`` (2,000) patches, cold (the frozen
  graph's build included) and before (the channels-last path), best of 2.

The peak: lanes x 2 FLOPs (FMA) x 2 FMA units x clock, lanes 16 with avx512f, 8 with avx2/fma, 4 otherwise
(/proc/cpuinfo's flags), the clock from ``lscpu``'s max MHz, else /proc/cpuinfo's "cpu MHz". Two FMA units per core
is assumed (true of AMD Zen 1-4 and Intel since Haswell for 256-bit FMA; some AVX-512 parts have one 512-bit
unit); a core that boosts above that clock can exceed the figure. Writes ``bench/results-embed-cpu.json``.

    taskset -c 1 .venv/bin/python -m bench.bench_embed_cpu [--quick] [--alternatives] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from uclser_lib import embed
from uclser_lib.data import PATCH_FRAMES, PackedClips
from uclser_lib.models import ARCHITECTURES, build_encoder
from uclser_lib.runtime import describe_machine, write_atomic

N_MELS = 96
OUT = Path(__file__).resolve().parent / "results-embed-cpu.json"
NAMES = {"resnet18": "ResNet-18", "vgglike": "VGG-like", "crnn": "CRNN"}


def cpu_peak() -> dict:
    """The core's fp32 peak from /proc/cpuinfo (flags, clock) and lscpu (max MHz), with the assumptions stated."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    lanes, isa = (16, "avx512f") if "avx512f" in flags else (8, "avx2+fma") if {"avx2", "fma"} <= flags else (4, "sse")
    mhz, source = None, ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"^CPU max MHz:\s*([\d.]+)", out, re.M)
        if found:
            mhz, source = float(found.group(1)), "lscpu CPU max MHz"
    except (OSError, subprocess.SubprocessError):
        pass
    if mhz is None:
        found = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
        mhz, source = (float(found.group(1)), "/proc/cpuinfo cpu MHz") if found else (2000.0, "unknown: 2000 assumed")
    fma_units = 2
    return {
        "cpu": model.group(1).strip() if model else "unknown",
        "isa": isa,
        "lanes": lanes,
        "fma_units": fma_units,
        "mhz": mhz,
        "mhz_source": source,
        "gflops": lanes * 2 * fma_units * mhz / 1000,
        "assumption": f"{lanes} fp32 lanes ({isa}) x 2 FLOP (FMA) x {fma_units} FMA units (assumed) x {mhz:.0f} MHz "
        f"({source}); one core",
    }


def sgemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """One thread's fp32 matrix product rate (MKL/oneDNN sgemm, n x n): a measured anchor beside the nominal peak
    (a core that boosts above its listed clock exceeds that peak)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return 2 * n**3 / best / 1e9


def trained_looking(arch: str, seed: int = 0) -> torch.nn.Module:
    """A fresh encoder in eval mode with non-trivial BatchNorm statistics and affine parameters."""
    torch.manual_seed(seed)
    enc = build_encoder(arch).eval()
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return enc


def flops_per_patch(enc: torch.nn.Module) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        enc.embed(torch.zeros(2, 1, PATCH_FRAMES, N_MELS))
    return counter.get_total_flops() / 2


class _Emb(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.embed(x)


def variants(enc: torch.nn.Module, x: torch.Tensor, alternatives: bool) -> dict:
    """name -> (callable, its input); every callable on its own copy of ``enc``."""
    plain = copy.deepcopy(enc)
    cl = copy.deepcopy(enc).to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    lib_enc = copy.deepcopy(enc)
    with torch.no_grad():  # as embed_eval_patches calls it
        run = embed.inference_fn(lib_enc.embed, "cpu", None, tuple(x.shape[1:]))
    lib = (run, x) if run != lib_enc.embed else (lib_enc.to(memory_format=torch.channels_last).embed, xc)
    out = {"plain": (plain.embed, x), "channels-last": (cl.embed, xc), "library": lib}
    if alternatives:
        from torch.fx.experimental.optimization import fuse

        out["fx-fuse channels-last"] = (fuse(_Emb(copy.deepcopy(enc))).to(memory_format=torch.channels_last), xc)
        out[f"channels-last, {embed.FROZEN_BATCH} at a time"] = (
            lambda t, f=cl.embed: torch.cat([f(p) for p in t.split(embed.FROZEN_BATCH)]),
            xc,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frozen = embed._freeze(enc, "embed", x[:2])
        out["frozen graph, whole batch"] = (frozen, x)
    return out


def measure(arch: str, batch: int, repeats: int, threads: int, alternatives: bool, peak: float, sgemm: float) -> dict:
    torch.set_num_threads(threads)
    enc = trained_looking(arch)
    x = torch.randn(batch, 1, PATCH_FRAMES, N_MELS, generator=torch.Generator().manual_seed(1))
    flops = flops_per_patch(enc)
    fns = variants(enc, x, alternatives)
    best, err = {}, {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = enc.embed(x)
        for name, (f, inp) in fns.items():  # warm-up; the outputs' distance from the plain forward
            err[name] = float((f(inp) - ref).abs().max() / ref.abs().max())
        for _ in range(repeats):  # interleaved: each round runs every variant once
            for name, (f, inp) in fns.items():
                t0 = time.perf_counter()
                f(inp)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    rows = {}
    for name, t in best.items():
        ms = t * 1000 / batch
        rows[name] = {
            "ms_per_patch": round(ms, 3),
            "gflops": round(flops / ms / 1e6, 2),
            "share_of_peak": round(flops / ms / 1e6 / (peak * threads), 3),  # the peak of as many cores as threads
            "share_of_sgemm": round(flops / ms / 1e6 / (sgemm * threads), 3),
            "speedup_vs_plain": round(best["plain"] / t, 3),
            "speedup_vs_channels_last": round(best["channels-last"] / t, 3),
            "max_rel_diff_vs_plain": float(f"{err[name]:.2e}"),
        }
    return {"arch": arch, "threads": threads, "gflop_per_patch": round(flops / 1e9, 4), "variants": rows}


def end_to_end(arch: str, n_patches: int, threads: int) -> dict:
    """embed_eval_patches over n_patches (10 per clip), cold (build included) vs the channels-last path."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    clips = PackedClips.from_list(
        [rng.standard_normal((PATCH_FRAMES + 9 * 50, N_MELS)).astype(np.float32) for _ in range(n_patches // 10)]
    )
    enc = trained_looking(arch)
    times = {"before": float("inf"), "after (cold)": float("inf")}
    frozen_archs = embed.FROZEN_ARCHS
    try:
        for _ in range(2):
            for name in times:
                e = copy.deepcopy(enc)  # a new module: its frozen graph is built again (cold)
                embed.FROZEN_ARCHS = () if name == "before" else frozen_archs
                t0 = time.perf_counter()
                embed.embed_eval_patches(e.embed, clips, 0.0, 1.0, "cpu")
                times[name] = min(times[name], time.perf_counter() - t0)
    finally:
        embed.FROZEN_ARCHS = frozen_archs
    return {
        "arch": arch,
        "threads": threads,
        "patches": len(clips) * 10,
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "speedup": round(times["before"] / times["after (cold)"], 3),
    }


def profile(arch: str, batch: int) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    torch.set_num_threads(1)
    enc = trained_looking(arch)
    x = torch.randn(batch, 1, PATCH_FRAMES, N_MELS)
    out = []
    for name, (f, inp) in variants(enc, x, False).items():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f(inp)
            with prof(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
                f(inp)
        table = p.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=30, max_shapes_column_width=50
        )
        out.append(f"### {NAMES[arch]}, {name}, batch {batch}, 1 thread\n{table}")
    return "\n".join(out)


def table(res: dict) -> str:
    peak = res["peak"]
    lines = [
        f"{res['date']}  {peak['cpu']}  peak {peak['gflops']:.1f} GFLOP/s: {peak['assumption']}; "
        f"measured sgemm 1024^3, 1 thread: {peak['sgemm_gflops_1_thread']:.1f} GFLOP/s",
        f"command: {res['command']}",
        f"batches of {res['batch']} patches of {PATCH_FRAMES} x {N_MELS}, eval mode, best of {res['repeats']}, "
        "variants interleaved",
        "",
        "| encoder | threads | GFLOP/patch | variant | ms/patch | GFLOP/s | share of peak | of sgemm | x vs plain "
        "| x vs channels-last | max rel diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        for name, v in r["variants"].items():
            lines.append(
                f"| {NAMES[r['arch']]} | {r['threads']} | {r['gflop_per_patch']:.3f} | {name} "
                f"| {v['ms_per_patch']:.2f} | {v['gflops']:.1f} | {v['share_of_peak']:.0%} | {v['share_of_sgemm']:.0%} "
                f"| {v['speedup_vs_plain']:.2f} | {v['speedup_vs_channels_last']:.2f} "
                f"| {v['max_rel_diff_vs_plain']:.1e} |"
            )
    if res.get("end_to_end"):
        lines += ["", "| end to end: embed_eval_patches | threads | patches | before s | after s (cold) | x |"]
        lines += ["|---|---|---|---|---|---|"]
        for r in res["end_to_end"]:
            s = r["seconds"]
            lines.append(
                f"| {NAMES[r['arch']]} | {r['threads']} | {r['patches']} | {s['before']:.2f} "
                f"| {s['after (cold)']:.2f} | {r['speedup']:.2f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="batches of 32, best of 2, 400 patches end to end")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--patches", type=int, default=2000, help="end to end; 0: skip")
    ap.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    ap.add_argument("--threads", nargs="+", type=int, default=None, help="default: 1 and torch's default count")
    ap.add_argument("--alternatives", action="store_true", help="also the approaches measured and not chosen")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler tables by op (1 thread)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.patches = 32, 2, min(args.patches, 400)
    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    peak = cpu_peak()
    peak["sgemm_gflops_1_thread"] = round(sgemm_gflops(), 1)
    res = {
        "machine": describe_machine(torch.device("cpu")),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "peak": peak,
        "batch": args.batch,
        "repeats": args.repeats,
        "frozen_archs": list(embed.FROZEN_ARCHS),
        "frozen_batch": embed.FROZEN_BATCH,
        "rows": [],
        "end_to_end": [],
    }
    for t in threads:
        for arch in args.archs:
            res["rows"].append(
                measure(
                    arch, args.batch, args.repeats, t, args.alternatives, peak["gflops"], peak["sgemm_gflops_1_thread"]
                )
            )
            for line in table({**res, "rows": res["rows"][-1:], "end_to_end": []}).splitlines()[6:]:
                print(line, flush=True)
    if args.patches:
        for arch in args.archs:
            res["end_to_end"].append(end_to_end(arch, args.patches, 1))
    torch.set_num_threads(default_threads)
    res["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(table(res))
    if args.profile:
        for arch in args.archs:
            print(profile(arch, args.batch))
    write_atomic(args.out, (json.dumps(res, indent=1) + "\n").encode())
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
