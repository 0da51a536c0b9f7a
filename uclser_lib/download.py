"""Downloads: FSDnoisy18k, ESC-50 and the authors' released encoders, resumable, checksum-verified, unpacked atomically.

``python -m uclser_lib download fsdnoisy18k|esc50|released-encoders``. What is whose:

- **The locations and checksums of the datasets** are soundata's (1.0.1, BSD-3-Clause,
  ``soundata/datasets/fsdnoisy18k.py`` and ``esc50.py``, their ``REMOTES``): the Zenodo record 2529934's four
  zip files with their md5, and ESC-50's GitHub archive with its md5. They are pinned here (:data:`REMOTES`)
  rather than imported: soundata needs pandas, jams and py7zr, which the course's locked environment does not
  carry, and its downloader neither resumes nor unpacks atomically.
- **The released encoders' location** is the authors' repository (github.com/edufonseca/uclser20, folder
  ``pth/``) at a pinned commit; their sha256 are :data:`uclser_lib.released.RELEASED_SHA256`.
- **Ours**: the HTTP client is the standard library's ``urllib`` (redirects, proxies from the environment); on top
  of it, resuming (``Range: bytes=N-`` on the ``.part`` file; a server that ignores the range gets a fresh
  start), the verification before anything is unpacked, the unpacking into a temporary folder renamed into
  place at the end, the layout checks, and one-line errors (:class:`DownloadError`) naming the URL or file.

A mirror (a folder served over HTTP holding the same file names) replaces every host: ``--url-base URL`` or
``UCLSER_MIRROR=URL``; the tests use one on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
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
    "mirror_url",
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


#: Taken from soundata 1.0.1's ``REMOTES`` (see the module docstring).
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


def _safe_members_zip(archive: zipfile.ZipFile, path: Path) -> None:
    for name in archive.namelist():
        if name.startswith("/") or ".." in Path(name).parts:
            raise DownloadError(f"{path}: archive member {name!r} would be written outside the target folder")


def unpack(archive, dest, must_have=(), progress: bool = True) -> Path:
    """Unpack a zip or tar(.gz) ``archive`` so that ``dest`` appears only complete.

    Everything is extracted into ``<dest parent>/.<dest name>.unpacking``, the folder holding ``must_have``
    (relative paths: the archive's top folder is looked through when there is one) is checked, then renamed to
    ``dest``. A truncated or corrupt archive, an unexpected layout or a full disk raises :class:`DownloadError`
    naming the archive and what to do (free some space and rerun; or delete the archive to download it again);
    the temporary folder is removed, ``dest`` is not created, and neither is its parent folder left behind empty
    when this call made it. The archive itself is left as it is.
    """
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(f".{dest.name}.unpacking")
    with _scratch(tmp, _missing_parents(dest)):
        tmp.mkdir(parents=True)
        _extract(archive, tmp, progress)
        return _place(archive, tmp, dest, must_have)


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


def _extract(archive: Path, into: Path, progress: bool) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
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
        raise DownloadError(f"{archive}: truncated or corrupt archive ({err}){_REDOWNLOAD}") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError) as err:
        raise DownloadError(
            f"{archive}: truncated or corrupt archive ({type(err).__name__}: {err}){_REDOWNLOAD}"
        ) from None


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
    """Download, verify and unpack dataset ``name`` (``fsdnoisy18k`` or ``esc50``) under ``root`` (the data root).

    Archives go to ``<root>/downloads`` (resumable ``.part`` files), the dataset to ``<root>/<name>/dataset``,
    which appears only complete. Already there: nothing is downloaded. Returns the dataset folder.
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
    else:  # FSDnoisy18k: one zip per top folder, all into one temporary folder, renamed into place at the end
        tmp = dest.with_name(f".{dest.name}.unpacking-all")
        with _scratch(tmp, made):
            for a in archives:
                unpack(a, tmp / a.stem, (), progress)
                inner = tmp / a.stem / a.stem  # FSDnoisy18k.meta.zip holds FSDnoisy18k.meta/
                if inner.is_dir():
                    os.replace(inner, tmp / f"{a.stem}.inner")
                    shutil.rmtree(tmp / a.stem)
                    os.replace(tmp / f"{a.stem}.inner", tmp / a.stem)
            _place(downloads, tmp, dest, layout.must_have)
    if not keep_archives:
        for a in archives:
            a.unlink(missing_ok=True)
    return dest


def download_released(cache=None, url_base: str | None = None, progress: bool = True) -> dict[str, Path]:
    """Fetch the authors' released encoders into ``cache`` (default :func:`cache_dir`), sha256-verified.

    Returns ``{arch: path}`` for ``vgglike`` and ``crnn``.
    """
    cache = Path(cache or cache_dir())
    out = {}
    for arch, remote in zip(RELEASED_FILES, _released_remotes()):
        out[arch] = fetch(mirror_url(remote, url_base), cache / remote.filename, remote.checksum, "sha256", progress)
    return out
