"""From a WAV file to a log-mel spectrogram (frames x 96 bands), the recipe of docs/method.md §3.

Two paths compute the same thing:

- :func:`extract_logmel_librosa`, one file at a time with librosa: short and readable, the
  reference the course shows in notebook 01;
- :class:`LogMel` / :func:`extract_logmel` / :func:`extract_many`, torch, batched over clips of
  different lengths without padding them to a common length: the STFT and mel on the GPU when there
  is one (CPU workers read and resample), otherwise everything in CPU worker processes.

Resampling (step 1) uses soxr's "HQ" filter, the one librosa uses, when the ``soxr`` package is
importable, else torchaudio's Kaiser-windowed sinc tuned to follow it (:func:`resample`); both agree
with the reference features within tolerance, so the backend is not a feature parameter.
The way back, :func:`logmel_to_audio` (log-mel -> sound by mel inversion and Griffin-Lim, as torchaudio keeps
``InverseMelScale`` beside its transforms), lets the course listen to features and augmented views.

librosa, soundfile and soxr are imported only where files are read or sound is rebuilt, so training code needs
none of them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import struct
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .runtime import check_torch_pair, pick_device

check_torch_pair()  # before torchaudio's extension loads: a mismatched pair fails there with an undefined symbol
import torchaudio.functional as AF  # noqa: E402

__all__ = [
    "DEFAULT_PARAMS",
    "DOWNMIX_LOSS_DB",
    "N_MELS",
    "RESAMPLERS",
    "AudioError",
    "LogMel",
    "LogMelParams",
    "extract_logmel",
    "extract_logmel_librosa",
    "extract_many",
    "load_audio",
    "logmel_from_waveforms",
    "logmel_to_audio",
    "nonneg_lstsq",
    "prepare_waveform",
    "resample",
    "resampler_in_use",
    "stft_power",
]


#: Mel bands of the features (docs/method.md §3): the F of every (T, F) clip and (101, F) patch. Defined here only.
N_MELS = 96


@dataclass(frozen=True)
class LogMelParams:
    """Feature-extraction parameters (docs/method.md §3). Sample counts at ``sr``, frequencies in Hz."""

    sr: int = 22050
    n_fft: int = 2048
    win_length: int = 660
    hop_length: int = 220
    n_mels: int = N_MELS
    fmin: float = 50.0
    fmax: float = 10500.0
    min_seconds: float = 1.0  # shorter clips are tiled up to this length
    peak_offset: float = 0.005  # y / (max|y| + peak_offset)
    eps: float = 1.1e-8  # added to the waveform before the STFT and to the mel energies before log10
    # torchaudio's Kaiser-windowed sinc resampler, used where soxr is absent, tuned to follow librosa's default
    # soxr "HQ" filter, which the released features used (tests/test_features.py holds both resamplers to the
    # released features: within 0.05 log10 units on the 44.1 kHz reference clip)
    resample_width: int = 64
    resample_rolloff: float = 0.96
    resample_beta: float = 10.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def min_samples(self) -> int:
        return int(round(self.min_seconds * self.sr))

    def n_frames(self, n_samples: int) -> int:
        """Frames of a (tiled) clip of ``n_samples`` samples at ``sr``: 1 + n // hop (centred frames)."""
        return 1 + max(n_samples, self.min_samples) // self.hop_length


DEFAULT_PARAMS = LogMelParams()


class AudioError(ValueError):
    """A file could not be turned into audio: the message names the file and why."""


#: A downmix this far (dB) below the mean energy of its channels warns: the channels cancel (antiphase).
DOWNMIX_LOSS_DB = 20.0
_warned_downmix: set[str] = set()


def _check_wav_length(path: Path) -> None:
    """Raise :class:`AudioError` when a RIFF/WAVE file's data chunk is shorter than its header says (a truncated
    copy or download, which libsndfile would decode silently as a shorter clip). Other formats are left alone."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            cid, n = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if n in (0, 0xFFFFFFFF):  # a streamed WAV that never wrote its size: nothing to compare
                    return
                if pos + 8 + n > size:
                    raise AudioError(
                        f"{path}: truncated WAV: its data chunk declares {n} bytes, the file holds "
                        f"{size - pos - 8} (an interrupted copy or download? fetch it again)"
                    )
                return
            pos += 8 + n + (n & 1)


def _check_downmix(path: Path, y: np.ndarray, mono: np.ndarray) -> None:
    """Warn (once per file) when averaging the channels of ``y`` (N, C) loses most of their energy."""
    channels = float(np.mean(np.square(y, dtype=np.float64)))  # the mean of the channels' energies
    if channels <= 0 or str(path) in _warned_downmix:
        return
    mixed = float(np.mean(np.square(mono, dtype=np.float64)))
    loss = 10 * np.log10(channels / max(mixed, 1e-30))
    if loss > DOWNMIX_LOSS_DB:
        _warned_downmix.add(str(path))
        warnings.warn(
            f"{path}: its {y.shape[1]} channels cancel when averaged to mono (the mix is {loss:.0f} dB below the "
            "channels' mean energy: channels in antiphase?); the features describe what is left",
            stacklevel=3,
        )


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a sound file as float32 mono in [-1, 1] (stereo is averaged); return ``(samples (N,), rate in Hz)``.

    A WAV shorter than its header says is an :class:`AudioError`; a multi-channel file whose channels cancel when
    averaged (more than :data:`DOWNMIX_LOSS_DB` dB lost) warns once, naming it.
    """
    import soundfile as sf  # imported here: training code needs no audio I/O package

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        _check_wav_length(path)
    except OSError as err:
        raise AudioError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        y, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError... by format
        raise AudioError(f"{path}: not a readable audio file ({err})") from None
    if y.shape[0] == 0:
        raise AudioError(f"{path}: the audio file holds no samples")
    if y.shape[1] > 1:
        mono = y.mean(axis=1)
        _check_downmix(path, y, mono)
        y = mono
    else:
        y = y[:, 0]
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    return np.ascontiguousarray(y), int(sr)


RESAMPLERS = ("auto", "soxr", "torchaudio")


@functools.cache
def _soxr():
    """The soxr module, or None where it is not installed."""
    try:
        import soxr
    except ImportError:
        return None
    return soxr


def resampler_in_use(resampler: str = "auto") -> str:
    """The backend that ``resampler`` stands for, "soxr" or "torchaudio" ("auto": soxr when importable)."""
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
    if resampler == "auto":
        return "soxr" if _soxr() is not None else "torchaudio"
    if resampler == "soxr" and _soxr() is None:
        raise ValueError("resampler='soxr' needs the soxr package (pip install soxr); use 'auto' or 'torchaudio'")
    return resampler


def resample(y, sr: int, params: LogMelParams = DEFAULT_PARAMS, resampler: str = "auto") -> torch.Tensor:
    """Resample a mono clip ``y`` (N,) from ``sr`` Hz to ``params.sr``: float32 (ceil(N * params.sr / sr),).

    ``"soxr"``: soxr's "HQ" filter, what ``librosa.resample`` does by default (needs the ``soxr`` package);
    ``"torchaudio"``: a Kaiser-windowed sinc (``params.resample_*``) tuned to follow it; ``"auto"``: soxr
    when importable.
    """
    if resampler_in_use(resampler) == "torchaudio":
        return AF.resample(
            torch.as_tensor(y, dtype=torch.float32),
            sr,
            params.sr,
            lowpass_filter_width=params.resample_width,
            rolloff=params.resample_rolloff,
            resampling_method="sinc_interp_kaiser",
            beta=params.resample_beta,
        )
    y = np.asarray(y, dtype=np.float32)
    out = _soxr().resample(y, sr, params.sr, quality="soxr_hq")
    n = -(-len(y) * params.sr // sr)  # zero-filled or cut to this length, as librosa does
    return torch.from_numpy(np.pad(out, (0, max(0, n - len(out))))[:n])


def prepare_waveform(y, sr: int, params: LogMelParams = DEFAULT_PARAMS, resampler: str = "auto") -> torch.Tensor:
    """Steps 1-3 of docs/method.md §3 on one mono clip ``y`` (N,) at ``sr`` Hz.

    Resample to ``params.sr`` (with ``resampler``, see :func:`resample`), remove the mean, divide by
    (max|y| + 0.005), tile clips shorter than ``min_seconds`` and cut them to exactly that length.
    Returns float32 (N',).
    """
    y = resample(y, sr, params, resampler) if sr != params.sr else torch.as_tensor(y, dtype=torch.float32)
    y = y - y.mean()
    y /= y.abs().max() + params.peak_offset
    if len(y) < params.min_samples:
        y = y.repeat(-(-params.min_samples // len(y)))[: params.min_samples]
    return y


class LogMel(torch.nn.Module):
    """Waveforms -> log10 mel spectrograms, batched over clips of different lengths (steps 4-6 of docs/method.md §3).

    :meth:`packed` takes a list of clips and returns their frames one after the other, with no padding to a
    common length; ``forward`` does the same for a zero-padded batch. Each clip is reflect-padded at its own
    ends, so the result equals a per-clip centred STFT (:func:`stft_power`). Spectra are computed
    ``chunk_frames`` frames at a time (default 512 on the CPU, where a chunk's spectra stay in cache, 16384
    on other devices), which also bounds the memory a batch needs.
    """

    def __init__(self, params: LogMelParams = DEFAULT_PARAMS, chunk_frames: int | None = None):
        super().__init__()
        self.params, self.chunk_frames = params, chunk_frames
        # periodic Hamming of win_length samples; torch.stft and librosa zero-pad it to n_fft, centred
        self.register_buffer("window", torch.hamming_window(params.win_length, periodic=True), persistent=False)
        fbank = AF.melscale_fbanks(
            n_freqs=params.n_fft // 2 + 1,
            f_min=params.fmin,
            f_max=params.fmax,
            n_mels=params.n_mels,
            sample_rate=params.sr,
            norm=None,  # each triangle peaks at 1
            mel_scale="slaney",
        )
        self.register_buffer("fbank", fbank, persistent=False)  # (n_freqs, n_mels)

    def packed(self, waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Log-mel of the clips ``waves`` (each (N_b,) float32 at ``params.sr``, on the module's device).

        Returns ``(features (sum_b T_b, n_mels), [T_b])``, clip after clip, ``T_b = 1 + N_b // hop`` frames.
        """
        p = self.params
        pad, hop = p.n_fft // 2, p.hop_length
        shortest = min(len(w) for w in waves)
        if shortest <= pad:
            raise ValueError(f"LogMel needs clips longer than {pad} samples (reflect padding); got {shortest}")
        # one signal: each clip reflect-padded by n_fft / 2 at both ends, then zero-filled to a multiple of hop,
        # so that every clip's frames lie on the signal's own frame grid (frame f starts at sample f * hop)
        pieces, first, n = [], [], 0
        for w in waves:
            seg = torch.nn.functional.pad(w.view(1, -1), (pad, pad), mode="reflect").view(-1)
            pieces += [seg, seg.new_zeros(-len(seg) % hop)]
            first.append(n // hop)
            n += len(seg) + len(pieces[-1])
        signal = torch.cat(pieces).add_(p.eps)
        counts = [1 + len(w) // hop for w in waves]
        index = torch.cat([torch.arange(f, f + c) for f, c in zip(first, counts)]).to(signal.device)
        # torch.stft's frames: n_fft samples, zero outside the window centred in them; the win_length samples under
        # the window are written into one reused buffer (zero elsewhere), chunk by chunk
        left = (p.n_fft - p.win_length) // 2
        under_window = signal[left:].unfold(0, p.win_length, hop)  # (frames, win_length), a view
        k = self.chunk_frames or (512 if signal.device.type == "cpu" else 16384)
        buf = signal.new_zeros(min(k, len(index)), p.n_fft)
        out = signal.new_empty(len(index), p.n_mels)
        for a in range(0, len(index), k):
            frames = buf[: min(k, len(index) - a)]
            torch.mul(under_window[index[a : a + k]], self.window, out=frames[:, left : left + p.win_length])
            re, im = torch.view_as_real(torch.fft.rfft(frames)).unbind(-1)
            torch.matmul(torch.addcmul(re * re, im, im), self.fbank, out=out[a : a + k])
        return out.add_(p.eps).log10_(), counts

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``waves`` (B, N) zero-padded past each clip's ``lengths`` (B,) samples -> (B, 1 + N // hop, n_mels),
        time first; clip ``b`` fills its first ``1 + lengths[b] // hop`` frames, the rest are zeros."""
        feats, counts = self.packed([w[: int(n)] for w, n in zip(waves, lengths)])
        out = feats.new_zeros(len(waves), 1 + waves.shape[1] // self.params.hop_length, self.params.n_mels)
        for b, x in enumerate(feats.split(counts)):
            out[b, : len(x)] = x
        return out


def stft_power(wave: torch.Tensor, params: LogMelParams = DEFAULT_PARAMS) -> torch.Tensor:
    """Power spectrogram |X|^2 of one prepared waveform (N,), step 4 of docs/method.md §3.

    Returns (T, n_fft // 2 + 1), time first.
    """
    window = torch.hamming_window(params.win_length, periodic=True, device=wave.device)
    spec = torch.stft(
        wave + params.eps,
        params.n_fft,
        params.hop_length,
        params.win_length,
        window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.abs().square().T


def logmel_from_waveforms(
    waves: Sequence[torch.Tensor], params: LogMelParams = DEFAULT_PARAMS, device=None, module: LogMel | None = None
) -> list[np.ndarray]:
    """Log-mel of several prepared waveforms (see :func:`prepare_waveform`) in one batch; float32 (T_i, n_mels) each."""
    device = torch.device(device or "cpu")
    module = module or LogMel(params).to(device)
    with torch.no_grad():
        feats, counts = module.packed([torch.as_tensor(w).to(device) for w in waves])
    return np.split(feats.cpu().numpy(), np.cumsum(counts)[:-1])


def extract_logmel(path, params: LogMelParams = DEFAULT_PARAMS, device=None, resampler: str = "auto") -> np.ndarray:
    """Log-mel spectrogram of one sound file: float32 (frames, 96), the torch path. A 1 s clip gives 101 frames."""
    y, sr = load_audio(path)
    return logmel_from_waveforms([prepare_waveform(y, sr, params, resampler)], params, device)[0]


def extract_logmel_librosa(path, params: LogMelParams = DEFAULT_PARAMS) -> np.ndarray:
    """The same recipe written with librosa, one file at a time: the readable reference (float32, frames x 96)."""
    import librosa

    y, sr = load_audio(path)
    if sr != params.sr:
        y = librosa.resample(y, orig_sr=sr, target_sr=params.sr)
    y = y - y.mean()
    y = y / (np.abs(y).max() + params.peak_offset)
    if len(y) < params.min_samples:
        y = np.tile(y, -(-params.min_samples // len(y)))[: params.min_samples]
    mel = librosa.feature.melspectrogram(
        y=y + params.eps,
        sr=params.sr,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        win_length=params.win_length,
        window="hamming",  # periodic (fftbins=True), zero-padded to n_fft, centred
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=params.n_mels,
        fmin=params.fmin,
        fmax=params.fmax,
        htk=False,  # Slaney mel scale
        norm=None,  # triangles peak at 1
    )
    return np.log10(mel + params.eps).T.astype(np.float32)


class _ReadAudio(torch.utils.data.Dataset):
    """Read, resample and normalise one file per item (in DataLoader workers) and, given ``logmel`` (extraction
    on the CPU), compute its features there too; an unreadable file's error is returned, not raised."""

    def __init__(self, paths: Sequence, params: LogMelParams, resampler: str, logmel: LogMel | None):
        self.paths, self.params, self.resampler, self.logmel = list(paths), params, resampler, logmel

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # the warnings of reading the file (channels that cancel) travel with the item: a worker's own would be lost
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                y, sr = load_audio(self.paths[i])
            except AudioError as err:
                return i, None, str(err), 0.0, []
        notes = [(str(w.message), w.category) for w in caught]
        x = prepare_waveform(y, sr, self.params, self.resampler)
        if self.logmel is not None:
            x = logmel_from_waveforms([x], self.params, module=self.logmel)[0]
        return i, x, None, len(y) / sr, notes


def _keep_list(batch):
    return batch


def _die_with_parent(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the kernel kills this worker when its parent dies (Linux ``PR_SET_PDEATHSIG``),
    so a killed extraction leaves no worker behind; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call: nobody would kill us
        os._exit(1)


def extract_many(
    paths: Sequence,
    params: LogMelParams = DEFAULT_PARAMS,
    device=None,
    workers: int | None = None,
    batch_size: int = 16,
    resampler: str = "auto",
) -> Iterator[tuple[int, np.ndarray | None, str | None, float]]:
    """Extract many files, in order: yields ``(index, features (T, 96) or None, error or None, seconds of audio)``.

    ``workers`` DataLoader processes (default: one per core, at most 8, on a CPU device; all cores but one
    otherwise; 0 for in-process) read, resample (see :func:`resample`) and normalise each file; on a CPU
    device they also compute its log-mel, otherwise the STFT and mel run on ``device``, ``batch_size`` clips
    at a time. A file that cannot be read yields its error message instead of features, so the caller
    decides whether to stop or skip. The warnings of reading a file (:func:`load_audio`'s, channels that cancel) are
    raised in the caller's process, workers or not.
    """
    device = pick_device(device) if device else torch.device("cpu")  # a bad name: one line naming it
    on_cpu = device.type == "cpu"
    resampler_in_use(resampler)  # a bad name or a missing soxr fails here, once
    if workers is None:
        workers = max(0, min(8, (os.cpu_count() or 1) - (0 if on_cpu else 1)))
    module = LogMel(params).to(device)
    data = _ReadAudio(paths, params, resampler, module if on_cpu else None)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_keep_list,
        worker_init_fn=_die_with_parent if workers else None,
    )
    for batch in loader:
        for *_, notes in batch:  # the files' warnings, raised here in the caller's process (see _ReadAudio)
            for message, category in notes:
                warnings.warn(message, category, stacklevel=2)
        batch = [item[:4] for item in batch]
        if not on_cpu:
            waves = [w for _, w, err, _ in batch if err is None]
            feats = iter(logmel_from_waveforms(waves, params, device, module) if waves else [])
            batch = [(i, None if err else next(feats), err, sec) for i, _, err, sec in batch]
        yield from batch


# ----------------------------------------------------------------------------------------------------------------------
# The way back: log-mel -> sound


def nonneg_lstsq(A: np.ndarray, B: np.ndarray, n_iter: int = 100) -> np.ndarray:
    """Non-negative X (n, k) approximately minimising ||A X - B||^2 for non-negative A (m, n), B (m, k).

    Lee and Seung's multiplicative updates from X = A^T B: each step multiplies X by A^T B / (A^T A X),
    so X stays non-negative. ``n_iter`` steps; more steps approach the non-negative least-squares optimum
    (the problem librosa's ``nnls`` solves with L-BFGS-B). Returns X as float64.
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(f"nonneg_lstsq expects A (m, n) and B (m, k), got shapes {A.shape} and {B.shape}")
    if (A < 0).any() or (B < 0).any() or not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise ValueError("nonneg_lstsq needs finite, non-negative A and B (multiplicative updates)")
    AtB = A.T @ B
    X = AtB.copy()
    tiny = np.finfo(X.dtype).tiny
    for _ in range(n_iter):
        X *= AtB / np.maximum(A.T @ (A @ X), tiny)
    return X


def logmel_to_audio(logmel, n_iter: int = 32, seed: int = 0, params: LogMelParams = DEFAULT_PARAMS) -> np.ndarray:
    """Sound from a log10 mel spectrogram (T, ``params.n_mels``), by mel inversion: float32 samples
    (hop x (T - 1),) at ``params.sr`` Hz (hop = ``params.hop_length``).

    The steps of librosa's ``mel_to_audio`` with the feature parameters (docs/method.md §3: n_fft 2048,
    hop 220, periodic Hamming of 660, centred reflect frames, Slaney mel without normalisation,
    50-10,500 Hz, power 2): the mel power is mapped back to an STFT power by non-negative least squares
    (:func:`nonneg_lstsq`, in place of librosa's ``nnls``), then ``n_iter`` Griffin-Lim iterations
    (``librosa.griffinlim``) run from random phases drawn with ``seed`` (``mel_to_audio`` cannot be seeded).
    The same ``logmel``, ``n_iter`` and ``seed`` give the same samples.
    """
    import librosa  # imported here: training code needs no audio package

    x = np.asarray(logmel, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != params.n_mels or len(x) < 2:
        raise ValueError(
            f"logmel_to_audio expects a log-mel spectrogram (frames >= 2, {params.n_mels}), got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("logmel_to_audio: the log-mel spectrogram holds NaN or inf")
    if isinstance(n_iter, (bool, np.bool_)) or int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"logmel_to_audio: n_iter must be an integer >= 1, got {n_iter!r}")
    basis = librosa.filters.mel(
        sr=params.sr, n_fft=params.n_fft, n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax, htk=False, norm=None
    ).astype(np.float64)  # (bands, bins), each triangle peaks at 1
    mel = np.maximum(10.0**x - params.eps, 0.0).T  # (bands, frames) power
    power = nonneg_lstsq(basis, mel)
    y = librosa.griffinlim(
        np.sqrt(power),
        n_iter=int(n_iter),
        hop_length=params.hop_length,
        win_length=params.win_length,
        n_fft=params.n_fft,
        window="hamming",
        center=True,
        pad_mode="reflect",
        random_state=np.random.default_rng(seed),
    )
    return y.astype(np.float32)
