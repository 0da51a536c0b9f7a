"""The course's own pre-trained encoders in ``pretrained/``: export from a training checkpoint, load with checks.

Each encoder is ``pretrained/<name>.pt`` (fp16 encoder weights, the projection head's weights where the export
kept them, the feature mean/std and class list), listed in ``pretrained/manifest.json`` with its config, dataset,
seed, epochs, kNN accuracy, how it was made (machine, hours) and sha256. Loading
verifies the sha256 before unpickling anything and loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoints import load_checkpoint
from .models import Encoder, ProjectionHead, build_encoder
from .runtime import REPO_ROOT, describe_machine, sha256_of, write_atomic

__all__ = ["PRETRAINED_DIR", "export_encoder", "load_encoder", "load_head", "load_pretrained", "read_manifest"]

PRETRAINED_DIR = REPO_ROOT / "pretrained"


def read_manifest(folder=None) -> dict:
    path = Path(folder or PRETRAINED_DIR) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def export_encoder(
    checkpoint, name: str, dataset: str, folder=None, half: bool = True, made_on: str | None = None
) -> dict:
    """Write the encoder and projection head of a pre-training ``checkpoint`` to ``<folder>/<name>.pt``, and its
    manifest entry.

    ``folder`` defaults to ``pretrained/``. ``made_on``: how the run was made, in words (e.g. "CPU, 1 thread"),
    recorded with the machine that exports (``describe_machine``) and the run's summed epoch time in hours.
    The head is shipped so that a notebook can compare kNN on the head's output with kNN on the encoder's.
    """
    folder = Path(folder or PRETRAINED_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(checkpoint)

    def part(prefix: str) -> dict:
        w = {k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
        return {k: v.half() if half and v.is_floating_point() else v for k, v in w.items()}

    arch = ckpt["config"]["arch"]
    path = folder / f"{name}.pt"
    blob = {
        "arch": arch,
        "encoder": part("encoder."),
        "head": part("head."),
        "mean": ckpt["mean"],
        "std": ckpt["std"],
        "classes": ckpt["classes"],
    }
    write_atomic(path, save=lambda p: torch.save(blob, p))
    last = ckpt["history"][-1]
    entry = {
        "file": path.name,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "arch": arch,
        "dataset": dataset,
        "seed": ckpt["config"]["seed"],
        "epochs": ckpt["epoch"],
        "config": ckpt["config"],
        "knn": {k: v for k, v in last.items() if "knn" in k},
        "final_loss": last["loss"],
        "made": {
            "how": made_on or "",
            "train_hours": round(sum(r.get("seconds", 0.0) for r in ckpt["history"]) / 3600, 2),
            "machine": describe_machine(torch.device("cpu")),
        },
    }
    metrics = folder / f"{name}.metrics.json"  # the per-epoch curves, for the notebooks
    write_atomic(metrics, json.dumps(ckpt["history"]) + "\n")
    entry["metrics"] = metrics.name
    manifest = read_manifest(folder)
    manifest[name] = entry
    write_atomic(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return entry


def load_pretrained(name: str, folder=None, device="cpu") -> tuple[Encoder, dict]:
    """The encoder ``name`` (eval mode, float32, on ``device``) and its manifest entry.

    The entry carries ``mean`` / ``std`` / ``classes``.

    Raises ``FileNotFoundError`` for an unknown name or a missing file and ``ValueError`` for a sha256 mismatch
    (a corrupt or replaced file) or weights that do not fit the architecture.
    """
    folder = Path(folder or PRETRAINED_DIR)
    manifest = read_manifest(folder)
    if name not in manifest:
        raise FileNotFoundError(
            f"{folder / 'manifest.json'}: no pre-trained encoder {name!r} (available: {sorted(manifest)})"
        )
    entry = manifest[name]
    path = folder / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: listed in the manifest but missing")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ValueError(
            f"{path}: sha256 is {digest}, the manifest expects {entry['sha256']} (corrupt or replaced file)"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    encoder = build_encoder(blob["arch"], n_classes=len(blob["classes"]))
    try:
        encoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["encoder"].items()})
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit a {blob['arch']} encoder: {err}") from None
    history = json.loads((folder / entry["metrics"]).read_text()) if "metrics" in entry else []
    info = dict(entry, mean=blob["mean"], std=blob["std"], classes=blob["classes"], history=history)
    info["head_state"] = blob.get("head") or None  # the projection head's weights, where the export kept them
    return encoder.to(device).eval(), info


def load_head(name: str, folder=None, device="cpu") -> ProjectionHead:
    """The projection head shipped with the pre-trained encoder ``name`` (eval mode, float32, on ``device``).

    Raises ``ValueError`` when the file has no head (encoders exported before heads were shipped); the sha256 is
    checked as in :func:`load_pretrained`.
    """
    encoder, info = load_pretrained(name, folder, device)  # one read of the file, its sha256 checked there
    if info["head_state"] is None:
        path = Path(folder or PRETRAINED_DIR) / info["file"]
        raise ValueError(f"{path}: no projection head in this file (exported before heads were shipped)")
    cfg = info["config"]
    head = ProjectionHead(encoder.embedding_dim, cfg.get("proj_hidden", 512), cfg.get("proj_dim", 512))
    head.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in info["head_state"].items()})
    return head.to(device).eval()


def load_encoder(spec: str, pretrain_set=None, device="cpu") -> tuple[Encoder, float, float]:
    """An encoder and the normalisation it expects, from ``spec``:

    a name in ``pretrained/manifest.json``; the path of a pre-training ``checkpoint.pt``; ``random:<arch>``
    (a fresh encoder, normalised with the statistics of ``pretrain_set``, the supervised baseline); or
    ``released:<arch>`` (the authors' published encoder, ``vgglike`` or ``crnn``, from the cache folder after
    ``python -m uclser_lib download released-encoders``, sha256-checked; normalised with ``pretrain_set``'s mean
    and the std the released code divided by, :func:`uclser_lib.released.released_std`).
    Returns ``(encoder in eval mode, mean, std)``.
    """
    from .data import feature_stats

    if spec.startswith("released:"):
        from .download import RELEASED_FILES, cache_dir
        from .released import load_released_encoder, released_std

        arch = spec.split(":", 1)[1]
        if arch not in RELEASED_FILES:
            raise ValueError(f"encoder {spec!r}: the authors released {sorted(RELEASED_FILES)} only")
        if pretrain_set is None:
            raise ValueError(f"encoder {spec!r}: a released encoder needs the pre-training set for its mean and std")
        path = cache_dir() / RELEASED_FILES[arch]
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not downloaded yet (run `python -m uclser_lib download released-encoders`; "
                "the cache folder is UCLSER_CACHE, default <data root>/cache)"
            )
        mean, std = feature_stats(pretrain_set.clips)
        return load_released_encoder(arch, path).to(device).eval(), mean, released_std(std)

    if spec.startswith("random:"):
        if pretrain_set is None:
            raise ValueError(f"encoder {spec!r}: a random init needs the pre-training set for its mean and std")
        mean, std = feature_stats(pretrain_set.clips)
        return build_encoder(spec.split(":", 1)[1], n_classes=len(pretrain_set.classes)).to(device).eval(), mean, std
    if spec.endswith(".pt") and Path(spec).is_file():
        path = Path(spec)
        listed = {e.get("file"): n for n, e in read_manifest(path.parent).items()}
        if path.name in listed:  # an exported encoder (pretrained/<name>.pt): loaded through its manifest entry
            encoder, info = load_pretrained(listed[path.name], folder=path.parent, device=device)
            return encoder, info["mean"], info["std"]
        ckpt = load_checkpoint(spec)
        if "config" not in ckpt or "model" not in ckpt:
            kind = "an exported encoder not listed in a manifest.json beside it" if "encoder" in ckpt else "not a run"
            raise ValueError(
                f"{spec}: {kind} checkpoint; expected a pre-training run's checkpoint.pt or the name of an exported "
                f"encoder in pretrained/manifest.json (available: {sorted(read_manifest())})"
            )
        encoder = build_encoder(ckpt["config"]["arch"], n_classes=len(ckpt["classes"]))
        encoder.load_state_dict({k[len("encoder.") :]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")})
        return encoder.to(device).eval(), ckpt["mean"], ckpt["std"]
    encoder, info = load_pretrained(spec, device=device)
    return encoder, info["mean"], info["std"]
