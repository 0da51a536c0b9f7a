"""Full-mode (the ``course`` preset, not smoke) run time of every notebook: ``make time-course``.

    .venv/bin/python bench/time_notebooks.py [--extract] [--cache fresh|keep] [--no-update] [NOTEBOOK ...]

Runs, as ``make course`` does, ``python -m uclser_lib extract`` (with ``--extract``) and then each notebook with
``jupyter nbconvert --to notebook --execute`` (executed copies in ``build/``), and measures for each step its
wall-clock time and its CPU time (user + system of the step's processes, the notebook's kernel included, from
``getrusage(RUSAGE_CHILDREN)``). With ``--cache fresh`` (the default) the embedding cache starts empty in a
temporary folder shared by the steps of this run, as in a fresh clone; ``--cache keep`` uses the checkout's.
Prints a Markdown table (step, wall s, CPU s, date, machine, load average before, command) and, unless
``--no-update``, writes it into the timing section of ``bench/RESULTS.md`` (between its two markers, replaced at
each run). Other jobs on the machine lengthen wall times, not CPU times: the table records the load average.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
START = "<!-- time-notebooks:start -->"
END = "<!-- time-notebooks:end -->"
HEADING = "## Full-mode notebook times (`make time-course`, bench/time_notebooks.py)"


def machine() -> str:
    cpu = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}){gpu}"


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(wall s, CPU s, exit status) of ``cmd`` run to its end."""
    c0, t0 = children_cpu(), time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    return time.perf_counter() - t0, children_cpu() - c0, rc


def table(rows: list[dict]) -> str:
    lines = [
        "| step | wall (s) | wall (min) | CPU (s) | exit | date (UTC) | load avg before | command |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {r['wall']:.0f} | {r['wall'] / 60:.1f} | {r['cpu']:.0f} | {r['rc']} | {r['date']} | "
            f"{r['load']} | `{r['command']}` |"
        )
    total_wall, total_cpu = sum(r["wall"] for r in rows), sum(r["cpu"] for r in rows)
    lines.append(f"| **total** | {total_wall:.0f} | {total_wall / 60:.1f} | {total_cpu:.0f} | | | | |")
    return "\n".join(lines)


def update_results(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    block = f"{START}\n{text}\n{END}"
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    elif "\n## " in old:  # newest first: above the first section
        at = old.index("\n## ") + 1
        new = old[:at] + f"{HEADING}\n\n{block}\n\n" + old[at:]
    else:
        new = old.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    tmp = RESULTS.with_name(f".{RESULTS.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, RESULTS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to run (default: all of notebooks/, in order)")
    ap.add_argument("--extract", action="store_true", help="time `python -m uclser_lib extract` first")
    ap.add_argument("--cache", choices=("fresh", "keep"), default="fresh", help="embedding cache (default fresh)")
    ap.add_argument("--no-update", action="store_true", help="print the table only, leave bench/RESULTS.md")
    ap.add_argument("--note", default="", help="a line written under the table (e.g. 'the machine was shared')")
    args = ap.parse_args(argv)
    notebooks = [Path(n) for n in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    py = sys.executable
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.pop("UCLSER_SMOKE", None)  # full mode
    if args.cache == "fresh":  # removed at the end
        env["UCLSER_EMBED_CACHE"] = tempfile.mkdtemp(prefix="uclser-embeddings-")
        atexit.register(shutil.rmtree, env["UCLSER_EMBED_CACHE"], True)
    steps = []
    if args.extract:
        steps.append(("dataset + features (extract)", [py, "-m", "uclser_lib", "extract"]))
    for nb in notebooks:
        nb = nb if nb.is_absolute() else (Path.cwd() / nb).resolve()
        cmd = [py, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(nb)]
        steps.append((nb.name, [*cmd, "--output-dir", str(ROOT / "build"), "--ExecutePreprocessor.timeout=-1"]))
    (ROOT / "build").mkdir(exist_ok=True)
    rows = []
    for name, cmd in steps:
        load = "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
        date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
        print(f"== {name}: {shlex.join(cmd)}", flush=True)
        wall, cpu, rc = timed(cmd, env)
        shown = shlex.join(["python", *(os.path.relpath(c, ROOT) if c.startswith("/") else c for c in cmd[1:])])
        rows.append(dict(step=name, wall=wall, cpu=cpu, rc=rc, date=date, load=load, command=shown))
        print(f"   {wall:.0f} s wall, {cpu:.0f} s CPU, exit {rc}", flush=True)
    text = "\n".join(
        [
            f"Machine: {machine()}; python {platform.python_version()}; embedding cache: {args.cache}; "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.",
            "",
            table(rows),
            *([f"\n{args.note}"] if args.note else []),
        ]
    )
    print(text)
    if not args.no_update:
        update_results(text)
        print(f"written to {RESULTS.relative_to(ROOT)}")
    return max((r["rc"] for r in rows), default=0)


if __name__ == "__main__":
    sys.exit(main())
