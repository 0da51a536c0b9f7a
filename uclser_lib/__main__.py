"""``python -m uclser_lib``: runs :func:`uclser_lib.cli.main` (the command line is in :mod:`uclser_lib.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
