"""Feature extraction: the reference features, the torch path vs the librosa path, bad audio."""

import numpy as np
import pytest
import soundfile as sf
import torch

from uclser_lib.features import (
    DEFAULT_PARAMS,
    AudioError,
    LogMel,
    extract_logmel,
    extract_logmel_librosa,
    extract_many,
    logmel_from_waveforms,
    prepare_waveform,
)

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
    t = lambda n, sr: np.arange(n) / sr  # noqa: E731
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
