"""Refresh site/_static/vendor/ from the npm packages pinned in site/vendor.json (`make site-vendor`).

For each package: ``npm pack NAME@VERSION`` (npm's own client, into a temporary folder), the tarball's sha512
checked against the pinned ``integrity`` (the registry's ``dist.integrity``), then only the listed files
copied to ``site/_static/vendor/<dest>/`` (``es5/`` and ``dist/`` prefixes dropped). The result is committed:
``make site`` itself needs no network.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SITE = Path(__file__).resolve().parent
VENDOR = SITE / "_static" / "vendor"


def _strip(member: str) -> str:
    rel = member.removeprefix("package/")
    for prefix in ("es5/", "dist/"):
        rel = rel.removeprefix(prefix)
    return rel


def vendor(pkg: dict, tmp: Path) -> list[str]:
    spec = f"{pkg['name']}@{pkg['version']}"
    out = subprocess.run(
        ["npm", "pack", spec, "--pack-destination", str(tmp), "--json"], check=True, capture_output=True, text=True
    )
    tarball = tmp / json.loads(out.stdout)[0]["filename"]
    algo, want = pkg["integrity"].split("-", 1)
    got = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if got != want:
        sys.exit(f"{spec}: {algo} of the tarball is {got}, vendor.json pins {want}")
    dest = VENDOR / pkg["dest"]
    shutil.rmtree(dest, ignore_errors=True)
    written = []
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            rel = member.name.removeprefix("package/")
            if member.isfile() and any(fnmatch.fnmatch(rel, pattern) for pattern in pkg["files"]):
                target = dest / _strip(member.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                written.append(str(target.relative_to(VENDOR)))
    missing = [p for p in pkg["files"] if not any(fnmatch.fnmatch(w, f"*{_strip('package/' + p)}") for w in written)]
    if missing:
        sys.exit(f"{spec}: no file matched {missing}")
    return written


def main() -> None:
    spec = json.loads((SITE / "vendor.json").read_text())
    lines = [
        "# Vendored JavaScript (written by site/vendor.py from site/vendor.json: do not edit by hand)",
        "",
        "| folder | npm package | licence | why |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in spec["packages"]:
            files = vendor(pkg, Path(tmp))
            print(f"{pkg['name']}@{pkg['version']}: {len(files)} files -> {VENDOR / pkg['dest']}")
            lines.append(f"| `{pkg['dest']}/` | `{pkg['name']}@{pkg['version']}` | {pkg['license']} | {pkg['why']} |")
    (VENDOR / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
