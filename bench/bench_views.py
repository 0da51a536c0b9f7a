"""Views per second: the batched :class:`~uclser_lib.augment.ViewBuilder` vs the per-example reference chain.

The reference runs as the released code did: a torch ``DataLoader`` over a per-example NumPy/PIL dataset
(``tests/helpers/augment_reference.py``'s ``ReferenceViewDataset``) with 0 and N workers, batches moved to the
device. The clips are synthetic, with FSDnoisy18k's length distribution (:mod:`bench.synthetic`). One "view" is
one augmented (1, 101, 96) patch; each clip gives two.

    PYTHONPATH=. python bench/bench_views.py --device cuda --batch-sizes 128 512
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from uclser_lib.augment import AugmentConfig
from uclser_lib.runtime import checkout_root
from uclser_lib.views import ViewBuilder, epoch_batches

REPO_ROOT = checkout_root()  # the benchmarks run from the course's checkout
sys.path.insert(0, str(REPO_ROOT / "tests" / "helpers"))  # the per-example reference chain lives with the tests
from augment_reference import ReferenceViewDataset  # noqa: E402

try:
    from .synthetic import fsd_sized_clips
except ImportError:  # run as a script: python bench/bench_views.py
    from synthetic import fsd_sized_clips


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batched_rate(builder: ViewBuilder, n_clips: int, batch_size: int, seconds: float, device: torch.device) -> float:
    """Views/s of the batched builder over whole batches, after one warm-up batch."""
    gen = torch.Generator(device=device).manual_seed(0)
    builder(torch.arange(min(batch_size, n_clips), device=device), gen)
    _sync(device)
    views, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for idx in epoch_batches(n_clips, batch_size, gen, device=device):
            builder(idx, gen)
            views += 2 * len(idx)
            if time.perf_counter() - start >= seconds:
                break
    _sync(device)
    return views / (time.perf_counter() - start)


def _reference_rate(dataset: ReferenceViewDataset, batch_size: int, workers: int, seconds: float, device) -> float:
    """Views/s of the reference dataset through a DataLoader, after its first batch (worker start-up excluded)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )
    views, start, epoch = 0, None, 0
    while start is None or time.perf_counter() - start < seconds:
        dataset.set_epoch(epoch)  # persistent workers keep their copy's epoch: same cost, so fine for a rate
        for v1, v2 in loader:
            v1, v2 = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
            if start is None:
                _sync(device)
                start = time.perf_counter()
                continue
            views += 2 * len(v1)
            if time.perf_counter() - start >= seconds:
                break
        epoch += 1
    _sync(device)
    return views / (time.perf_counter() - start)


def bench_views(
    device="cpu",
    batch_sizes=(128, 512),
    n_clips: int = 2000,
    seconds: float = 5.0,
    workers=None,
    cfg: AugmentConfig | None = None,
    threads: int | None = None,
) -> dict[str, float]:
    """Views/s of the batched builder and of the reference chain (per DataLoader worker count), per batch size.

    Returns keys ``"batched/b{B}"``, ``"reference/w{W}/b{B}"`` and ``"speedup/w{W}/b{B}"`` (batched over
    reference), plus ``"device"`` and ``"threads"``. ``cfg`` defaults to the paper's config. ``threads``
    sets torch's intra-op CPU threads for the run (on a busy machine 1 can beat the default by far).
    ``workers``: the DataLoader worker counts of the reference chain (default: 0 and one per core).
    """
    if workers is None:
        workers = (0, os.cpu_count() or 1)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(torch.device(device), batch_sizes, n_clips, seconds, workers, cfg or AugmentConfig.paper())
    finally:
        torch.set_num_threads(previous_threads)


def _bench(device, batch_sizes, n_clips, seconds, workers, cfg) -> dict[str, float]:
    packed = fsd_sized_clips(n_clips)
    clips = [packed.clip(i).numpy() for i in range(n_clips)]
    mean, std = float(packed.data.mean()), float(packed.data.std())
    builder = ViewBuilder(packed.to(device), cfg, mean, std)
    dataset = ReferenceViewDataset(clips, cfg, mean, std)
    out: dict[str, float] = {"device": str(device), "threads": torch.get_num_threads()}
    for bs in batch_sizes:
        out[f"batched/b{bs}"] = _batched_rate(builder, n_clips, bs, seconds, device)
        for w in workers:
            out[f"reference/w{w}/b{bs}"] = _reference_rate(dataset, bs, w, seconds, device)
            out[f"speedup/w{w}/b{bs}"] = out[f"batched/b{bs}"] / out[f"reference/w{w}/b{bs}"]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--n-clips", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, os.cpu_count() or 1])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)")
    args = parser.parse_args()
    result = bench_views(args.device, args.batch_sizes, args.n_clips, args.seconds, args.workers, threads=args.threads)
    print(json.dumps(result, indent=1))
