"""The benchmark suite's --quick mode runs end to end (a smoke test: no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

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
    assert res["views"]["batched/b16"] > 0 and res["train_step"][0]["pipeline_clips_s"] > 0
    assert res["knn"]["loop_vs_vectorised"]["speedup"] > 0
    md = (tmp_path / "results-cpu.md").read_text()
    assert "| SimCLR | vgglike | 16 |" in md and "fast batched path" in md and "host peak" in md
    text = results_md.read_text()  # the new run goes on top, the older one stays
    assert text.index("| SimCLR | vgglike | 16 |") < text.index("## an older run") and text.startswith(
        "# Benchmark results"
    )
    assert res["features"]["fast/w0"] > 0 and res["memory"]["train"]["host_peak_mb"] > 0
