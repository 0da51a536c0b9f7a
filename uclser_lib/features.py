"""From a WAV file to a log-mel spectrogram (frames x 96 bands), the recipe of SPEC section 3.

Two paths compute the same thing:

- :func:`extract_logmel_librosa`, one file at a time with librosa: short and readable, the
  reference the course shows in notebook 01;
- :class:`LogMel` / :func:`extract_logmel` / :func:`extract_many`, torch and torchaudio,
  batched over clips of different lengths, on the GPU when there is one and with several CPU
  workers reading and resampling otherwise.

librosa and soundfile are imported only where files are read, so training code needs neither.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torchaudio.functional as AF


@dataclass(frozen=True)
class LogMelParams:
    """Feature-extraction parameters (SPEC section 3). Sample counts at ``sr``, frequencies in Hz."""

    sr: int = 22050
    n_fft: int = 2048
    win_length: int = 660
    hop_length: int = 220
    n_mels: int = 96
    fmin: float = 50.0
    fmax: float = 10500.0
    min_seconds: float = 1.0  # shorter clips are tiled up to this length
    peak_offset: float = 0.005  # y / (max|y| + peak_offset)
    eps: float = 1.1e-8  # added to the waveform before the STFT and to the mel energies before log10
    # Kaiser-windowed sinc resampler (torchaudio) tuned to follow librosa's default soxr "HQ" filter, which the
    # released features used: within 0.01 log10 units of them on the 44.1 kHz reference clip
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


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a sound file as float32 mono in [-1, 1] (stereo is averaged); return ``(samples (N,), rate in Hz)``."""
    import soundfile as sf  # imported here: training code (and the GPU machine) needs no audio I/O

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        y, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError... by format
        raise AudioError(f"{path}: not a readable audio file ({err})") from None
    if y.shape[0] == 0:
        raise AudioError(f"{path}: the audio file holds no samples")
    y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    return np.ascontiguousarray(y), int(sr)


def prepare_waveform(y, sr: int, params: LogMelParams = DEFAULT_PARAMS) -> torch.Tensor:
    """Steps 1-3 of SPEC section 3 on one mono clip ``y`` (N,) at ``sr`` Hz.

    Resample to ``params.sr``, remove the mean, divide by (max|y| + 0.005), tile clips shorter than
    ``min_seconds`` and cut them to exactly that length. Returns float32 (N',).
    """
    y = torch.as_tensor(y, dtype=torch.float32)
    if sr != params.sr:
        y = AF.resample(
            y,
            sr,
            params.sr,
            lowpass_filter_width=params.resample_width,
            rolloff=params.resample_rolloff,
            resampling_method="sinc_interp_kaiser",
            beta=params.resample_beta,
        )
    y = y - y.mean()
    y = y / (y.abs().max() + params.peak_offset)
    if len(y) < params.min_samples:
        y = y.repeat(-(-params.min_samples // len(y)))[: params.min_samples]
    return y


class LogMel(torch.nn.Module):
    """Waveforms -> log10 mel spectrograms, batched over clips of different lengths (steps 4-6 of SPEC section 3).

    ``forward(waves, lengths)``: ``waves`` (B, N) float32 at ``params.sr`` (zero-padded past each clip's
    length), ``lengths`` (B,) samples. Returns (B, T_max, n_mels), time first; clip ``b`` is valid for its
    first ``1 + lengths[b] // hop`` frames. Each clip is reflect-padded at its own ends, so the result
    equals a per-clip centred STFT exactly.
    """

    def __init__(self, params: LogMelParams = DEFAULT_PARAMS):
        super().__init__()
        self.params = params
        # periodic Hamming of win_length samples; torch.stft zero-pads it to n_fft, centred
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

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        p = self.params
        pad = p.n_fft // 2
        lengths = lengths.to(waves.device)
        if int(lengths.min()) <= pad:
            raise ValueError(f"LogMel needs clips longer than {pad} samples (reflect padding); got {int(lengths.min())}")
        n = waves.shape[1]
        # reflect padding at each clip's own ends, built with one gather: index j of the padded clip reads
        # sample |j - pad| reflected about the clip's last sample
        j = torch.arange(n + 2 * pad, device=waves.device) - pad
        last = (lengths - 1).unsqueeze(1)
        idx = j.unsqueeze(0).abs()
        idx = torch.where(idx > last, 2 * last - idx, idx)
        inside = j.unsqueeze(0) <= last + pad
        padded = torch.where(inside, waves.gather(1, idx.clamp(0, n - 1)), 0.0)
        spec = torch.stft(
            padded + p.eps, p.n_fft, p.hop_length, p.win_length, self.window, center=False, return_complex=True
        )
        power = spec.real.square() + spec.imag.square()  # (B, n_freqs, T)
        mel = torch.matmul(power.transpose(1, 2), self.fbank)  # (B, T, n_mels)
        return torch.log10(mel + p.eps)


def stft_power(wave: torch.Tensor, params: LogMelParams = DEFAULT_PARAMS) -> torch.Tensor:
    """Power spectrogram |X|^2 of one prepared waveform (N,): (T, n_fft // 2 + 1), time first (step 4 of SPEC section 3)."""
    window = torch.hamming_window(params.win_length, periodic=True, device=wave.device)
    spec = torch.stft(wave + params.eps, params.n_fft, params.hop_length, params.win_length, window,
                      center=True, pad_mode="reflect", return_complex=True)  # fmt: skip
    return spec.abs().square().T


def logmel_from_waveforms(
    waves: Sequence[torch.Tensor], params: LogMelParams = DEFAULT_PARAMS, device=None, module: LogMel | None = None
) -> list[np.ndarray]:
    """Log-mel of several prepared waveforms (see :func:`prepare_waveform`) in one batch; float32 (T_i, n_mels) each."""
    device = torch.device(device or "cpu")
    module = module or LogMel(params).to(device)
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    with torch.no_grad():
        out = module(batch.to(device), lengths).float().cpu().numpy()
    return [out[i, : 1 + int(n) // params.hop_length] for i, n in enumerate(lengths)]


def extract_logmel(path, params: LogMelParams = DEFAULT_PARAMS, device=None) -> np.ndarray:
    """Log-mel spectrogram of one sound file: float32 (frames, 96), the torch path. A 1 s clip gives 101 frames."""
    y, sr = load_audio(path)
    return logmel_from_waveforms([prepare_waveform(y, sr, params)], params, device)[0]


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


class _PreparedAudio(torch.utils.data.Dataset):
    """Read + resample + normalise one file per item (runs in DataLoader workers); errors are returned, not raised."""

    def __init__(self, paths: Sequence, params: LogMelParams):
        self.paths, self.params = list(paths), params

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            y, sr = load_audio(self.paths[i])
            return i, prepare_waveform(y, sr, self.params), None, len(y) / sr
        except AudioError as err:
            return i, None, str(err), 0.0


def _keep_list(batch):
    return batch


def extract_many(
    paths: Sequence,
    params: LogMelParams = DEFAULT_PARAMS,
    device=None,
    workers: int | None = None,
    batch_size: int = 16,
) -> Iterator[tuple[int, np.ndarray | None, str | None, float]]:
    """Extract many files, in order: yields ``(index, features (T, 96) or None, error or None, seconds of audio)``.

    Reading and resampling run in ``workers`` DataLoader processes (default: all cores but one, 0 for
    in-process); the STFT and mel run batched on ``device``. A file that cannot be read yields its error
    message instead of features, so the caller decides whether to stop or skip.
    """
    device = torch.device(device or "cpu")
    if workers is None:
        workers = max(0, min(8, (os.cpu_count() or 1) - 1))
    loader = torch.utils.data.DataLoader(
        _PreparedAudio(paths, params), batch_size=batch_size, num_workers=workers, collate_fn=_keep_list
    )
    module = LogMel(params).to(device)
    for batch in loader:
        good = [(i, w, sec) for i, w, err, sec in batch if err is None]
        feats = logmel_from_waveforms([w for _, w, _ in good], params, device, module) if good else []
        by_index = {i: (f, sec) for (i, _, sec), f in zip(good, feats)}
        for i, _, err, _ in batch:
            if err is None:
                yield i, by_index[i][0], None, by_index[i][1]
            else:
                yield i, None, err, 0.0
