"""Downloads: FSDnoisy18k, FSD50K, ESC-50 and the authors' released encoders, resumable, checksum-verified, unpacked
atomically.

``python -m uclser_lib download fsdnoisy18k|fsd50k|esc50|released-encoders``. What is whose:

- **The locations and checksums of the datasets** are soundata's (1.0.1, BSD-3-Clause,
  ``soundata/datasets/fsdnoisy18k.py`` and ``esc50.py``, their ``REMOTES``): the Zenodo record 2529934's four
  zip files with their md5, and ESC-50's GitHub archive with its md5; FSD50K's (Zenodo record 4060432, version
  1.0: eleven files, two of them split zip archives) from soundata's ``soundata/datasets/fsd50k.py``. They are
  pinned here (:data:`REMOTES`) rather than imported: soundata needs pandas, jams and py7zr, which the course's
  locked environment does not carry, and its downloader neither resumes nor unpacks atomically (and joins a split
  zip with the ``zip`` program).
- **The released encoders' location** is the authors' repository (github.com/edufonseca/uclser20, folder
  ``pth/``) at a pinned commit; their sha256 are :data:`uclser_lib.released.RELEASED_SHA256`.
- **Ours**: the HTTP client is the standard library's ``urllib`` (redirects, proxies from the environment); on top
  of it, resuming (``Range: bytes=N-`` on the ``.part`` file; a server that ignores the range gets a fresh
  start), the verification before anything is unpacked, the unpacking into a temporary folder renamed into
  place at the end, the layout checks, and one-line errors (:class:`DownloadError`) naming the URL or file. A split
  zip archive (``X.z01``, ``X.z02``, ..., ``X.zip``, as ``zip -s`` writes it) is read as the one archive
  ``zip -s 0`` would join it into, without writing that archive (:func:`open_split_zip`, :func:`join_split_zip`).

A mirror (a folder served over HTTP holding the same file names) replaces every host: ``--url-base URL`` or
``UCLSER_MIRROR=URL``; the tests use one on 127.0.0.1.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import hashlib
import os
import re
import shutil
import struct
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .released import RELEASED_SHA256
from .runtime import data_root, disk_full_error

__all__ = [
    "DATASETS",
    "RELEASED_COMMIT",
    "RELEASED_FILES",
    "REMOTES",
    "DownloadError",
    "Remote",
    "cache_dir",
    "download_dataset",
    "download_released",
    "fetch",
    "join_split_zip",
    "mirror_url",
    "open_split_zip",
    "unpack",
]

CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download, verification or unpacking failed; the message is one line naming the URL or file."""


@dataclass(frozen=True)
class Remote:
    """One file to fetch: its name (also its name on a mirror), URL, checksum (``algo``: md5 or sha256)."""

    filename: str
    url: str
    checksum: str
    algo: str = "md5"


#: Taken from soundata's ``REMOTES`` (see the module docstring). FSD50K's ground truth comes first, so that a
#: mirror without it fails before the 25 GB of audio; a split archive's parts (``.z01``, ...) precede its ``.zip``.
REMOTES = {
    "fsdnoisy18k": [
        Remote(
            "FSDnoisy18k.audio_train.zip",
            "https://zenodo.org/record/2529934/files/FSDnoisy18k.audio_train.zip?download=1",
            "34dc1d34ca44622af5bf439ceb6f0d55",
        ),
        Remote(
            "FSDnoisy18k.audio_test.zip",
            "https://zenodo.org/record/2529934/files/FSDnoisy18k.audio_test.zip?download=1",
            "1ac73d70b4ef3f81900d98c261a832de",
        ),
        Remote(
            "FSDnoisy18k.meta.zip",
            "https://zenodo.org/record/2529934/files/FSDnoisy18k.meta.zip?download=1",
            "96e27a4a63b7a2870522ddcedb5d8296",
        ),
        Remote(
            "FSDnoisy18k.doc.zip",
            "https://zenodo.org/record/2529934/files/FSDnoisy18k.doc.zip?download=1",
            "093a1ca185ec341ca4eac14215e7f96b",
        ),
    ],
    "fsd50k": [
        Remote(
            "FSD50K.ground_truth.zip",
            "https://zenodo.org/record/4060432/files/FSD50K.ground_truth.zip?download=1",
            "ca27382c195e37d2269c4c866dd73485",
        ),
        Remote(
            "FSD50K.metadata.zip",
            "https://zenodo.org/record/4060432/files/FSD50K.metadata.zip?download=1",
            "b9ea0c829a411c1d42adb9da539ed237",
        ),
        Remote(
            "FSD50K.doc.zip",
            "https://zenodo.org/record/4060432/files/FSD50K.doc.zip?download=1",
            "3516162b82dc2945d3e7feba0904e800",
        ),
        Remote(
            "FSD50K.eval_audio.z01",
            "https://zenodo.org/record/4060432/files/FSD50K.eval_audio.z01?download=1",
            "3090670eaeecc013ca1ff84fe4442aeb",
        ),
        Remote(
            "FSD50K.eval_audio.zip",
            "https://zenodo.org/record/4060432/files/FSD50K.eval_audio.zip?download=1",
            "6fa47636c3a3ad5c7dfeba99f2637982",
        ),
        Remote(
            "FSD50K.dev_audio.z01",
            "https://zenodo.org/record/4060432/files/FSD50K.dev_audio.z01?download=1",
            "faa7cf4cc076fc34a44a479a5ed862a3",
        ),
        Remote(
            "FSD50K.dev_audio.z02",
            "https://zenodo.org/record/4060432/files/FSD50K.dev_audio.z02?download=1",
            "8f9b66153e68571164fb1315d00bc7bc",
        ),
        Remote(
            "FSD50K.dev_audio.z03",
            "https://zenodo.org/record/4060432/files/FSD50K.dev_audio.z03?download=1",
            "1196ef47d267a993d30fa98af54b7159",
        ),
        Remote(
            "FSD50K.dev_audio.z04",
            "https://zenodo.org/record/4060432/files/FSD50K.dev_audio.z04?download=1",
            "d088ac4e11ba53daf9f7574c11cccac9",
        ),
        Remote(
            "FSD50K.dev_audio.z05",
            "https://zenodo.org/record/4060432/files/FSD50K.dev_audio.z05?download=1",
            "81356521aa159accd3c35de22da28c7f",
        ),
        Remote(
            "FSD50K.dev_audio.zip",
            "https://zenodo.org/record/4060432/files/FSD50K.dev_audio.zip?download=1",
            "c480d119b8f7a7e32fdb58f3ea4d6c5a",
        ),
    ],
    "esc50": [
        Remote(
            "ESC-50-master.zip",
            "https://github.com/karoldvl/ESC-50/archive/master.zip",
            "7771e4b9d86d0945acce719c7a59305a",
        ),
    ],
}

#: The commit of github.com/edufonseca/uclser20 whose ``pth/`` holds the released encoders (VGG-like and CRNN;
#: the repository's README also mentions a ResNet-18, but ``pth/`` holds no such file).
RELEASED_COMMIT = "3ef0d2377b18ef7611fa685c0c2aeee4090196ea"
#: Architecture -> released file (``released:<arch>`` in :func:`uclser_lib.pretrained.load_encoder`).
RELEASED_FILES = {"vgglike": "VGG_best.pth", "crnn": "CRNN_best.pth"}


def _released_remotes() -> list[Remote]:
    base = f"https://github.com/edufonseca/uclser20/raw/{RELEASED_COMMIT}/pth"
    return [Remote(name, f"{base}/{name}", RELEASED_SHA256[name], "sha256") for name in RELEASED_FILES.values()]


@dataclass(frozen=True)
class _Layout:
    """What a dataset's unpacked folder must hold (relative paths), and where it goes under the data root."""

    folder: str
    must_have: tuple[str, ...] = field(default_factory=tuple)


#: name -> the folder (under the data root) it is unpacked into and the paths that must be in it.
DATASETS = {
    "fsdnoisy18k": _Layout(
        "fsdnoisy18k/dataset",
        (
            "FSDnoisy18k.audio_train",
            "FSDnoisy18k.audio_test",
            "FSDnoisy18k.meta/train.csv",
            "FSDnoisy18k.meta/test.csv",
        ),
    ),
    "fsd50k": _Layout(
        "fsd50k/dataset",
        (
            "FSD50K.dev_audio",
            "FSD50K.eval_audio",
            "FSD50K.ground_truth/dev.csv",
            "FSD50K.ground_truth/eval.csv",
            "FSD50K.ground_truth/vocabulary.csv",
        ),
    ),
    "esc50": _Layout("esc50/dataset", ("audio", "meta/esc50.csv")),
}


def mirror_url(remote: Remote, url_base: str | None = None) -> str:
    """``remote.url``, or ``<url_base>/<filename>`` when a mirror is given (``url_base`` or ``UCLSER_MIRROR``)."""
    base = url_base or os.environ.get("UCLSER_MIRROR")
    return f"{base.rstrip('/')}/{remote.filename}" if base else remote.url


def cache_dir() -> Path:
    """Where downloaded encoders are kept: ``UCLSER_CACHE`` or ``<data root>/cache``."""
    return Path(os.environ.get("UCLSER_CACHE", data_root() / "cache")).expanduser()


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest, checksum: str | None = None, algo: str = "md5", progress: bool = True, timeout=60) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify its ``checksum`` before ``dest`` appears.

    The bytes go to ``<dest>.part``; a rerun after an interruption asks the server for the rest
    (``Range: bytes=N-``) and appends it, or starts over when the server answers with the whole file. Only a
    file whose checksum matches is renamed to ``dest``; a mismatching one is deleted. An existing ``dest``
    with the right checksum is kept as it is. Raises :class:`DownloadError` (one line, naming the URL) on an
    unreachable URL, an HTTP error, a connection cut off midway (the partial file is kept for the resume), a
    wrong checksum, or a full disk (also a quota or file-size limit, :func:`~uclser_lib.runtime.disk_full_error`:
    "no space left on device"; the partial file is kept for the resume).
    """
    dest = Path(dest)
    if dest.is_file() and (checksum is None or _digest(dest, algo) == checksum):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "uclser_lib", "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # asked past the end: the partial file is already whole (or wrong)
            return _finish(url, part, dest, checksum, algo)
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot download {url}: {reason} (unreachable host or no network)") from None
    with response:
        if have and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:
                raise DownloadError(
                    f"cannot resume {url}: asked for bytes from {have}, the server sent from {start}; delete {part}"
                )
            mode = "ab"
        else:  # 200: a server without range support (or a first try) sends the whole file
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress, leave=False
        )
        got = have
        try:
            with open(part, mode) as out, bar:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, ValueError) as err:  # connection reset, IncompleteRead...
                        raise DownloadError(
                            f"download of {url} cut off after {got} bytes ({err}); rerun the same command to resume"
                        ) from None
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    bar.update(len(block))
        except OSError as err:
            if disk_full_error(err, part) is not None:
                kept = part.stat().st_size if part.exists() else 0  # on disk, with the block cut short by the full disk
                raise DownloadError(
                    f"no space left on device while writing {part} from {url}; {kept} bytes kept there, free some "
                    "space and rerun the same command to resume"
                ) from None
            raise DownloadError(f"cannot write {part} (from {url}): {err}") from None
    if total is not None and got < total:
        raise DownloadError(f"download of {url} cut off after {got} of {total} bytes; rerun the same command to resume")
    return _finish(url, part, dest, checksum, algo)


def _content_range_start(value: str | None) -> int | None:
    try:  # "bytes 100-999/1000"
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _finish(url: str, part: Path, dest: Path, checksum: str | None, algo: str) -> Path:
    if checksum is not None:
        got = _digest(part, algo)
        if got != checksum:
            size = part.stat().st_size
            part.unlink()
            raise DownloadError(
                f"checksum mismatch for {url}: {algo} of the {size} bytes received is {got}, expected {checksum} "
                "(corrupt, truncated or changed file; deleted)"
            )
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# Split zip archives (``zip -s``): ``X.z01``, ``X.z02``, ..., ``X.zip``

#: The marker at the start of a split archive's first part (Info-ZIP's ``zip -s`` writes it; offsets on that part
#: count it); ``zip -s 0`` leaves it out.
_SPLIT_MARKER = b"PK\x07\x08"
#: Above this, an offset, size or count goes into the ZIP64 records (a module constant so that tests can lower it).
_ZIP64_LIMIT = 0xFFFFFFFF
_ZIP64_COUNT_LIMIT = 0xFFFF
_PART_SUFFIX = re.compile(r"\.z\d\d+")


class _Concat:
    """A read-only, seekable file made of segments, each ``bytes`` or ``(path, offset, length)``."""

    def __init__(self, segments: list):
        self._segments, self._starts, self._files, self._pos = [], [], {}, 0
        size = 0
        for seg in segments:
            length = len(seg) if isinstance(seg, bytes) else seg[2]
            if length:
                self._segments.append(seg)
                self._starts.append(size)
                size += length
        self.size = size

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = {0: 0, 1: self._pos, 2: self.size}[whence] + offset
        if pos < 0:
            raise OSError(f"seek to {pos}, before the start of the joined archive")
        self._pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        out = []
        while self._pos < end:
            k = bisect.bisect_right(self._starts, self._pos) - 1
            seg, within = self._segments[k], self._pos - self._starts[k]
            if isinstance(seg, bytes):
                block = seg[within : within + end - self._pos]
            else:
                path, offset, length = seg
                f = self._files.get(path)
                if f is None:
                    f = self._files[path] = open(path, "rb")  # noqa: SIM115 — kept open until close()
                f.seek(offset + within)
                block = f.read(min(length - within, end - self._pos))
                if not block:
                    raise OSError(f"{path}: shorter than when the archive was opened")
            out.append(block)
            self._pos += len(block)
        return b"".join(out)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> _Concat:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _zip64_fields(extra: bytes, wanted: list[bool]) -> tuple[list[int | None], bytes]:
    """The values of a central directory entry's ZIP64 extra field (uncompressed size, compressed size, header
    offset, disk: those of ``wanted``, in that order) and the entry's other extra fields."""
    values: list[int | None] = [None] * 4
    rest, i = [], 0
    while i + 4 <= len(extra):
        kind, size = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4 : i + 4 + size]
        if kind == 1:
            at = 0
            for j, (want, width) in enumerate(zip(wanted, (8, 8, 8, 4))):
                if want and at + width <= len(body):
                    values[j] = int.from_bytes(body[at : at + width], "little")
                    at += width
        else:
            rest.append(extra[i : i + 4 + size])
        i += 4 + size
    return values, b"".join(rest)


def _split_zip_segments(parts: list[Path]) -> list:
    """The segments of :class:`_Concat` that read the split archive ``parts`` (first part first, the ``.zip``
    last) as one zip archive: each part's bytes (the first part's split marker left out) up to the central
    directory, then the central directory rewritten with offsets from the start of the joined archive, all on disk
    0, and its end records (ZIP64 ones where a value needs them). What ``zip -s 0`` writes."""
    sizes = [p.stat().st_size for p in parts]
    whole = _Concat([(p, 0, n) for p, n in zip(parts, sizes)])
    skip = len(_SPLIT_MARKER) if whole.read(4) == _SPLIT_MARKER else 0  # bytes before the first local header
    base = [sum(sizes[:k]) for k in range(len(parts))]  # where each part starts in the concatenation
    last = parts[-1]
    tail_len = min(sizes[-1], 22 + 0xFFFF)
    whole.seek(base[-1] + sizes[-1] - tail_len)
    tail = whole.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise zipfile.BadZipFile(f"{last.name}: no end of central directory (not the last part of a split archive?)")
    _, disk, cd_disk, _, count, cd_size, cd_offset, comment_len = struct.unpack_from("<4s4H2LH", tail, at)
    comment = tail[at + 22 : at + 22 + comment_len]
    if 0xFFFF in (disk, cd_disk, count) or 0xFFFFFFFF in (cd_size, cd_offset):  # the ZIP64 end records hold them
        loc = tail[at - 20 : at] if at >= 20 else b""
        if loc[:4] != b"PK\x06\x07":
            raise zipfile.BadZipFile(f"{last.name}: ZIP64 end of central directory locator not found")
        _, rec_disk, rec_offset, _ = struct.unpack("<4sLQL", loc)
        whole.seek(base[rec_disk] + rec_offset if rec_disk < len(parts) else whole.size)
        rec = whole.read(56)
        if rec[:4] != b"PK\x06\x06":
            raise zipfile.BadZipFile(f"{last.name}: ZIP64 end of central directory record not found")
        _, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = struct.unpack("<4sQ2H2L4Q", rec)
    if disk + 1 != len(parts):
        raise zipfile.BadZipFile(
            f"{last.name}: the archive has {disk + 1} parts, {len(parts)} were given "
            f"({', '.join(p.name for p in parts)})"
        )
    cd_start = base[cd_disk] + cd_offset
    whole.seek(cd_start)
    cd = whole.read(cd_size)
    out, i = [], 0
    for _ in range(count):
        fixed = cd[i : i + 46]
        if len(fixed) < 46 or fixed[:4] != b"PK\x01\x02":
            raise zipfile.BadZipFile(f"{last.name}: bad central directory entry at byte {cd_start + i}")
        f = list(struct.unpack("<4s4B4HL2L5H2L", fixed))
        name_len, extra_len, comment_len_e = f[12], f[13], f[14]
        name = cd[i + 46 : i + 46 + name_len]
        extra = cd[i + 46 + name_len : i + 46 + name_len + extra_len]
        entry_comment = cd[i + 46 + name_len + extra_len : i + 46 + name_len + extra_len + comment_len_e]
        i += 46 + name_len + extra_len + comment_len_e
        wanted = [f[11] == 0xFFFFFFFF, f[10] == 0xFFFFFFFF, f[18] == 0xFFFFFFFF, f[15] == 0xFFFF]
        (usize, csize, offset, disk_start), others = _zip64_fields(extra, wanted)
        offset = f[18] if offset is None else offset
        disk_start = f[15] if disk_start is None else disk_start
        if disk_start >= len(parts):
            raise zipfile.BadZipFile(f"{last.name}: {name!r} starts on part {disk_start + 1} of {len(parts)}")
        offset = base[disk_start] + offset - skip  # from the start of the joined archive
        z64 = b"".join(v.to_bytes(8, "little") for v in (usize, csize) if v is not None) + (
            offset.to_bytes(8, "little") if offset >= _ZIP64_LIMIT else b""
        )
        extra = others + (struct.pack("<HH", 1, len(z64)) + z64 if z64 else b"")
        f[13], f[15], f[18] = len(extra), 0, min(offset, 0xFFFFFFFF)
        out.append(struct.pack("<4s4B4HL2L5H2L", *f) + name + extra + entry_comment)
    new_cd = b"".join(out)
    data_end = cd_start - skip  # the joined archive's central directory starts here
    end = b""
    if count >= _ZIP64_COUNT_LIMIT or data_end >= _ZIP64_LIMIT or len(new_cd) >= _ZIP64_LIMIT:
        rec_at = data_end + len(new_cd)
        end += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(new_cd), data_end)
        end += struct.pack("<4sLQL", b"PK\x06\x07", 0, rec_at, 1)
        count16, size32, offset32 = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    else:
        count16, size32, offset32 = count, len(new_cd), data_end
    end += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count16, count16, size32, offset32, len(comment)) + comment
    segments = []
    for p, start, n in zip(parts, base, sizes):  # the parts' bytes in [skip, cd_start) of the concatenation
        lo, hi = max(start, skip), min(start + n, cd_start)
        if lo < hi:
            segments.append((p, lo - start, hi - lo))
    return [*segments, new_cd + end]


def _split_parts(archive) -> list[Path] | None:
    """The parts of a split archive in order, its ``.zip`` last: ``archive`` itself when it is a tuple or list of
    paths; for a ``X.zip`` with ``X.z01``, ``X.z02``, ... beside it, those and it; else None (not split)."""
    if isinstance(archive, (list, tuple)):
        return [Path(p) for p in archive]
    archive = Path(archive)
    if archive.suffix != ".zip":
        return None
    found = [p for p in archive.parent.glob(f"{glob.escape(archive.stem)}.z*") if _PART_SUFFIX.fullmatch(p.suffix)]
    return sorted(found, key=lambda p: int(p.suffix[2:])) + [archive] if found else None


class _SplitZipFile(zipfile.ZipFile):
    """A :class:`zipfile.ZipFile` over the parts of a split archive (:func:`open_split_zip`)."""

    def __init__(self, parts: list[Path]):
        segments = _split_zip_segments(parts)  # before ZipFile's own state exists: a failure here leaves nothing
        self._joined = _Concat(segments)
        try:
            super().__init__(self._joined)
        except BaseException:
            self._joined.close()
            raise

    def close(self) -> None:
        joined = getattr(self, "_joined", None)
        if joined is None:  # __init__ failed before anything was opened (ZipFile.__del__ calls close)
            return
        try:
            super().close()
        finally:
            joined.close()  # ZipFile does not close a file object it was given


def open_split_zip(archive) -> zipfile.ZipFile:
    """A :class:`zipfile.ZipFile` reading a split zip archive (``zip -s``: ``X.z01``, ``X.z02``, ..., ``X.zip``)
    as the single archive ``zip -s 0`` would join it into, without writing that archive.

    ``archive``: the ``.zip`` (its parts beside it) or the parts in order, the ``.zip`` last. Raises
    :class:`zipfile.BadZipFile` for parts that do not make one split archive (a part missing or out of order).
    ZIP64 archives (a part or the whole over 4 GiB) are read and written as such. Python's ``zipfile`` alone cannot
    read a split archive: it counts offsets from the start of one file, a split archive from the start of each part.
    """
    return _SplitZipFile(_split_parts(archive) or [Path(archive)])


def join_split_zip(archive, out) -> Path:
    """Write the split zip archive ``archive`` (as :func:`open_split_zip` takes it) as one archive ``out``: what
    ``zip -s 0 X.zip --out out`` writes. ``out`` appears complete or not at all."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.joining")
    with _Concat(_split_zip_segments(_split_parts(archive) or [Path(archive)])) as joined:
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(joined, f, 1 << 20)
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return out


def _safe_members_zip(archive: zipfile.ZipFile, path: Path) -> None:
    for name in archive.namelist():
        if name.startswith("/") or ".." in Path(name).parts:
            raise DownloadError(f"{path}: archive member {name!r} would be written outside the target folder")


def unpack(archive, dest, must_have=(), progress: bool = True) -> Path:
    """Unpack a zip or tar(.gz) ``archive`` so that ``dest`` appears only complete.

    A split zip archive is its ``.zip`` with its parts (``.z01``, ...) beside it, or a tuple of its parts in order,
    the ``.zip`` last (:func:`open_split_zip`); the messages name its ``.zip``.

    Everything is extracted into ``<dest parent>/.<dest name>.unpacking``, the folder holding ``must_have``
    (relative paths: the archive's top folder is looked through when there is one) is checked, then renamed to
    ``dest``. A truncated or corrupt archive, an unexpected layout or a full disk raises :class:`DownloadError`
    naming the archive and what to do (free some space and rerun; or delete the archive to download it again);
    the temporary folder is removed, ``dest`` is not created, and neither is its parent folder left behind empty
    when this call made it. The archive itself is left as it is.
    """
    dest = Path(dest)
    parts = _split_parts(archive)
    tmp = dest.with_name(f".{dest.name}.unpacking")
    with _scratch(tmp, _missing_parents(dest)):
        tmp.mkdir(parents=True)
        _extract(parts or Path(archive), tmp, progress)
        return _place(parts[-1] if parts else Path(archive), tmp, dest, must_have)


@contextlib.contextmanager
def _scratch(tmp: Path, made: list[Path]):
    """``tmp`` (a temporary folder, removed first if a killed run left it) is removed when the block ends; when the
    block fails, so are the folders of ``made`` (:func:`_missing_parents`) that are left empty."""
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _missing_parents(path: Path) -> list[Path]:
    """The parent folders of ``path`` that do not exist yet, deepest first."""
    return [p for p in path.parents if not p.exists()]


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that are empty: what a failed unpack made and left with nothing in it."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): kept
            return


#: What to do after an archive that passed its checksum failed to unpack (the archive is kept).
_REDOWNLOAD = "; delete it and rerun the same command to download it again"


def _extract(archive: Path | list[Path], into: Path, progress: bool) -> None:
    """Extract ``archive`` (a path, or a split zip archive's parts, :func:`_split_parts`) into ``into``."""
    split = isinstance(archive, list)
    if split:  # named by its .zip, with its parts
        parts, archive = archive, archive[-1]
    try:
        if split or zipfile.is_zipfile(archive):
            with _SplitZipFile(parts) if split else zipfile.ZipFile(archive) as z:
                _safe_members_zip(z, archive)
                for info in tqdm(z.infolist(), desc=f"unpack {archive.name}", unit="file", disable=not progress):
                    z.extract(info, into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")
        else:
            raise DownloadError(f"{archive}: not a zip or tar archive (truncated or corrupt download?){_REDOWNLOAD}")
    except DownloadError:
        raise
    except OSError as err:
        if disk_full_error(err, archive) is not None:
            raise DownloadError(
                f"no space left on device while unpacking {archive} into {into.parent}; free some space and rerun "
                "the same command (the archive is kept: it is unpacked again, not downloaded again)"
            ) from None
        raise DownloadError(f"{archive}: truncated or corrupt archive ({err}){_redownload(split)}") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError) as err:
        raise DownloadError(
            f"{archive}: truncated or corrupt archive ({type(err).__name__}: {err}){_redownload(split)}"
        ) from None


def _redownload(split: bool) -> str:
    return (
        "; delete it and its parts (.z01, ...) and rerun the same command to download them again"
        if split
        else (_REDOWNLOAD)
    )


def _place(archive: Path, tmp: Path, dest: Path, must_have) -> Path:
    root = tmp
    entries = [p for p in tmp.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if must_have and not all((tmp / m).exists() for m in must_have) and len(entries) == 1 and entries[0].is_dir():
        root = entries[0]  # e.g. ESC-50-master/
    missing = [m for m in must_have if not (root / m).exists()]
    if missing:
        raise DownloadError(
            f"{archive}: unexpected layout, missing {missing} (found {sorted(p.name for p in root.iterdir())[:10]})"
            + (
                _REDOWNLOAD
                if archive.is_file()
                else "; delete its archives and rerun the same command to download them again"
            )
        )
    if dest.exists():
        raise DownloadError(f"{dest} exists already; remove it to unpack {archive} again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(root, dest)
    return dest


def download_dataset(
    name: str, root=None, url_base: str | None = None, keep_archives: bool = False, progress: bool = True
) -> Path:
    """Download, verify and unpack dataset ``name`` (``fsdnoisy18k``, ``fsd50k`` or ``esc50``) under ``root`` (the
    data root).

    Archives go to ``<root>/downloads`` (resumable ``.part`` files), the dataset to ``<root>/<name>/dataset``,
    which appears only complete. Already there: nothing is downloaded. Returns the dataset folder. A split archive
    (FSD50K's audio) is unpacked from its verified parts, read as one archive (:func:`open_split_zip`): no joined
    copy is written, so the disk needs room for the archives and the unpacked dataset (FSD50K: about 25 + 35 GB).
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}")
    root = Path(root or data_root()).expanduser()
    layout = DATASETS[name]
    dest = root / layout.folder
    if dest.is_dir():
        return dest
    downloads = root / "downloads"
    archives = [
        fetch(mirror_url(r, url_base), downloads / r.filename, r.checksum, r.algo, progress) for r in REMOTES[name]
    ]
    made = _missing_parents(dest)  # e.g. <root>/esc50/: not left behind empty by a failed unpack
    if len(archives) == 1:
        unpack(archives[0], dest, layout.must_have, progress)
    else:  # FSDnoisy18k, FSD50K: one zip per top folder (FSD50K's audio: split archives), all into one temporary
        # folder, renamed into place at the end
        tmp = dest.with_name(f".{dest.name}.unpacking-all")
        with _scratch(tmp, made):
            for a in _archive_groups(archives):
                stem = (a[-1] if isinstance(a, tuple) else a).stem
                unpack(a, tmp / stem, (), progress)
                inner = tmp / stem / stem  # FSDnoisy18k.meta.zip holds FSDnoisy18k.meta/
                if inner.is_dir():
                    os.replace(inner, tmp / f"{stem}.inner")
                    shutil.rmtree(tmp / stem)
                    os.replace(tmp / f"{stem}.inner", tmp / stem)
            _place(downloads, tmp, dest, layout.must_have)
    if not keep_archives:
        for a in archives:
            a.unlink(missing_ok=True)
    return dest


def _archive_groups(paths: list[Path]) -> list[Path | tuple[Path, ...]]:
    """The archives to unpack, in order: a split archive's parts (``X.z01``, ..., then ``X.zip``) as one tuple, in
    the place of its ``.zip``."""

    def is_part(p: Path) -> bool:
        return _PART_SUFFIX.fullmatch(p.suffix) is not None

    out: list[Path | tuple[Path, ...]] = []
    for p in paths:
        if is_part(p):
            if not any(q.name == f"{p.stem}.zip" for q in paths):
                raise DownloadError(f"{p}: a part of a split archive without its {p.stem}.zip")
            continue
        parts = sorted((q for q in paths if is_part(q) and q.stem == p.stem), key=lambda q: int(q.suffix[2:]))
        out.append((*parts, p) if parts and p.suffix == ".zip" else p)
    return out


def download_released(cache=None, url_base: str | None = None, progress: bool = True) -> dict[str, Path]:
    """Fetch the authors' released encoders into ``cache`` (default :func:`cache_dir`), sha256-verified.

    Returns ``{arch: path}`` for ``vgglike`` and ``crnn``.
    """
    cache = Path(cache or cache_dir())
    out = {}
    for arch, remote in zip(RELEASED_FILES, _released_remotes()):
        out[arch] = fetch(mirror_url(remote, url_base), cache / remote.filename, remote.checksum, "sha256", progress)
    return out
