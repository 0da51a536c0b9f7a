"""Pre-training step throughput (network alone vs full pipeline) and the kNN monitor, on FSDnoisy18k-sized sets."""

from __future__ import annotations

import time

import torch

from uclser_lib.augment import AugmentConfig
from uclser_lib.data import feature_stats
from uclser_lib.losses import nt_xent
from uclser_lib.metrics import knn_monitor
from uclser_lib.models import ContrastiveModel, ProjectionHead, build_encoder
from uclser_lib.views import GraphedViews, ViewBuilder, eval_patches

from .synthetic import FSD_SIZES, fsd_sized_clips


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, warmup: int, steps: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (median of ``steps`` timed calls, synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def bench_train_step(
    device,
    arch: str = "resnet18",
    batch_size: int = 128,
    bf16: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    graphed: bool = False,
    n_clips: int = FSD_SIZES["pretrain"],
    warmup: int = 10,
    steps: int = 30,
) -> dict:
    """Clips/s of one SimCLR step: the network alone (fixed input) and the full pipeline.

    The full pipeline builds the views on the device, then runs the network.
    """
    device = torch.device(device)
    torch.manual_seed(0)
    packed = fsd_sized_clips(n_clips, device=device)
    mean, std = feature_stats(packed)
    views = ViewBuilder(packed, AugmentConfig.paper(), mean, std)
    gen = torch.Generator(device=device).manual_seed(0)
    if graphed:
        views = GraphedViews(views, batch_size, gen)
    enc = build_encoder(arch)
    model = ContrastiveModel(enc, ProjectionHead(enc.embedding_dim)).to(device)
    cl = channels_last and device.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    use_bf16 = bf16 and device.type == "cuda"
    fixed = torch.randn(2 * batch_size, 1, 101, 96, device=device)

    def network(x):
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            z = step_model(x)
        loss = nt_xent(z[:batch_size], z[batch_size:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    order = torch.Generator(device=device).manual_seed(1)

    def build_views():
        idx = torch.randint(0, n_clips, (batch_size,), device=device, generator=order)
        return torch.cat(views(idx, gen))

    t_net = _timed(lambda: network(fixed), device, warmup, steps)
    t_views = _timed(build_views, device, warmup, steps)
    t_full = _timed(lambda: network(build_views()), device, warmup, steps)
    return {
        "arch": arch,
        "batch": batch_size,
        "bf16": use_bf16,
        "channels_last": cl,
        "compile": compile,
        "graphed_views": graphed,
        "network_clips_s": batch_size / t_net,
        "pipeline_clips_s": batch_size / t_full,
        "views_ms": 1e3 * t_views,
        "step_ms": 1e3 * t_net,
        "views_fraction_of_step": t_views / t_net,
        "pipeline_over_network": t_net / t_full,
    }


def bench_knn(
    device, k: int = 200, sizes=(FSD_SIZES["val"], FSD_SIZES["test"]), dim: int = 512, baseline_clips: int | None = None
) -> dict:
    """Seconds of the vectorised kNN monitor on val + test sized sets.

    With ``baseline_clips``, also the per-clip loop baseline on that many clips of val.
    """
    from .knn_baseline import knn_monitor_loop

    device = torch.device(device)
    out = {"k": k, "sets": {}}
    total = 0.0
    for name, n in zip(("val", "test"), sizes):
        packed = fsd_sized_clips(n, seed=1, device="cpu")
        _, clip_index = eval_patches(packed)
        gen = torch.Generator(device=device).manual_seed(0)
        emb = torch.nn.functional.normalize(torch.randn(len(clip_index), dim, device=device, generator=gen), dim=1)
        labels = packed.labels[clip_index].to(device)
        clip_index = clip_index.to(device)
        knn_monitor(emb, labels, clip_index, k=k)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        knn_monitor(emb, labels, clip_index, k=k)
        _sync(device)
        sec = time.perf_counter() - t0
        total += sec
        out["sets"][name] = {"clips": n, "patches": len(clip_index), "seconds": sec}
        if name == "val" and baseline_clips:
            keep = clip_index < baseline_clips
            t0 = time.perf_counter()
            knn_monitor_loop(emb[keep], labels[keep], clip_index[keep], k=k)
            _sync(device)
            t_loop = time.perf_counter() - t0
            t0 = time.perf_counter()
            knn_monitor(emb[keep], labels[keep], clip_index[keep], k=k)
            _sync(device)
            t_vec = time.perf_counter() - t0
            out["loop_vs_vectorised"] = {
                "clips": baseline_clips,
                "patches": int(keep.sum()),
                "loop_s": t_loop,
                "vectorised_s": t_vec,
                "speedup": t_loop / t_vec,
            }
    out["val_plus_test_seconds"] = total
    return out


def bench_epochs(
    device, epochs: int = 2, arch: str = "resnet18", batch_size: int = 128, sizes: dict | None = None
) -> dict:
    """The real loop, :func:`uclser_lib.train.pretrain`, on FSDnoisy18k-sized sets.

    Returns the clips/s of each epoch and the seconds of one kNN evaluation.
    """
    import numpy as np

    from uclser_lib.data import CLASSES, FeatureSet
    from uclser_lib.features import DEFAULT_PARAMS
    from uclser_lib.train import PretrainConfig, pretrain

    def feature_set(n, seed):
        packed = fsd_sized_clips(n, seed=seed, device="cpu")
        return FeatureSet(
            packed, [f"{i}.wav" for i in range(n)], np.zeros(n, bool), np.zeros(n, bool), CLASSES, DEFAULT_PARAMS
        )

    sets = {name: feature_set(n, seed) for seed, (name, n) in enumerate((sizes or FSD_SIZES).items())}
    cfg = PretrainConfig(arch=arch, epochs=epochs, batch_size=batch_size, knn_every=1)
    t0 = time.perf_counter()
    _, history = pretrain(
        cfg, sets["pretrain"], {"val": sets["val"], "test": sets["test"]}, device=device, progress=False
    )
    total = time.perf_counter() - t0
    return {
        "arch": arch,
        "batch": batch_size,
        "epochs": history,
        "wall_s": total,
        "knn_s_per_eval": (total - sum(h["seconds"] for h in history)) / epochs,
    }
