"""Downloads against a local HTTP server: resume (with and without Range support), checksums, atomic unpacking,
layout checks, unreachable hosts, a full disk, and the released encoders' cache."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import tarfile
import zipfile

import pytest
from realdata_server import Server

from uclser_lib import download
from uclser_lib.download import DownloadError, Remote, fetch, unpack


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    servers = []

    def start(ranges=True):
        servers.append(Server(folder, ranges))
        return servers[-1]

    yield folder, start
    for s in servers:
        s.close()


def test_fetch_whole_file_and_checksum(served, tmp_path):
    folder, start = served
    data = bytes(range(256)) * 1000
    (folder / "a.bin").write_bytes(data)
    srv = start()
    out = fetch(f"{srv.url}/a.bin", tmp_path / "dl" / "a.bin", md5(data), progress=False)
    assert out.read_bytes() == data and not (tmp_path / "dl" / "a.bin.part").exists()
    n = len(srv.requests)
    fetch(f"{srv.url}/a.bin", out, md5(data), progress=False)  # already there and verified: no request
    assert len(srv.requests) == n


@pytest.mark.parametrize("ranges", [True, False])
def test_cut_off_midway_then_resumed(served, tmp_path, ranges):
    folder, start = served
    data = bytes(range(256)) * 4000
    (folder / "big.zip").write_bytes(data)
    srv = start(ranges)
    srv.cut_after = 300_000
    dest = tmp_path / "big.zip"
    with pytest.raises(DownloadError, match=r"download of http://127\.0\.0\.1:\d+/big\.zip cut off after 300000 of"):
        fetch(f"{srv.url}/big.zip", dest, md5(data), progress=False)
    assert not dest.exists() and (tmp_path / "big.zip.part").stat().st_size == 300_000
    fetch(f"{srv.url}/big.zip", dest, md5(data), progress=False)
    assert dest.read_bytes() == data
    assert srv.requests[-1][1] == "bytes=300000-"  # asked for the rest; without Range support it got all again


def test_wrong_checksum_deletes_and_names_url(served, tmp_path):
    folder, start = served
    (folder / "a.bin").write_bytes(b"not what was published")
    srv = start()
    with pytest.raises(DownloadError, match=r"^checksum mismatch for http://127.0.0.1:\d+/a.bin: md5 of the 22 bytes"):
        fetch(f"{srv.url}/a.bin", tmp_path / "a.bin", "0" * 32, progress=False)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_unreachable_and_missing(served, tmp_path):
    folder, start = served
    srv = start()
    with pytest.raises(DownloadError, match=r"^cannot download http://127.0.0.1:\d+/none.zip: HTTP 404"):
        fetch(f"{srv.url}/none.zip", tmp_path / "none.zip", progress=False)
    with pytest.raises(DownloadError, match=r"^cannot download http://127.0.0.1:9/x.zip: .*unreachable host"):
        fetch("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", progress=False)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])  # runtime.disk_full_error's rule
def test_no_space_left_keeps_the_partial_file(served, tmp_path, monkeypatch, code):
    folder, start = served
    data = b"x" * 200_000
    (folder / "a.bin").write_bytes(data)
    srv = start()
    real_open = open

    class Full(io.FileIO):  # a disk with room for 100000 bytes: the block that fills it is written in part
        def write(self, b):
            room = 100_000 - self.tell()
            if len(b) > room:
                super().write(bytes(b)[:room])
                raise OSError(code, os.strerror(code))
            return super().write(b)

    def fake_open(path, mode="r", *a, **k):
        if str(path).endswith(".part") and "b" in mode and ("w" in mode or "a" in mode):
            return Full(path, mode.replace("b", ""))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(DownloadError, match=r"^no space left on device while writing .*a\.bin\.part from http") as err:
        fetch(f"{srv.url}/a.bin", tmp_path / "a.bin", md5(data), progress=False)
    monkeypatch.setattr("builtins.open", real_open)
    assert (tmp_path / "a.bin.part").stat().st_size == 100_000  # kept: the next run resumes
    assert "; 100000 bytes kept there, free some space" in str(err.value)  # what is on disk (#13, finding 5)
    fetch(f"{srv.url}/a.bin", tmp_path / "a.bin", md5(data), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == data


def make_zip(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def make_tgz(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("maker, ext", [(make_zip, "zip"), (make_tgz, "tar.gz")])
def test_unpack_atomic_and_layout(tmp_path, maker, ext):
    good = {"top/meta/esc50.csv": b"a,b\n", "top/audio/x.wav": b"RIFF"}
    maker(tmp_path / f"good.{ext}", good)
    dest = unpack(tmp_path / f"good.{ext}", tmp_path / "data" / "esc50", ("audio", "meta/esc50.csv"), progress=False)
    assert (dest / "meta" / "esc50.csv").read_bytes() == b"a,b\n"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["esc50"]  # no temporary folder left
    maker(tmp_path / f"odd.{ext}", {"top/other/x.wav": b"RIFF"})
    with pytest.raises(DownloadError, match=r"odd\.(zip|tar\.gz): unexpected layout, missing \['audio', 'meta/esc50"):
        unpack(tmp_path / f"odd.{ext}", tmp_path / "data2" / "esc50", ("audio", "meta/esc50.csv"), progress=False)
    assert not (tmp_path / "data2").exists()  # not even the parent folder, made for the unpacking


@pytest.mark.parametrize("maker, ext", [(make_zip, "zip"), (make_tgz, "tar.gz")])
def test_truncated_archive(tmp_path, maker, ext):
    maker(tmp_path / f"a.{ext}", {f"top/audio/{i}.wav": bytes(range(256)) * 200 for i in range(20)})
    data = (tmp_path / f"a.{ext}").read_bytes()
    (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(DownloadError, match=r"cut\.(zip|tar\.gz): (truncated or corrupt|not a zip or tar)") as err:
        unpack(tmp_path / f"cut.{ext}", tmp_path / "d" / "x", ("audio",), progress=False)
    assert str(err.value).endswith("; delete it and rerun the same command to download it again")
    assert not (tmp_path / "d").exists() and (tmp_path / f"cut.{ext}").is_file()


def test_download_dataset_from_a_mirror(served, tmp_path, monkeypatch):
    """The FSDnoisy18k path: four zips from a mirror, checked, unpacked into one folder that appears complete."""
    folder, start = served
    contents = {
        "FSDnoisy18k.audio_train.zip": {"FSDnoisy18k.audio_train/1.wav": b"RIFF1"},
        "FSDnoisy18k.audio_test.zip": {"FSDnoisy18k.audio_test/2.wav": b"RIFF2"},
        "FSDnoisy18k.meta.zip": {"FSDnoisy18k.meta/train.csv": b"t", "FSDnoisy18k.meta/test.csv": b"u"},
        "FSDnoisy18k.doc.zip": {"FSDnoisy18k.doc/README.md": b"doc"},
    }
    remotes = []
    for name, files in contents.items():
        make_zip(folder / name, files)
        remotes.append(Remote(name, f"https://zenodo.invalid/{name}", md5((folder / name).read_bytes())))
    monkeypatch.setitem(download.REMOTES, "fsdnoisy18k", remotes)
    srv = start()
    dest = download.download_dataset("fsdnoisy18k", root=tmp_path / "data", url_base=srv.url, progress=False)
    assert dest == tmp_path / "data" / "fsdnoisy18k" / "dataset"
    assert (dest / "FSDnoisy18k.meta" / "train.csv").read_bytes() == b"t"
    assert (dest / "FSDnoisy18k.audio_train" / "1.wav").read_bytes() == b"RIFF1"
    assert sorted(p.name for p in (tmp_path / "data" / "fsdnoisy18k").iterdir()) == ["dataset"]
    assert list((tmp_path / "data" / "downloads").iterdir()) == []  # archives removed after a good unpack


def test_released_encoders_cached_and_loaded(served, tmp_path, monkeypatch, model_zoo_dir):
    folder, start = served
    for name in ("VGG_best.pth", "CRNN_best.pth"):
        shutil.copy(model_zoo_dir / name, folder / name)
    srv = start()
    monkeypatch.setenv("UCLSER_CACHE", str(tmp_path / "cache"))
    paths = download.download_released(url_base=srv.url, progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["CRNN_best.pth", "VGG_best.pth"]
    assert paths["vgglike"] == tmp_path / "cache" / "VGG_best.pth"


def test_released_encoder_wrong_file_refused(served, tmp_path, monkeypatch):
    folder, start = served
    (folder / "VGG_best.pth").write_bytes(b"an old or replaced checkpoint")
    srv = start()
    monkeypatch.setenv("UCLSER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match=r"checksum mismatch for http://127.0.0.1:\d+/VGG_best.pth: sha256"):
        download.download_released(url_base=srv.url, progress=False)
    assert not (tmp_path / "cache" / "VGG_best.pth").exists()


def test_unpack_failure_of_a_verified_archive(served, tmp_path, monkeypatch):
    """#13, finding 8: the message says what to do, the verified archive is kept, no empty esc50/ is left."""
    folder, start = served
    make_zip(folder / "whole.zip", {f"ESC-50-master/audio/{i}.wav": bytes(range(256)) * 200 for i in range(20)})
    zipped = (folder / "whole.zip").read_bytes()
    make_zip(folder / "whole.zip", {"ESC-50-master/meta/esc50.csv": b"a\n", "ESC-50-master/audio/1.wav": b"RIFF"})
    good = (folder / "whole.zip").read_bytes()
    srv = start()
    root, archive = tmp_path / "data", tmp_path / "data" / "downloads" / "ESC-50-master.zip"

    def serve(data: bytes):
        (folder / "ESC-50-master.zip").write_bytes(data)
        remote = Remote("ESC-50-master.zip", "https://github.invalid/master.zip", md5(data))
        monkeypatch.setitem(download.REMOTES, "esc50", [remote])

    serve(zipped[: len(zipped) // 2])  # truncated, yet it passes its (patched) checksum
    with pytest.raises(DownloadError) as err:
        download.download_dataset("esc50", root=root, url_base=srv.url, progress=False)
    assert str(err.value) == (
        f"{archive}: not a zip or tar archive (truncated or corrupt download?); delete it and rerun the same "
        "command to download it again"
    )
    assert archive.is_file() and sorted(p.name for p in root.iterdir()) == ["downloads"]  # no esc50/

    archive.unlink()  # as the message says
    serve(good)
    real_extract = zipfile.ZipFile.extract

    def full(self, member, path=None, pwd=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extract", full)
    with pytest.raises(DownloadError) as err:
        download.download_dataset("esc50", root=root, url_base=srv.url, progress=False)
    assert str(err.value) == (
        f"no space left on device while unpacking {archive} into {root / 'esc50'}; free some space and rerun the "
        "same command (the archive is kept: it is unpacked again, not downloaded again)"
    )
    assert archive.is_file() and sorted(p.name for p in root.iterdir()) == ["downloads"]
    monkeypatch.setattr(zipfile.ZipFile, "extract", real_extract)
    n = len(srv.requests)
    dest = download.download_dataset("esc50", root=root, url_base=srv.url, progress=False)
    assert len(srv.requests) == n and (dest / "meta" / "esc50.csv").read_bytes() == b"a\n"
