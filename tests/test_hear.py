"""The HEAR-style embedding API (uclser_lib.hear): shapes, sizes, timestamps, batching, short and bad input.

The HEAR validator package (hearvalidator) needs TensorFlow, which the lock does not hold; the checks below cover
what it checks for a torch model (attributes, float32 embeddings, shapes, evenly spaced timestamps) and more.
"""

import numpy as np
import pytest
import soundfile as sf
import torch

from uclser_lib import embed, features, hear
from uclser_lib.data import EVAL_HOP, PATCH_FRAMES, PackedClips


@pytest.fixture(scope="module")
def model():
    return hear.load_model("course-resnet18", batch_size=64)


def _noise(n_sounds, n_samples, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_sounds, n_samples, generator=g) * 2 - 1


def test_attributes_follow_hear(model):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 22050 and isinstance(model.sample_rate, int)
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    assert model.scene_embedding_size == model.timestamp_embedding_size == model.encoder.embedding_dim == 512
    assert model.info.name == "course-resnet18" and model.mean == model.info.mean and model.std == model.info.std


def test_shapes_dtypes_and_timestamps(model):
    n = int(2.0 * model.sample_rate)
    emb, ts = hear.get_timestamp_embeddings(_noise(4, n), model)
    frames = 1 + n // model.params.hop_length
    t = (frames - PATCH_FRAMES) // EVAL_HOP + 1
    assert emb.shape == (4, t, model.timestamp_embedding_size) and emb.dtype == torch.float32
    assert ts.shape == (4, t) and torch.isfinite(emb).all()
    hop_ms = EVAL_HOP * model.params.hop_length / model.params.sr * 1000  # 498.87 ms
    assert model.hop_ms == pytest.approx(hop_ms, rel=1e-12)
    # centred: patch k spans frames k*hop .. k*hop + 100, frame f centred on sample f * hop_length
    centre_ms = (PATCH_FRAMES // 2) * model.params.hop_length / model.params.sr * 1000
    assert float(ts[0, 0]) == pytest.approx(centre_ms, rel=1e-12)
    assert torch.allclose(ts.diff(dim=1), torch.full((4, t - 1), hop_ms, dtype=torch.float64), rtol=0, atol=1e-9)
    assert (ts == ts[0]).all()
    scene = hear.get_scene_embeddings(_noise(4, n), model)
    assert scene.shape == (4, model.scene_embedding_size) and scene.dtype == torch.float32
    assert torch.allclose(scene, emb.mean(1), atol=1e-6)


def test_custom_patch_hop_spacing():
    m = hear.load_model("course-resnet18", patch_hop=5)
    emb, ts = hear.get_timestamp_embeddings(_noise(1, 33075), m)  # 1.5 s: 151 frames -> 11 patches
    assert emb.shape[1] == ts.shape[1] == (151 - PATCH_FRAMES) // 5 + 1 == m.n_timestamps(33075)
    assert torch.allclose(ts.diff(), torch.tensor(5 * 220 / 22050 * 1000, dtype=torch.float64), atol=1e-9)


def test_scene_equals_the_library_clip_embedding(model, tmp_path):
    """Same features (the file path through features.extract_logmel), same patches, same normalisation."""
    y = (0.3 * _noise(1, 3 * 22050, seed=3)[0]).numpy()
    path = tmp_path / "a.wav"
    sf.write(path, y, 22050, subtype="FLOAT")
    packed = PackedClips.from_list([features.extract_logmel(path)])
    ref = embed.clip_embeddings(model.encoder.embed, packed, model.mean, model.std, "cpu", cache=False)
    got = hear.get_scene_embeddings(hear.load_sound(path, model)[None], model)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_long_audio_in_batches_equals_unchunked(model):
    audio = _noise(2, 20 * 22050, seed=1)  # 20 s: 39 patches each, 78 in all
    big = hear.EmbeddingModel(model.encoder, model.mean, model.std, batch_size=10_000)
    small = hear.EmbeddingModel(model.encoder, model.mean, model.std, batch_size=7)
    seen = []
    inner = small.encoder.embed

    def spy(x):
        seen.append(len(x))
        return inner(x)

    small.encoder.embed = spy
    try:
        chunked, ts1 = hear.get_timestamp_embeddings(audio, small)
    finally:
        del small.encoder.embed
    whole, ts2 = hear.get_timestamp_embeddings(audio, big)
    assert max(seen) <= 7 and sum(seen) == 2 * 39 == whole.shape[0] * whole.shape[1]
    assert torch.equal(ts1, ts2)
    assert torch.allclose(chunked, whole, rtol=1e-4, atol=1e-5 * float(whole.abs().max()))


def test_short_audio_is_tiled_to_one_patch(model):
    n = model.sample_rate // 4  # 0.25 s
    emb, ts = hear.get_timestamp_embeddings(_noise(2, n), model)
    assert emb.shape == (2, 1, 512) and ts.shape == (2, 1)
    assert float(ts[0, 0]) == pytest.approx(50 * 220 / 22050 * 1000)
    tiled = _noise(2, n).repeat(1, 4)[:, : model.sample_rate]  # what prepare_waveform does
    assert torch.allclose(emb[:, 0], hear.get_scene_embeddings(tiled, model), atol=1e-4)
    assert hear.get_scene_embeddings(_noise(1, model.min_samples), model).shape == (1, 512)


def test_loudness_barely_changes_the_embedding(model):
    """Peak normalisation (y / (max|y| + 0.005)): a sound 10x quieter gives nearly the same embedding."""
    a = _noise(1, 22050 * 2, seed=5)
    loud, quiet = hear.get_scene_embeddings(a, model), hear.get_scene_embeddings(0.1 * a, model)
    assert float(torch.nn.functional.cosine_similarity(loud, quiet)) > 0.99
    assert not torch.allclose(loud, quiet, atol=1e-6)  # not exactly: the 0.005 offset


@pytest.mark.parametrize(
    "audio, words",
    [
        (torch.zeros(2, 2, 22050), "stereo"),
        (torch.zeros(22050), "audio[None]"),
        ((_noise(1, 22050) * 32767).to(torch.int16), "dtype"),
        (_noise(1, 22050) * 32767, "outside [-1, 1]"),
        (torch.zeros(1, 1000), "shorter than 2048"),
        (torch.zeros(0, 22050), "no sound"),
        (torch.full((1, 22050), float("nan")), "NaN"),
        (np.zeros((1, 22050), dtype=np.float32), "torch.Tensor"),
    ],
)
def test_bad_input_is_a_one_line_value_error(model, audio, words):
    for fn in (hear.get_scene_embeddings, hear.get_timestamp_embeddings):
        with pytest.raises(ValueError, match=None) as err:
            fn(audio, model)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_a_stereo_array_is_named_stereo_not_two_samples_long(model):
    """Issue 34, row 11: a (n_samples, 2) stereo array was refused as "2 samples long"."""
    stereo = _noise(2, 22050).T  # (22050, 2), as soundfile reads a stereo file
    for fn in (hear.get_scene_embeddings, hear.get_timestamp_embeddings):
        with pytest.raises(ValueError) as err:
            fn(stereo, model)
        assert str(err.value) == (
            "audio has shape (22050, 2): 22050 sounds of 2 samples? It looks like (n_samples, n_channels): average "
            "the channels to mono and pass audio.mean(dim=1)[None], shape (1, n_samples)"
        )


def test_bad_model_spec_and_parameters(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such"):
        hear.load_model("no-such-encoder")
    with pytest.raises(ValueError, match="batch_size"):
        hear.load_model("course-resnet18", batch_size=0)
    with pytest.raises(ValueError, match="EmbeddingModel"):
        hear.get_scene_embeddings(_noise(1, 22050), object())
    with pytest.raises(FileNotFoundError, match="no such folder"):
        hear.audio_files(tmp_path / "absent")


def test_audio_files_and_load_sound_resample(model, tmp_path):
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "b.flac", 0.5 * np.ones(44100, dtype=np.float32), 44100)
    sf.write(tmp_path / "a.wav", np.zeros(22050, dtype=np.float32), 22050)
    (tmp_path / "notes.txt").write_text("x")
    files = hear.audio_files(tmp_path)
    assert [p.name for p in files] == ["a.wav", "b.flac"]
    y = hear.load_sound(files[1], model)
    assert y.dtype == torch.float32 and y.shape == (22050,)


@pytest.mark.parametrize("doc", ["docs/embedding-api.md"])
def test_the_five_line_example_runs(doc, tmp_path, monkeypatch):
    """The five-line example of docs/embedding-api.md (the README's until issue #31 moved it there)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / doc).read_text()
    block = next(b for b in text.split("```python\n")[1:] if "hear.get_scene_embeddings" in b).split("```")[0]
    assert len([line for line in block.splitlines() if line.strip()]) == 5, block  # five lines of code
    wav = next(w for w in ("my_sound.wav", "door.wav") if w in block)
    sf.write(tmp_path / wav, 0.5 * _noise(1, 30000)[0].numpy(), 22050)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(block, doc, "exec"), scope)
    assert scope["emb"].shape == (1, scope["model"].scene_embedding_size)
