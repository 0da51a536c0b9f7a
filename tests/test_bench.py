"""The benchmark suite's --quick mode runs end to end (a smoke test: no timing is asserted)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the benchmark suite end to end, in a subprocess

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_runs(tmp_path):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\nIntro.\n\n## an older run\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(tmp_path),
            "--sections",
            "features,views,train,knn",
            "--update-results",
            str(results_md),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / "results-cpu.json").read_text())
    # the ratios reported are those of the rates and times reported next to them
    views, step, knn = res["views"], res["train_step"][0], res["knn"]
    assert math.isclose(views["speedup/w0/b16"], views["batched/b16"] / views["reference/w0/b16"])
    assert step["arch"] == "vgglike" and step["batch"] == 16
    assert math.isclose(step["pipeline_over_network"], step["pipeline_clips_s"] / step["network_clips_s"])
    loop = knn["loop_vs_vectorised"]
    assert math.isclose(loop["speedup"], loop["loop_s"] / loop["vectorised_s"])
    assert math.isclose(knn["val_plus_test_seconds"], sum(s["seconds"] for s in knn["sets"].values()))
    md = (tmp_path / "results-cpu.md").read_text()
    assert "| SimCLR | vgglike | 16 |" in md and "fast batched path" in md and "host peak" in md
    text = results_md.read_text()  # the new run goes on top, the older one stays
    assert text.index("| SimCLR | vgglike | 16 |") < text.index("## an older run") and text.startswith(
        "# Benchmark results"
    )
    f = res["features"]
    if "librosa/w1" in f:  # librosa installed
        assert math.isclose(f["fast_over_librosa/w1"], f["fast/w0"] / f["librosa/w1"])
    peaks = [m["host_peak_mb"] for m in res["memory"].values()]  # the process's peak so far, section after section
    assert list(res["memory"]) == ["features", "views", "train", "knn"] and peaks == sorted(peaks)
