"""The fast feature path on a CPU: soxr or torchaudio resampling, the packed and chunked log-mel.

Also extraction in DataLoader workers, with unreadable files named.
"""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from uclser_lib import features as F
from uclser_lib.features import (
    DEFAULT_PARAMS,
    AudioError,
    LogMel,
    extract_logmel,
    extract_many,
    load_audio,
    prepare_waveform,
    resample,
    resampler_in_use,
    stft_power,
)

from tolerance import assert_close_ulps


@pytest.fixture
def no_soxr(monkeypatch):
    """soxr "not installed" (as on the GPU machine): importing it fails."""
    monkeypatch.setitem(sys.modules, "soxr", None)
    F._soxr.cache_clear()
    yield
    F._soxr.cache_clear()


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
