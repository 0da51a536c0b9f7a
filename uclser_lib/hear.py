"""A HEAR-style embedding API (hearbenchmark.com): any course encoder on any mono sound, docs/embedding-api.md.

``model = load_model(spec)`` wraps an encoder with the normalisation it expects and the feature parameters;
``get_timestamp_embeddings(audio, model)`` gives one embedding per evaluation patch (``data.PATCH_FRAMES`` log-mel
frames, one every ``model.patch_hop`` frames, ``data.EVAL_HOP`` by default) with the time of the patch's centre in
ms; ``get_scene_embeddings(audio, model)`` is their mean over time, which with the default hop is exactly the clip
embedding of ``embed.clip_embeddings`` (same features, same patches, same normalisation).

Audio: a (n_sounds, n_samples) float tensor, mono, in [-1, 1], at ``model.sample_rate`` (22,050 Hz). Each sound
goes through the library's own feature path (``features.prepare_waveform``: mean removed, peak-normalised, tiled
to 1 s when shorter; ``features.LogMel``), so loudness barely changes an embedding. Patches go through the
encoder ``model.batch_size`` at a time, so a long sound needs memory for its samples, its log-mel (0.44 x the
samples' size) and one batch of patches, whatever its length.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .data import EVAL_HOP, PATCH_FRAMES
from .embed import inference_fn
from .features import DEFAULT_PARAMS, LogMel, LogMelParams, load_audio, prepare_waveform, resample
from .folders import AUDIO_EXTENSIONS
from .pretrained import EncoderInfo, resolve_encoder

__all__ = [
    "AMPLITUDE_LIMIT",
    "DEFAULT_ENCODER",
    "EmbeddingModel",
    "audio_files",
    "get_scene_embeddings",
    "get_timestamp_embeddings",
    "load_model",
    "load_sound",
]

#: The encoder ``load_model("")`` loads (unless ``UCLSER_ENCODER`` names another, as in notebooks 04-06).
DEFAULT_ENCODER = "course-resnet18"
#: Samples beyond this magnitude are an error: not audio in [-1, 1] (e.g. int16 values cast to float).
AMPLITUDE_LIMIT = 2.0


class EmbeddingModel(torch.nn.Module):
    """An encoder ready for sounds: its weights, the feature normalisation it expects and the feature parameters.

    Attributes (HEAR): ``sample_rate`` (Hz, int), ``scene_embedding_size`` and ``timestamp_embedding_size`` (D,
    int, the encoder's ``embedding_dim``). Also ``encoder`` (eval mode), ``mean`` / ``std`` (log-mel units),
    ``params`` (:class:`~uclser_lib.features.LogMelParams`), ``patch_hop`` (frames between patches), ``batch_size``
    (patches per encoder forward), ``info`` (the :class:`~uclser_lib.pretrained.EncoderInfo` loaded, or None).
    ``model.to(device)`` moves the encoder and the feature module; embeddings come back on the model's device.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        mean: float,
        std: float,
        params: LogMelParams = DEFAULT_PARAMS,
        batch_size: int = 256,
        patch_hop: int = EVAL_HOP,
        info: EncoderInfo | None = None,
    ):
        super().__init__()
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be an int >= 1 (patches per forward), got {batch_size!r}")
        if not (isinstance(patch_hop, int) and patch_hop >= 1):
            raise ValueError(f"patch_hop must be an int >= 1 (log-mel frames), got {patch_hop!r}")
        if not (math.isfinite(std) and std > 0 and math.isfinite(mean)):
            raise ValueError(f"the normalisation must be finite with std > 0, got mean {mean!r}, std {std!r}")
        self.encoder = encoder.eval()
        self.logmel = LogMel(params)
        self.mean, self.std, self.params, self.info = float(mean), float(std), params, info
        self.batch_size, self.patch_hop = batch_size, patch_hop
        self.sample_rate = int(params.sr)
        self.scene_embedding_size = self.timestamp_embedding_size = int(encoder.embedding_dim)

    @property
    def min_samples(self) -> int:
        """The shortest sound accepted: one STFT frame (``params.n_fft`` samples)."""
        return int(self.params.n_fft)

    @property
    def hop_ms(self) -> float:
        """Milliseconds between timestamps: ``patch_hop * hop_length / sample_rate * 1000``."""
        return self.patch_hop * self.params.hop_length * 1000.0 / self.params.sr

    def n_timestamps(self, n_samples: int) -> int:
        """Patches (timestamps) of a sound of ``n_samples`` samples: ``(frames - 101) // patch_hop + 1``."""
        return (self.params.n_frames(n_samples) - PATCH_FRAMES) // self.patch_hop + 1

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """:func:`get_scene_embeddings` of ``audio`` (n_sounds, n_samples) -> (n_sounds, D)."""
        return get_scene_embeddings(audio, self)


def load_model(
    model_file_path: str = "", device="cpu", batch_size: int = 256, patch_hop: int = EVAL_HOP
) -> EmbeddingModel:
    """The :class:`EmbeddingModel` of ``model_file_path``, on ``device``.

    ``model_file_path``: "" (HEAR's default: ``UCLSER_ENCODER`` if set, else :data:`DEFAULT_ENCODER`), a shipped
    name (``course-resnet18``, ``course-vgglike``, ``course-crnn``), an exported encoder file, or a pre-training run
    folder / its ``checkpoint.pt`` (read by :func:`uclser_lib.pretrained.resolve_encoder`, sha256-checked).
    ``batch_size``: patches per encoder forward (bounds memory); ``patch_hop``: log-mel frames between patches.
    Raises ``FileNotFoundError`` / ``ValueError`` naming the spec.
    """
    spec = str(model_file_path) if model_file_path not in ("", None) else None
    encoder, info = resolve_encoder(spec, DEFAULT_ENCODER, device=device)
    return EmbeddingModel(encoder, info.mean, info.std, batch_size=batch_size, patch_hop=patch_hop, info=info).to(
        device
    )


def _check_audio(audio, model: EmbeddingModel) -> torch.Tensor:
    if not isinstance(model, EmbeddingModel):
        raise ValueError(f"model must be an EmbeddingModel from hear.load_model, got {type(model).__name__}")
    if not isinstance(audio, torch.Tensor):
        raise ValueError(f"audio must be a torch.Tensor (n_sounds, n_samples), got {type(audio).__name__}")
    if not audio.is_floating_point():
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype} (int16? divide by 32768)")
    if audio.ndim != 2:
        hint = "; stereo? average the channels" if audio.ndim == 3 else "; one sound? pass audio[None]"
        raise ValueError(f"audio must be mono, shape (n_sounds, n_samples), got shape {tuple(audio.shape)}{hint}")
    if audio.shape[0] == 0:
        raise ValueError("audio holds no sound (n_sounds = 0)")
    if audio.shape[1] <= 8 < audio.shape[0]:  # as soundfile reads a stereo file: samples down, channels across
        raise ValueError(
            f"audio has shape {tuple(audio.shape)}: {audio.shape[0]} sounds of {audio.shape[1]} samples? It looks like "
            "(n_samples, n_channels): average the channels to mono and pass audio.mean(dim=1)[None], shape "
            "(1, n_samples)"
        )
    if audio.shape[1] < model.min_samples:
        raise ValueError(
            f"audio is {audio.shape[1]} samples long, shorter than {model.min_samples} "
            f"({1000 * model.min_samples / model.sample_rate:.1f} ms at {model.sample_rate} Hz, one STFT frame)"
        )
    if not torch.isfinite(audio).all():
        raise ValueError("audio holds NaN or infinite samples")
    peak = float(audio.abs().max())
    if peak > AMPLITUDE_LIMIT:
        raise ValueError(
            f"audio reaches {peak:g}, far outside [-1, 1] (limit {AMPLITUDE_LIMIT}): scale it to [-1, 1] first"
        )
    return audio


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: EmbeddingModel) -> tuple[torch.Tensor, torch.Tensor]:
    """One embedding per patch of each sound, and the patch centres' times.

    ``audio``: (n_sounds, n_samples) float, mono, in [-1, 1], at ``model.sample_rate``. Returns
    ``(embeddings (n_sounds, T, D) float32, timestamps (n_sounds, T) float64 ms)`` on the model's device, with
    ``T = model.n_timestamps(n_samples)`` and timestamp ``k`` = ``(k * patch_hop + 50) * hop_length / sr * 1000``:
    the centre frame (50 of 101) of patch ``k``, frame ``f`` being centred on sample ``f * hop_length``; so they
    are ``model.hop_ms`` apart exactly. A sound shorter than 1 s is tiled to 1 s first (one patch, centred at
    498.9 ms of the tiled sound). Patches run ``model.batch_size`` at a time.
    """
    audio = _check_audio(audio, model)
    device = model.logmel.fbank.device
    p, hop = model.params, model.patch_hop
    n_sounds, t = audio.shape[0], model.n_timestamps(audio.shape[1])
    out = torch.empty(n_sounds, t, model.timestamp_embedding_size, device=device)
    feats = []
    for y in audio:  # the library's feature path, one sound at a time (its STFT is chunked inside LogMel)
        wave = prepare_waveform(y.detach().to("cpu", torch.float32), p.sr, p).to(device)
        feats.append(model.logmel.packed([wave])[0])
    patches = torch.stack(feats).unfold(1, PATCH_FRAMES, hop)  # (n_sounds, T, n_mels, 101): a view, no copy
    assert patches.shape[1] == t, (patches.shape, t)
    flat = torch.arange(n_sounds * t, device=device)
    # on a CPU, the VGG-like and the CRNN run through embed's frozen graph (BatchNorm folded), as embed_eval_patches
    run = inference_fn(model.encoder.embed, device, n_sounds * t, (1, PATCH_FRAMES, patches.shape[2]))
    for batch in flat.split(model.batch_size):
        s, k = batch // t, batch % t
        x = patches[s, k].transpose(1, 2)  # (B, 101, n_mels), copied for this batch only
        out[s, k] = run(((x - model.mean) / model.std)[:, None]).float()
    frames = torch.arange(t, dtype=torch.float64, device=device) * hop + PATCH_FRAMES // 2
    stamps = (frames * (p.hop_length * 1000.0 / p.sr)).expand(n_sounds, t).contiguous()
    return out, stamps


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: EmbeddingModel) -> torch.Tensor:
    """One embedding per sound: the mean over time of :func:`get_timestamp_embeddings` (n_sounds, D) float32.

    ``audio`` as there. With the default ``patch_hop`` this equals the library's clip embedding
    (``embed.clip_embeddings``: the mean over a clip's evaluation patches).
    """
    emb, _ = get_timestamp_embeddings(audio, model)
    return emb.mean(dim=1)


def load_sound(path, model: EmbeddingModel) -> torch.Tensor:
    """A sound file as the API takes it: float32 (n_samples,) mono in [-1, 1] at ``model.sample_rate``.

    Read with :func:`uclser_lib.features.load_audio` (channels averaged) and resampled with
    :func:`uclser_lib.features.resample` when its rate differs. Raises ``features.AudioError`` naming the file.
    """
    y, sr = load_audio(path)
    return resample(y, sr, model.params) if sr != model.sample_rate else torch.from_numpy(y)


def audio_files(folder) -> list[Path]:
    """The sound files (``folders.AUDIO_EXTENSIONS``) under ``folder``, at any depth, sorted by path."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected a folder of {'/'.join(AUDIO_EXTENSIONS)} files)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"{folder}: no {'/'.join(AUDIO_EXTENSIONS)} file in it or below it")
    return files
