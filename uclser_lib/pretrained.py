"""The course's own pre-trained encoders in ``pretrained/``: export from a training checkpoint, load with checks.

Each encoder is ``pretrained/<name>.pt`` (fp16 encoder weights, the projection head's weights where the export
kept them, the feature mean/std and class list), listed in ``pretrained/manifest.json`` with its config, dataset,
seed, epochs, kNN accuracy, how it was made (machine, hours) and sha256. Loading
verifies the sha256 before unpickling anything and loads with ``weights_only=True``.

``resolve_encoder`` is what notebooks 04-06 call: the shipped encoder, or the user's own (a run folder of notebook
03 or ``python -m uclser_lib pretrain``, or an exported file; ``UCLSER_ENCODER``), with a label that says whose.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import load_checkpoint
from .models import Encoder, ProjectionHead, build_encoder
from .runtime import describe_machine, encoder_choice, sha256_of, shipped_dir, write_atomic

__all__ = [
    "PRETRAINED_DIR",
    "EncoderInfo",
    "check_encoder_spec",
    "check_export",
    "export_encoder",
    "load_encoder",
    "load_head",
    "load_init_encoder",
    "load_pretrained",
    "read_manifest",
    "resolve_encoder",
]

#: The shipped encoders and their manifest (the checkout's ``pretrained/``, or the installed package's copy).
PRETRAINED_DIR = shipped_dir()


def read_manifest(folder=None) -> dict:
    path = Path(folder or PRETRAINED_DIR) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def export_encoder(
    checkpoint,
    name: str,
    dataset: str,
    folder=None,
    half: bool = True,
    made_on: str | None = None,
    overwrite: bool = False,
    replace_shipped: bool = False,
) -> dict:
    """Write the encoder and projection head of a pre-training ``checkpoint`` to ``<folder>/<name>.pt``, and its
    manifest entry.

    ``folder`` defaults to ``pretrained/``. ``made_on``: how the run was made, in words (e.g. "CPU, 1 thread"),
    recorded with the machine that exports (``describe_machine``) and the run's summed epoch time in hours.
    The head is shipped so that a notebook can compare kNN on the head's output with kNN on the encoder's.

    An encoder is never replaced unasked: an existing ``<name>`` (its file or manifest entry) is refused
    (``FileExistsError``, one line) unless ``overwrite``; a shipped one (``pretrained/course-<arch>``) is refused even
    then, unless ``replace_shipped`` (the maintainers' remake, ``pretrained/make_pretrained.sh``). An export into the
    checkpoint's own run folder (notebook 03's) belongs to that run and is replaced with it. Checked before anything
    is read or written.
    """
    folder = Path(folder or PRETRAINED_DIR)
    check_export(name, folder, checkpoint, overwrite, replace_shipped)
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
    if "init" in ckpt:  # further pre-training: the encoder it started from (pretrain --init)
        entry["init"] = ckpt["init"]
    metrics = folder / f"{name}.metrics.json"  # the per-epoch curves, for the notebooks
    write_atomic(metrics, json.dumps(ckpt["history"]) + "\n")
    entry["metrics"] = metrics.name
    manifest = read_manifest(folder)
    manifest[name] = entry
    write_atomic(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return entry


def check_export(
    name: str, folder=None, checkpoint=None, overwrite: bool = False, replace_shipped: bool = False
) -> None:
    """Refuse (``FileExistsError``, one line) to replace the encoder ``name`` in ``folder`` (default ``pretrained/``)
    unasked, as :func:`export_encoder` does; ``pretrain --export`` asks before it trains."""
    from .models import ARCHITECTURES

    folder = Path(folder or PRETRAINED_DIR)
    path = folder / f"{name}.pt"
    if not (path.exists() or name in read_manifest(folder)):
        return
    if checkpoint is not None and folder.resolve() == Path(checkpoint).parent.resolve():
        return  # the run's own export follows its run
    shipped = any(_is_shipped(name, folder, arch) for arch in ARCHITECTURES)
    if shipped and not replace_shipped:
        raise FileExistsError(
            f"{path}: {name!r} is a shipped encoder and is never replaced (--overwrite included); export under "
            f"another --name (e.g. my-{name.removeprefix('course-')})"
        )
    if not (overwrite or replace_shipped):
        raise FileExistsError(
            f"{path}: an encoder named {name!r} is already there; pass --overwrite to replace it (its file, metrics "
            "and manifest entry), or choose another --name"
        )


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

    a name in ``pretrained/manifest.json``; the path of a pre-training ``checkpoint.pt`` or of the run's folder
    that holds it; an exported encoder file (``<name>.pt`` listed in a ``manifest.json`` beside it);
    ``random:<arch>`` (a fresh encoder, normalised with the statistics of ``pretrain_set``, the supervised
    baseline); or ``released:<arch>`` (the authors' published encoder, ``vgglike`` or ``crnn``, from the cache folder
    after ``python -m uclser_lib download released-encoders``, sha256-checked; normalised with ``pretrain_set``'s mean
    and the std the released code divided by, :func:`uclser_lib.released.released_std`).
    Returns ``(encoder in eval mode, mean, std)``; :func:`resolve_encoder` returns the same encoder with what it is.
    """
    encoder, info = _load(spec, pretrain_set, device)
    return encoder, info.mean, info.std


@dataclass(frozen=True)
class EncoderInfo:
    """What :func:`resolve_encoder` loaded.

    ``name``: the shipped or exported encoder's name, the run folder's name, or the spec (``random:``/``released:``).
    ``label``: how tables and figures name it: the shipped name (``course-resnet18``), or ``"yours: <name>"`` for an
    encoder that is not one of the shipped ``pretrained/course-<arch>``. ``arch``: its architecture. ``dataset``:
    the dataset it was pre-trained on, None where nothing records it (a run's checkpoint that was not exported).
    ``mean``/``std``: the feature normalisation it expects (log-mel units). ``sha256``: of the file loaded (None for
    a random init). ``epochs``: pre-training epochs (0 for a random init, None where unknown). ``path``: the file
    loaded (None for a random init).
    """

    name: str
    label: str
    yours: bool
    arch: str
    dataset: str | None
    mean: float
    std: float
    sha256: str | None
    epochs: int | None
    path: Path | None


def resolve_encoder(spec, default: str, pretrain_set=None, device="cpu") -> tuple[Encoder, EncoderInfo]:
    """The encoder a notebook evaluates (eval mode, float32, on ``device``) and its :class:`EncoderInfo`.

    ``spec``: None (then ``UCLSER_ENCODER``, :func:`uclser_lib.runtime.encoder_choice`, or else ``default``, e.g.
    ``"course-resnet18"``), or any spec :func:`load_encoder` takes: a shipped name, a pre-training run's folder
    (notebook 03, ``python -m uclser_lib pretrain``: its ``checkpoint.pt``), an exported encoder file, or
    ``random:<arch>`` / ``released:<arch>`` (these need ``pretrain_set``). Raises ``FileNotFoundError`` or
    ``ValueError`` naming the spec and what was expected.
    """
    chosen = spec if spec is not None else (encoder_choice() or default)
    if not isinstance(chosen, (str, Path)) or not str(chosen).strip():
        raise ValueError(
            f"encoder {chosen!r}: expected a shipped name ({', '.join(sorted(read_manifest()))}), a run folder or an "
            "exported encoder file"
        )
    return _load(str(chosen), pretrain_set, device)


def _is_shipped(name: str, folder, arch: str) -> bool:
    """The shipped encoders are ``pretrained/course-<arch>``; anything else (a run, an export) is the user's."""
    return Path(folder).resolve() == Path(PRETRAINED_DIR).resolve() and name == f"course-{arch}"


def _from_entry(name: str, folder, device) -> tuple[Encoder, EncoderInfo]:
    encoder, entry = load_pretrained(name, folder=folder, device=device)
    shipped = _is_shipped(name, folder or PRETRAINED_DIR, entry["arch"])
    info = EncoderInfo(
        name=name,
        label=name if shipped else f"yours: {name}",
        yours=not shipped,
        arch=entry["arch"],
        dataset=entry.get("dataset"),
        mean=float(entry["mean"]),
        std=float(entry["std"]),
        sha256=entry["sha256"],
        epochs=entry.get("epochs"),
        path=Path(folder or PRETRAINED_DIR) / entry["file"],
    )
    return encoder, info


def check_encoder_spec(spec: str) -> None:
    """Refuse, cheaply, an encoder spec that cannot load: nothing is read but names, paths and manifests.

    The accepted forms (the grammar :func:`load_encoder` and :func:`resolve_encoder` read, checked here only): a
    shipped name (``pretrained/manifest.json``), a pre-training run's folder holding ``checkpoint.pt``, the path of
    a ``.pt`` file (a run's checkpoint or an exported encoder; any other existing file is read as one),
    ``random:<arch>`` (``arch`` in :data:`uclser_lib.models.ARCHITECTURES`) or ``released:<arch>`` (``vgglike`` or
    ``crnn``). Raises ``ValueError`` (one line naming the spec and the accepted forms) for a spec of none of these
    forms, and ``FileNotFoundError`` (one line naming the spec) for a path or a name that is not there.
    """
    _parse_spec(spec)


def _parse_spec(spec: str) -> tuple[str, object]:
    """The one reader of the encoder spec grammar: ``(kind, what)``, ``("released", arch)``, ``("random", arch)``,
    ``("file", path of the .pt to read)`` or ``("shipped", name)``; errors as :func:`check_encoder_spec` says."""
    from .download import RELEASED_FILES
    from .models import ARCHITECTURES

    forms = "a shipped name, a run folder, a checkpoint.pt or exported .pt, random:<arch> or released:<arch>"
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"encoder {spec!r}: expected {forms}")
    kind, colon, arch = spec.partition(":")
    if colon and kind == "released":
        if arch not in RELEASED_FILES:
            raise ValueError(f"encoder {spec!r}: the authors released {sorted(RELEASED_FILES)} only")
        return kind, arch
    if colon and kind == "random":
        if arch not in ARCHITECTURES:
            raise ValueError(f"encoder {spec!r}: unknown architecture; expected random:<{'|'.join(ARCHITECTURES)}>")
        return kind, arch
    expected = "expected a shipped encoder name, a pre-training run's folder, its checkpoint.pt or an exported .pt"
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"encoder {spec!r}: a folder without a checkpoint.pt; {expected}")
        return "file", path / "checkpoint.pt"
    if path.suffix == ".pt" and path.is_file():
        return "file", path
    if path.is_file() and (len(path.parts) > 1 or spec not in read_manifest()):
        return "file", path  # another existing file is read as a checkpoint: its error then says what it is
    if path.suffix == ".pt" or len(path.parts) > 1:
        raise FileNotFoundError(f"encoder {spec!r}: no such file or folder; {expected}")
    if spec not in read_manifest():
        raise FileNotFoundError(
            f"encoder {spec!r}: no shipped encoder of that name (available: {sorted(read_manifest())}), nor a "
            f"run folder or exported .pt file of that path; or {forms}"
        )
    return "shipped", spec


def _released_path(arch: str) -> Path:
    """The downloaded file of the authors' ``arch`` encoder; FileNotFoundError (one line) before the download."""
    from .download import RELEASED_FILES, cache_dir

    path = cache_dir() / RELEASED_FILES[arch]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not downloaded yet (run `python -m uclser_lib download released-encoders`; "
            "the cache folder is UCLSER_CACHE, default <data root>/cache)"
        )
    return path


def load_init_encoder(spec: str, device="cpu") -> tuple[Encoder, str]:
    """The encoder ``spec`` names, for its weights only: what ``pretrain --init`` starts from
    (:func:`uclser_lib.train.pretrain`'s ``init``). Returns ``(encoder, arch)``.

    ``spec``: a shipped name, a pre-training run's folder or its ``checkpoint.pt``, an exported ``.pt`` file, or
    ``released:<arch>`` (after ``python -m uclser_lib download released-encoders``; before it, the one-line
    FileNotFoundError that says so); checked (sha256) and loaded as :func:`load_encoder` does, but no normalisation
    is needed (pre-training normalises with its own set's statistics). ``random:<arch>`` is refused (ValueError):
    a random start is pre-training without ``--init``.
    """
    kind, what = _parse_spec(spec)
    if kind == "random":
        raise ValueError(f"--init {spec!r}: a random init is what pretrain does without --init")
    if kind == "released":
        from .released import load_released_encoder

        return load_released_encoder(what, _released_path(what)).to(device), what
    encoder, info = _load(spec, None, device)
    return encoder, info.arch


def _load(spec: str, pretrain_set, device) -> tuple[Encoder, EncoderInfo]:
    """An encoder from a spec (see :func:`load_encoder`), read by :func:`_parse_spec`."""
    from .data import feature_stats

    kind, what = _parse_spec(spec)
    if kind == "released":
        from .released import RELEASED_SHA256, load_released_encoder, released_std

        arch = what
        if pretrain_set is None:
            raise ValueError(f"encoder {spec!r}: a released encoder needs the pre-training set for its mean and std")
        path = _released_path(arch)
        mean, std = feature_stats(pretrain_set.clips)
        info = EncoderInfo(
            spec, spec, False, arch, None, mean, released_std(std), RELEASED_SHA256.get(path.name), None, path
        )
        return load_released_encoder(arch, path).to(device).eval(), info

    if kind == "random":
        if pretrain_set is None:
            raise ValueError(f"encoder {spec!r}: a random init needs the pre-training set for its mean and std")
        arch = what
        mean, std = feature_stats(pretrain_set.clips)
        encoder = build_encoder(arch, n_classes=len(pretrain_set.classes)).to(device).eval()
        return encoder, EncoderInfo(spec, spec, False, arch, None, mean, std, None, 0, None)
    if kind == "file":
        path = what
        listed = {e.get("file"): n for n, e in read_manifest(path.parent).items()}
        if path.name in listed:  # an exported encoder (pretrained/<name>.pt): loaded through its manifest entry
            return _from_entry(listed[path.name], path.parent, device)
        ckpt = load_checkpoint(path)
        if "config" not in ckpt or "model" not in ckpt:
            kind = "an exported encoder not listed in a manifest.json beside it" if "encoder" in ckpt else "not a run"
            raise ValueError(
                f"{spec}: {kind} checkpoint; expected a pre-training run's checkpoint.pt or the name of an exported "
                f"encoder in pretrained/manifest.json (available: {sorted(read_manifest())})"
            )
        arch, planned = ckpt["config"]["arch"], ckpt["config"].get("epochs")
        if isinstance(planned, int) and ckpt["epoch"] < planned:  # killed or stopped before its last epoch
            warnings.warn(
                f"{path}: an unfinished run: {ckpt['epoch']} of its {planned} epochs done; continue it with "
                f"`python -m uclser_lib pretrain --resume --run_dir {path.parent}` (and its config)",
                stacklevel=3,
            )
        encoder = build_encoder(arch, n_classes=len(ckpt["classes"]))
        encoder.load_state_dict({k[len("encoder.") :]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")})
        # an export of this very state beside it (notebook 03 exports into its run folder) records the dataset
        exports = [
            e
            for e in read_manifest(path.parent).values()
            if (e.get("epochs"), e.get("config")) == (ckpt["epoch"], ckpt["config"])
        ]
        name = path.parent.name
        info = EncoderInfo(
            name=name,
            label=f"yours: {name}",
            yours=True,
            arch=arch,
            dataset=exports[0].get("dataset") if exports else None,
            mean=float(ckpt["mean"]),
            std=float(ckpt["std"]),
            sha256=sha256_of(path),
            epochs=ckpt["epoch"],
            path=path,
        )
        return encoder.to(device).eval(), info
    return _from_entry(spec, None, device)  # a shipped name
