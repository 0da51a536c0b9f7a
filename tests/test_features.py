"""Feature extraction: the reference features, the torch path vs the librosa path, bad audio; the fast path on a CPU
(soxr or torchaudio resampling, the packed and chunked log-mel); extraction in DataLoader workers, with unreadable
files named."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.optimize
import soundfile as sf
import torch

from uclser_lib import features
from uclser_lib.features import (
    DEFAULT_PARAMS,
    AudioError,
    LogMel,
    extract_logmel,
    extract_logmel_librosa,
    extract_many,
    load_audio,
    logmel_from_waveforms,
    prepare_waveform,
    resample,
    resampler_in_use,
    stft_power,
)

from tolerance import assert_close_ulps

# docs/released-code.md, Reference outputs: 22,050 Hz clips within 1e-3; the 44,100 Hz clip depends on the
# resampler: 0.05
TOL = {"clip0_22050": 1e-3, "clip1_22050": 1e-3, "clip2_22050": 1e-3, "clip3_44100": 0.05}


@pytest.mark.parametrize("stem", sorted(TOL))
@pytest.mark.parametrize("extract", [extract_logmel, extract_logmel_librosa], ids=["torch", "librosa"])
def test_matches_released_features(reference_dir, stem, extract):
    expected = np.load(reference_dir / "features.npz")[stem]
    got = extract(reference_dir / f"{stem}.wav")
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL[stem]


def _write(path, y, sr, subtype="PCM_16"):
    sf.write(path, y, sr, subtype=subtype)
    return path


@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(0)
    t = lambda n, sr: np.arange(n) / sr
    out = {}
    for name, sr, seconds in [("short", 44100, 0.3), ("one", 22050, 1.0), ("long", 44100, 3.7), ("odd", 16000, 2.2)]:
        n = int(sr * seconds)
        y = 0.3 * np.sin(2 * np.pi * 440 * t(n, sr) * (1 + t(n, sr))) + 0.05 * rng.standard_normal(n)
        out[name] = _write(tmp_path / f"{name}.wav", y.astype(np.float32), sr)
    return out


def test_torch_path_matches_librosa_path(clips):
    import librosa

    # upper edge of each mel band in Hz
    edges = librosa.mel_frequencies(98, fmin=DEFAULT_PARAMS.fmin, fmax=DEFAULT_PARAMS.fmax)[2:]
    for name, path in clips.items():
        a, b = extract_logmel(path), extract_logmel_librosa(path)
        assert a.shape == b.shape
        # a 16 kHz clip has no energy above 8 kHz: there both paths show only their resampler's stop band
        bands = edges < 0.95 * 8000 if name == "odd" else edges > 0
        assert np.abs(a - b)[:, bands].max() < 0.05, name
        assert np.median(np.abs(a - b)) < 1e-3, name


def test_frame_counts(clips):
    # a clip shorter than 1 s is tiled to 1 s: 101 frames; a 1 s clip gives 101; longer ones 1 + n // 220
    assert extract_logmel(clips["short"]).shape == (101, 96)
    assert extract_logmel(clips["one"]).shape == (101, 96)
    assert extract_logmel(clips["long"]).shape == (1 + int(3.7 * 22050) // 220, 96)


def test_short_clip_is_tiled():
    y = np.linspace(-1, 1, 5000).astype(np.float32)
    w = prepare_waveform(y, 22050)
    assert len(w) == 22050
    torch.testing.assert_close(w[:5000], w[5000:10000])


def test_batched_equals_one_by_one(clips):
    waves = [
        prepare_waveform(*__import__("uclser_lib.features", fromlist=["load_audio"]).load_audio(p))
        for p in clips.values()
    ]
    together = logmel_from_waveforms(waves)
    for w, t in zip(waves, together):
        alone = logmel_from_waveforms([w])[0]
        np.testing.assert_allclose(t, alone, atol=1e-4)


def test_extract_many_in_order_with_workers(clips, tmp_path):
    paths = list(clips.values()) + [tmp_path / "missing.wav"]
    results = list(extract_many(paths, workers=2, batch_size=2))
    assert [r[0] for r in results] == list(range(len(paths)))
    for (_, x, err, _), p in zip(results[:-1], paths):
        assert err is None and np.allclose(x, extract_logmel(p), atol=1e-4)
    assert results[-1][1] is None and "missing.wav" in results[-1][2]


def test_stereo_is_mixed_to_mono(tmp_path):
    rng = np.random.default_rng(1)
    left, right = rng.standard_normal((2, 30000)).astype(np.float32) * 0.2
    stereo = _write(tmp_path / "stereo.wav", np.stack([left, right], 1), 22050, "FLOAT")
    mono = _write(tmp_path / "mono.wav", (left + right) / 2, 22050, "FLOAT")
    np.testing.assert_allclose(extract_logmel(stereo), extract_logmel(mono), atol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "not a readable audio file"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage"), "not a readable audio file"),
        (lambda p: p.write_text("this is a text file, not audio\n"), "not a readable audio file"),
        (lambda p: sf.write(p, np.zeros((0,), np.float32), 22050), "no samples"),
        (lambda p: sf.write(p, np.full(100, np.nan, np.float32), 22050, subtype="FLOAT"), "NaN"),
    ],
    ids=["empty-file", "corrupt-header", "text-file", "no-samples", "nan"],
)
def test_bad_audio_names_the_file(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=message) as info:
        extract_logmel(path)
    assert str(path) in str(info.value)


def test_logmel_module_rejects_too_short_waves():
    with pytest.raises(ValueError, match="longer than 1024"):
        LogMel()(torch.zeros(1, 1000), torch.tensor([1000]))


def test_stft_power_then_mel_is_the_logmel(clips):
    from uclser_lib.features import load_audio, stft_power

    w = prepare_waveform(*load_audio(clips["long"]))
    mel = stft_power(w) @ LogMel().fbank
    np.testing.assert_allclose(torch.log10(mel + DEFAULT_PARAMS.eps).numpy(), logmel_from_waveforms([w])[0], atol=1e-4)


def test_params_record_frames():
    assert DEFAULT_PARAMS.n_frames(22050) == 101 and DEFAULT_PARAMS.n_frames(100) == 101


# ----------------------------------------------------------------------------------------------------------------------
# Sound


def test_nonneg_lstsq_reaches_the_nnls_optimum():
    rng = np.random.default_rng(1)
    A = rng.uniform(0, 1, (12, 6))
    B = rng.uniform(0, 1, (12, 3))
    X = features.nonneg_lstsq(A, B, n_iter=5000)
    assert (X >= 0).all()
    for k in range(3):
        best = scipy.optimize.nnls(A, B[:, k])[1]
        assert np.linalg.norm(A @ X[:, k] - B[:, k]) <= best * (1 + 1e-3) + 1e-9
    with pytest.raises(ValueError, match="non-negative"):
        features.nonneg_lstsq(-A, B)
    with pytest.raises(ValueError, match="shapes"):
        features.nonneg_lstsq(A, B[:5])


def test_logmel_to_audio_inverts_the_features():
    sr = 22050
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t) * np.minimum(1, 5 * t)
    logmel = features.logmel_from_waveforms([features.prepare_waveform(tone, sr)])[0]
    y = features.logmel_to_audio(logmel, n_iter=16)
    assert y.dtype == np.float32 and y.shape == (220 * (len(logmel) - 1),) and np.isfinite(y).all()
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * sr / len(y) - 1000) < 20
    again = features.LogMel()(torch.from_numpy(y)[None], torch.tensor([len(y)]))[0].numpy()[: len(logmel)]
    loud = logmel > logmel.max() - 3  # within 30 dB of the peak
    assert np.median(np.abs(again - logmel)[loud]) < 0.1
    np.testing.assert_array_equal(
        features.logmel_to_audio(logmel, n_iter=2, seed=3), features.logmel_to_audio(logmel, n_iter=2, seed=3)
    )


@pytest.mark.parametrize(
    "logmel, n_iter, match",
    [
        (np.zeros((101, 64)), 4, "shape"),
        (np.zeros(96), 4, "shape"),
        (np.full((101, 96), np.nan), 4, "NaN"),
        (np.zeros((101, 96)), 0, "n_iter"),
    ],
)
def test_logmel_to_audio_bad_input(logmel, n_iter, match):
    with pytest.raises(ValueError, match=match):
        features.logmel_to_audio(logmel, n_iter)


# ------------------------------ the fast path on a CPU: resamplers, packed and chunked log-mel, extraction in workers


@pytest.fixture
def no_soxr(monkeypatch):
    """soxr "not installed" (as on the GPU machine): importing it fails."""
    monkeypatch.setitem(sys.modules, "soxr", None)
    features._soxr.cache_clear()
    yield
    features._soxr.cache_clear()


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(3)
    out = []
    for k, (sr, seconds) in enumerate([(44100, 2.3), (48000, 0.4), (16000, 1.7), (22050, 1.2)]):
        n = int(sr * seconds)
        t = np.arange(n) / sr
        y = 0.3 * np.sin(2 * np.pi * 300 * t * (1 + 2 * t)) + 0.05 * rng.standard_normal(n)
        out.append(tmp_path / f"{k}_{sr}.wav")
        sf.write(out[-1], y.astype(np.float32), sr, subtype="PCM_16")
    return out


@pytest.mark.parametrize("resampler", ["soxr", "torchaudio"])
def test_both_resamplers_match_released_features(reference_dir, resampler):
    # docs/released-code.md, Reference outputs: the 44,100 Hz clip within 0.05 (log10 units)
    expected = np.load(reference_dir / "features.npz")["clip3_44100"]
    got = extract_logmel(reference_dir / "clip3_44100.wav", resampler=resampler)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= 0.05


def test_soxr_resampler_is_librosas():
    import librosa

    y = np.random.default_rng(0).standard_normal(44100 + 7).astype(np.float32) * 0.1
    for sr in (44100, 48000, 16000):
        ours = resample(y, sr, resampler="soxr")
        assert ours.dtype == torch.float32
        assert_close_ulps(ours, librosa.resample(y, orig_sr=sr, target_sr=22050))


@pytest.mark.parametrize("sr", [44100, 48000, 16000, 8000])
@pytest.mark.parametrize("n", [1, 999, 44101])
def test_resamplers_give_the_same_length(sr, n):
    y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    expected = -(-n * 22050 // sr)  # ceil
    assert len(resample(y, sr, resampler="soxr")) == len(resample(y, sr, resampler="torchaudio")) == expected


def test_auto_is_soxr_where_installed(wavs):
    assert resampler_in_use() == "soxr"
    np.testing.assert_array_equal(extract_logmel(wavs[0]), extract_logmel(wavs[0], resampler="soxr"))


def test_without_soxr_auto_is_torchaudio(no_soxr, wavs):
    assert resampler_in_use() == "torchaudio"
    auto = extract_logmel(wavs[0])
    np.testing.assert_array_equal(auto, extract_logmel(wavs[0], resampler="torchaudio"))
    ((_, x, err, _),) = extract_many(wavs[:1], workers=0)
    assert err is None and np.array_equal(x, auto)
    with pytest.raises(ValueError, match="needs the soxr package"):
        prepare_waveform(np.zeros(5000, np.float32), 44100, resampler="soxr")


def test_unknown_resampler_is_named():
    with pytest.raises(ValueError, match="'sox'"):
        resample(np.zeros(100, np.float32), 44100, resampler="sox")
    with pytest.raises(ValueError, match="'sox'"):
        next(extract_many(["whatever.wav"], workers=0, resampler="sox"))


def test_the_library_imports_no_audio_packages():
    # training code runs where librosa, soundfile and soxr are absent: none may be imported at module level
    code = (
        "import sys, uclser_lib.features, uclser_lib.data, uclser_lib.train; "
        "print(sorted(m for m in ('librosa', 'soxr', 'soundfile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_packed_chunks_equal_per_clip_stft():
    rng = np.random.default_rng(1)
    # the shortest clip allowed (n_fft / 2 + 1 samples), lengths on and off the hop grid
    waves = [torch.from_numpy(rng.standard_normal(n).astype(np.float32)) for n in (1025, 22050, 4400, 30011)]
    module = LogMel()
    feats, counts = LogMel(chunk_frames=7).packed(waves)  # chunks straddle clip boundaries
    assert counts == [1 + len(w) // 220 for w in waves] and feats.shape == (sum(counts), 96)
    torch.testing.assert_close(feats, module.packed(waves)[0], atol=1e-5, rtol=0)
    for w, x in zip(waves, feats.split(counts)):
        expected = torch.log10(stft_power(w) @ module.fbank + DEFAULT_PARAMS.eps)
        torch.testing.assert_close(x, expected, atol=1e-4, rtol=0)


def test_forward_on_a_padded_batch_equals_packed():
    rng = np.random.default_rng(2)
    lengths = [5000, 12345, 2200]
    waves = torch.zeros(3, 12345)
    for b, n in enumerate(lengths):
        waves[b, :n] = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    module = LogMel()
    out = module(waves, torch.tensor(lengths))
    assert out.shape == (3, 1 + 12345 // 220, 96)
    feats, counts = module.packed([waves[b, :n] for b, n in enumerate(lengths)])
    for b, x in enumerate(feats.split(counts)):
        torch.testing.assert_close(out[b, : len(x)], x)
        assert (out[b, len(x) :] == 0).all()


@pytest.mark.parametrize("resampler", ["auto", "torchaudio"])
def test_extract_many_in_cpu_workers_equals_one_by_one(wavs, resampler):
    results = list(extract_many(wavs, workers=2, batch_size=3, resampler=resampler))
    assert [r[0] for r in results] == list(range(len(wavs)))
    for (_, x, err, seconds), p in zip(results, wavs):
        y, sr = load_audio(p)
        assert err is None and seconds == pytest.approx(len(y) / sr)
        np.testing.assert_allclose(x, extract_logmel(p, resampler=resampler), atol=1e-4)


def test_bad_files_in_cpu_workers_are_named(wavs, tmp_path):
    corrupt, nan = tmp_path / "corrupt.wav", tmp_path / "nan.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    sf.write(nan, np.full(3000, np.nan, np.float32), 44100, subtype="FLOAT")
    paths = [corrupt, wavs[0], tmp_path / "missing.wav", nan, wavs[1]]
    results = list(extract_many(paths, workers=2, batch_size=2))
    for (_, x, err, _), p in zip(results, paths):
        if p in wavs:
            assert err is None and x.shape == (1 + len(prepare_waveform(*load_audio(p))) // 220, 96)
        else:
            assert x is None and str(p) in err
    with pytest.raises(AudioError, match="corrupt.wav"):
        extract_logmel(corrupt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_extract_many_cuda_equals_cpu(wavs):
    on_gpu = list(extract_many(wavs, device="cuda", workers=2, batch_size=3))
    on_cpu = list(extract_many(wavs, device="cpu", workers=0))
    for (i, x, err, _), (j, y, _, _) in zip(on_gpu, on_cpu):
        assert i == j and err is None
        np.testing.assert_allclose(x, y, atol=1e-3)
