"""From packed clips to patches and to the two augmented views of SimCLR training (docs/method.md sections 4-6).

Patch sampling works on a :class:`~uclser_lib.data.PackedClips` on any device as index gathers, with
random numbers from the ``torch.Generator`` it is given; no function loops over examples in Python.
Patches are ``PATCH_FRAMES`` = 101 frames x F bands; a clip must have at least 101 frames.
:class:`ViewBuilder` turns a batch of clip indices into the two augmented views, (B, 1, 101, 96) each,
entirely on the device; :class:`GraphedViews` replays it as one CUDA graph.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .augment import AugmentConfig, build_augment
from .data import EVAL_HOP, PATCH_FRAMES, PackedClips
from .mixback import MIX_WITHIN_MIN_FRAMES, POWER_DOMAIN_MAX_LOG10, mix_back, mix_back_power
from .sampling import randint_below, uniform

__all__ = [
    "CPU_CHUNK_VIEWS",
    "GraphedViews",
    "ViewBuilder",
    "check_lengths",
    "epoch_batches",
    "eval_patch_counts",
    "eval_patches",
    "gather_patches",
    "other_clips",
    "random_patches",
    "random_starts",
]

#: Views a CPU :class:`ViewBuilder` builds at a time: slices whose intermediates stay in a core's cache.
CPU_CHUNK_VIEWS = 64


def check_lengths(lengths: torch.Tensor, what: str = "clip") -> None:
    """ValueError naming the first clip shorter than one patch (101 frames)."""
    short = torch.nonzero(lengths < PATCH_FRAMES)
    if len(short):
        i = int(short[0, 0])
        raise ValueError(
            f"{what} {i} has {int(lengths[i])} frames; every clip needs at least {PATCH_FRAMES} frames "
            f"(features tile clips shorter than 1 s to 101 frames) — {len(short)} clip(s) too short"
        )


def random_starts(lengths: torch.Tensor, generator: torch.Generator | None, check: bool = True) -> torch.Tensor:
    """One training patch start per clip, as the released code: ``randint(0, T - 101)`` (upper bound excluded).

    ``lengths`` (B,) frames per clip, each >= 101 (``check=False`` skips that check, a device sync, for
    callers that checked once). Returns (B,) int64; a 101-frame clip gives start 0 (itself).
    """
    if check:
        check_lengths(lengths, "batch entry")
    return randint_below(lengths - PATCH_FRAMES, generator)


def gather_patches(packed: PackedClips, clip_idx: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Patches ``packed.clip(c)[s : s + 101]`` for each (c, s): one gather, (B, 101, F) float32.

    ``packed`` may also be clips read lazily from a feature store (:class:`~uclser_lib.store.StoredClips`, or any
    object with a ``gather_patches(clip_idx, starts)`` method): only the patches' frames are read then.
    """
    if not isinstance(packed, PackedClips):
        return packed.gather_patches(clip_idx, starts)
    data = packed.data.contiguous()
    windows = data.as_strided(
        (len(data) - PATCH_FRAMES + 1, PATCH_FRAMES, data.shape[1]), (data.shape[1], data.shape[1], 1)
    )
    return windows.index_select(0, packed.offsets[clip_idx] + starts)  # every 101-frame window, without a copy


def random_patches(
    packed: PackedClips, clip_idx: torch.Tensor, generator: torch.Generator | None, check: bool = True
) -> torch.Tensor:
    """One random training patch per clip of ``clip_idx`` (B,): (B, 101, F)."""
    return gather_patches(packed, clip_idx, random_starts(packed.lengths[clip_idx], generator, check))


def other_clips(clip_idx: torch.Tensor, n_clips: int, generator: torch.Generator | None) -> torch.Tensor:
    """Two background clips per example, uniform among the clips that are neither ``clip_idx`` nor each other.

    ``clip_idx`` (B,) int64 in [0, n_clips). Returns (B, 2) int64: column 0 uniform over the other
    n_clips - 1 clips, column 1 uniform over the n_clips - 2 clips left (same law as the released
    rejection loop). Needs n_clips >= 3.
    """
    if n_clips < 3:
        raise ValueError(
            f"mix-back out of clip needs at least 3 clips (foreground + 2 distinct backgrounds), got {n_clips}"
        )
    n = torch.full_like(clip_idx, n_clips)
    b1 = (clip_idx + 1 + randint_below(n - 1, generator)) % n_clips
    lo, hi = torch.minimum(clip_idx, b1), torch.maximum(clip_idx, b1)
    b2 = randint_below(n - 2, generator)
    b2 = b2 + (b2 >= lo).long()  # skip the smaller excluded index, then the larger one
    b2 = b2 + (b2 >= hi).long()
    return torch.stack([b1, b2], dim=1)


def eval_patch_counts(lengths: torch.Tensor) -> torch.Tensor:
    """(N,) the evaluation patches of each clip of ``lengths`` (N,) frames: starts 0, 50, ... while start + 101 <= T
    (0 for a clip shorter than a patch)."""
    return ((lengths - PATCH_FRAMES) // EVAL_HOP + 1).clamp(min=0)


def eval_patches(packed: PackedClips) -> tuple[torch.Tensor, torch.Tensor]:
    """Every evaluation patch: starts 0, 50, 100, ... while start + 101 <= T, for every clip.

    Returns ``patches`` (P, 101, F) float32 and ``clip_index`` (P,) int64 (clip of each patch, ascending).
    """
    lengths = packed.lengths
    check_lengths(lengths)
    counts = eval_patch_counts(lengths)
    clip_index = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), counts)
    first = torch.cumsum(counts, 0) - counts  # index of each clip's first patch
    k = torch.arange(len(clip_index), device=lengths.device) - first[clip_index]
    return gather_patches(packed, clip_index, k * EVAL_HOP), clip_index


def epoch_batches(
    n_clips: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False, device=None
) -> list[torch.Tensor]:
    """One epoch's order: a random permutation of the clips cut into batches of ``batch_size`` clip indices."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen_device = generator.device if generator is not None else "cpu"
    perm = torch.randperm(n_clips, generator=generator, device=gen_device).to(device or gen_device)
    batches = list(perm.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _check_finite(packed: PackedClips) -> None:
    """ValueError naming the first clip and frame holding NaN or inf."""
    bad = torch.nonzero(~torch.isfinite(packed.data).all(1))
    if len(bad):
        row = int(bad[0, 0])
        clip = int(torch.searchsorted(packed.offsets, torch.tensor(row, device=packed.offsets.device), right=True)) - 1
        raise ValueError(
            f"features hold NaN or inf: clip {clip} (frame {row - int(packed.offsets[clip])}) "
            f"and {len(bad) - 1} more frame(s)"
        )


class ViewBuilder:
    """The two augmented views of each clip of a batch, built on the packed clips' device (docs/method.md §4-6).

    ``ViewBuilder(packed, cfg, mean, std)(clip_idx, generator)`` -> (view1, view2), each (B, 1, 101, F):
    two patches per clip, their backgrounds, mix-back with one lambda per clip, then ``cfg``'s
    augmentations drawn independently per view. ``mean``, ``std``: scalars of the training features.
    Construction checks once that every clip has >= 101 frames and that all features are finite.
    Under "mix_within_clip", clips shorter than 4 patches (404 frames) are not mixed (lambda = 0).
    With mix-back on, it also keeps the clips as powers 10**x (one more copy of the features) and mixes
    with :func:`mix_back_power`, unless some |x| exceeds ``POWER_DOMAIN_MAX_LOG10`` (then :func:`mix_back`).

    ``packed`` may be clips read lazily from a feature store (:class:`~uclser_lib.store.StoredClips`): each batch's
    patches and backgrounds are then read from the file (float32) and delivered to the store's device, and the
    powers are computed per batch instead of kept; the draws are the same, so the views equal those of the
    in-memory clips holding the same values up to float rounding. Finiteness is then the store writer's check.
    """

    def __init__(
        self,
        packed: PackedClips,
        cfg: AugmentConfig,
        mean: float | None = None,
        std: float | None = None,
        chunk_views="auto",
    ):
        check_lengths(packed.lengths)
        stored = not isinstance(packed, PackedClips)  # a feature store: its writer refused non-finite values
        if not stored:
            _check_finite(packed)
        if chunk_views == "auto":
            chunk_views = CPU_CHUNK_VIEWS if packed.data.device.type == "cpu" else None
        if chunk_views is not None and not (isinstance(chunk_views, int) and chunk_views >= 1):
            raise ValueError(f"ViewBuilder: chunk_views must be 'auto', None or an integer >= 1, got {chunk_views!r}")
        self.packed, self.cfg, self.chunk_views = packed, cfg, chunk_views
        self.augment = build_augment(cfg, mean, std)
        # Mix-back on powers computed once (one log10 per entry instead of exp/log-sum-exp), when float32 allows.
        self.power = None
        if cfg.mix != "none" and stored and packed.max_abs <= POWER_DOMAIN_MAX_LOG10:
            self.power = _Powers(packed)  # per batch: nothing more is held
        elif cfg.mix != "none" and not stored and float(packed.data.abs().max()) <= POWER_DOMAIN_MAX_LOG10:
            self.power = replace(packed, data=torch.pow(10.0, packed.data))

    @property
    def device(self) -> torch.device:
        return self.packed.data.device

    def _draw(self, clip_idx: torch.Tensor, generator, background_clips) -> dict[str, torch.Tensor]:
        """Where each of the 2B patches and backgrounds starts, and the (2B,) lambdas (view 1 rows, then view 2)."""
        lengths = self.packed.lengths[clip_idx]
        s1 = random_starts(lengths, generator, check=False)
        s2 = s1 if self.cfg.positives == "same" else random_starts(lengths, generator, check=False)
        both = torch.cat([clip_idx, clip_idx])
        draws = {"clips": both, "starts": torch.cat([s1, s2])}
        if self.cfg.mix == "none":
            return draws
        lam = uniform((len(clip_idx),), generator, self.device, 0.0, self.cfg.mix_alpha)
        if self.cfg.mix == "mix_within_clip":
            back = both
            lam = torch.where(lengths >= MIX_WITHIN_MIN_FRAMES, lam, 0.0)
        else:
            if background_clips is None:
                background_clips = other_clips(clip_idx, len(self.packed), generator)
            back = background_clips.to(self.device).T.reshape(-1)
        back_starts = random_starts(self.packed.lengths[back], generator, check=False)
        return {**draws, "back_clips": back, "back_starts": back_starts, "lambda": torch.cat([lam, lam])}

    def _apply(self, draws: dict, params: dict, rows: slice, power, record: dict | None) -> torch.Tensor:
        """Views ``rows`` of the batch from their draws: gather, mix-back, augmentations."""
        source = self.packed if power is None else power
        x = gather_patches(source, draws["clips"][rows], draws["starts"][rows])
        if record is not None:
            record["view"] = x
        if self.cfg.mix != "none":
            background = gather_patches(source, draws["back_clips"][rows], draws["back_starts"][rows])
            lam = draws["lambda"][rows]
            x = mix_back(x, background, lam, validate=False) if power is None else mix_back_power(x, background, lam)
            if record is not None:
                record.update(background=background, mixed=x, **{"lambda": lam[: len(lam) // 2]})
        params = {name: {k: v[rows] for k, v in p.items()} for name, p in params.items()}
        return self.augment.apply_params(x, params, record)

    def build(
        self, clip_idx: torch.Tensor, generator=None, background_clips=None, record: dict | None = None
    ) -> torch.Tensor:
        """Both views stacked, (2B, 101, F): rows :B view 1, rows B: view 2.

        All draws are made first, for the whole batch, then applied ``chunk_views`` views at a time (on a
        CPU, slices that stay in cache), so the result does not depend on the chunk size.
        ``background_clips`` (B, 2) fixes the mix-back background clips (default: drawn, docs/method.md §5);
        ``record`` (a dict) receives every intermediate stage, each (2B, 101, F) (and "lambda", (B,)); a
        recording build mixes in the log domain (:func:`mix_back`), so it shows the exact patches (the
        fast power-domain path agrees to ~1e-5).
        """
        clip_idx = clip_idx.to(self.device)
        draws = self._draw(clip_idx, generator, background_clips)
        n = len(draws["clips"])
        shape = torch.empty((n, PATCH_FRAMES, self.packed.data.shape[1]), device=self.device)  # shape and device only
        params = self.augment.sample_params(shape, generator)
        power = self.power if record is None else None  # recorded stages: the exact patches, log-domain mix-back
        chunk = n if record is not None or self.chunk_views is None else self.chunk_views
        views = [self._apply(draws, params, slice(k, k + chunk), power, record) for k in range(0, n, chunk)]
        return views[0] if len(views) == 1 else torch.cat(views)

    def __call__(
        self, clip_idx: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(view1, view2), each (B, 1, 101, F) float32 on the clips' device."""
        x = self.build(clip_idx, generator)[:, None]
        return x[: len(clip_idx)], x[len(clip_idx) :]


class _Powers:
    """Stored clips' patches as powers 10**x, computed on each batch's patches (the stored counterpart of the
    in-memory builder's ``power`` copy)."""

    def __init__(self, stored):
        self.stored = stored

    def gather_patches(self, clip_idx: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        return torch.pow(10.0, self.stored.gather_patches(clip_idx, starts))


class GraphedViews:
    """A :class:`ViewBuilder` captured in a CUDA graph for one batch size: a batch of views is one graph replay.

    Building a batch of views is ~60 small kernels, each launched separately in eager mode; a graph replay
    launches them all at once, for one fixed batch size. ``generator`` (a
    CUDA generator) is registered with the graph, so re-seeding it (``generator.manual_seed``) changes the
    draws of later replays as it would in eager mode. The returned views live in the graph's static buffer:
    use them before the next call. Same contract as ``ViewBuilder.__call__`` for batches of ``batch_size``.
    """

    def __init__(self, builder: ViewBuilder, batch_size: int, generator: torch.Generator, warmup: int = 3):
        if builder.device.type != "cuda" or generator.device.type != "cuda":
            raise ValueError("GraphedViews needs the packed clips and the generator on a CUDA device")
        self.builder, self.batch_size = builder, batch_size
        self.clip_idx = torch.zeros(batch_size, dtype=torch.int64, device=builder.device)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(generator)
        side = torch.cuda.Stream(builder.device)
        side.wait_stream(torch.cuda.current_stream(builder.device))
        with torch.cuda.stream(side):  # warm-up outside the graph (allocations, lazy inits)
            for _ in range(warmup):
                builder.build(self.clip_idx, generator)
        torch.cuda.current_stream(builder.device).wait_stream(side)
        with torch.cuda.graph(self.graph):
            self.out = builder.build(self.clip_idx, generator)[:, None]

    def __call__(
        self, clip_idx: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(view1, view2), each (B, 1, 101, F); ``generator`` must be the one given at capture (or None)."""
        if len(clip_idx) != self.batch_size:
            raise ValueError(f"GraphedViews was captured for batches of {self.batch_size} clips, got {len(clip_idx)}")
        self.clip_idx.copy_(clip_idx)
        self.graph.replay()
        return self.out[: self.batch_size], self.out[self.batch_size :]
