"""Command line: ``python -m uclser_lib <command>``.

- ``extract [--preset tiny|course] [--fsd-root DIR]``: make sure the dataset and its features exist.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uclser_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="generate the course dataset if needed and extract its log-mel features")
    ex.add_argument("--preset", choices=["tiny", "course"], default=None, help="course dataset preset (default: course, tiny in smoke mode)")
    ex.add_argument("--fsd-root", default=None, help="use FSDnoisy18k on disk at this folder instead (or set UCLSER_FSD_ROOT)")
    ex.add_argument("--device", default=None, help="device for the STFT (default: CUDA when present)")
    args = parser.parse_args(argv)

    if args.command == "extract":
        from .data import prepare

        course = prepare(args.preset, fsd_root=args.fsd_root, device=args.device)
        print(f"{course.name}: {len(course.train)} train clips, {len(course.test)} test clips, features in {course.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
