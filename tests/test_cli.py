"""The command line: YAML configs with overrides, clear config errors, pre-training and export end to end, and the
one error path of every subcommand (one ``error:`` line and exit code 2, or the traceback with ``--debug``).

End-to-end runs use the tiny course data.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uclser_lib import pretrained, runtime
from uclser_lib.cli import main
from uclser_lib.config import ConfigError, build, parse_overrides, read_yaml
from uclser_lib.experiments import STAGE_INITS, Protocol
from uclser_lib.train import PretrainConfig


def test_overrides_parse_as_yaml():
    assert parse_overrides(["--epochs", "10", "--augment.mix_alpha", "0.1", "--milestones", "[3, 4]"]) == {
        "epochs": 10,
        "augment": {"mix_alpha": 0.1},
        "milestones": [3, 4],
    }
    with pytest.raises(ConfigError, match="pairs"):
        parse_overrides(["--epochs"])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochz": 3}, r"unknown key\(s\) \['epochz'\]"),
        ({"epochs": "many"}, r"config.epochs: expected int, got 'many'"),
        ({"lr": True}, r"config.lr: expected float"),
        ({"augment": {"mix_alpha": -1.0}}, "mix_alpha must lie in"),
        ({"augment": {"colour": 1}}, r"config.augment: unknown key"),
        ({"milestones": 5}, "expected a list"),
    ],
)
def test_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        build(PretrainConfig, values)


def test_cli_reports_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [unclosed\n")
    assert main(["pretrain", "--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert main(["pretrain", "--config", "pretrain.yaml", "--batch_sise", "8"]) == 2
    assert "unknown key(s) ['batch_sise']" in capsys.readouterr().err


def test_an_unknown_arch_is_refused_before_any_data(tmp_path, capsys, monkeypatch):
    """Issue 34, row 10: ``--arch resnet50`` failed only after the dataset was prepared, leaving an empty run_dir."""
    import uclser_lib.cli as M

    monkeypatch.setattr(M, "_dataset", lambda *a: pytest.fail("the data was prepared before the check"))
    assert main(["pretrain", "--run_dir", str(tmp_path / "r"), "--arch", "resnet50"]) == 2
    assert capsys.readouterr().err == (
        "error: config.arch: expected one of ('resnet18', 'vgglike', 'crnn'), got 'resnet50'\n"
    )
    assert not (tmp_path / "r").exists()


def test_a_duplicate_yaml_key_is_refused(tmp_path, capsys):
    """Issue 34, row 11: a key set twice in a config took the last value without a word."""
    cfg = tmp_path / "twice.yaml"
    cfg.write_text("epochs: 3\nlr: 0.1\naugment:\n  mix_alpha: 0.1\n  mix_alpha: 0.2\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(cfg)
    assert str(err.value) == f"{cfg}: key 'mix_alpha' is set twice (lines 4 and 5); keep one"
    cfg.write_text("epochs: 3\nlr: 0.1\nepochs: 5\n")
    assert main(["pretrain", "--config", str(cfg), "--run_dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"error: {cfg}: key 'epochs' is set twice (lines 1 and 3); keep one\n"
    cfg.write_text("base: &b {epochs: 3, lr: 0.1}\nrun:\n  <<: *b\n  epochs: 5\n")  # a merge key may be overridden
    assert read_yaml(cfg)["run"] == {"epochs": 5, "lr": 0.1}


@pytest.mark.slow  # end to end: pre-training and evaluation runs
def test_pretrain_and_export_end_to_end(tmp_path, monkeypatch, capsys, small_bn_recalibration):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "pretrained")
    run = tmp_path / "run"
    args = [
        "pretrain",
        "--config",
        "pretrain.yaml",
        "--data.preset",
        "tiny",
        "--run_dir",
        str(run),
        "--epochs",
        "1",
        "--batch_size",
        "16",
        "--knn_k",
        "5",
        "--knn_every",
        "1",
        "--device",
        "cpu",
        "--export",
        "tiny-resnet18",
    ]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics[0]["epoch"] == 1 and "test_knn_balanced" in metrics[0]
    encoder, info = pretrained.load_pretrained("tiny-resnet18")
    assert info["arch"] == "resnet18" and info["epochs"] == 1 and info["dataset"] == "course2_tiny"
    assert not encoder.training and encoder.embed(torch.zeros(2, 1, 101, 96)).shape == (2, 512)
    assert info["made"]["how"].startswith("CPU") and info["made"]["machine"]["torch"] == torch.__version__
    # the projection head travels with the encoder: the run's head, in fp16, gives the run's projections
    head = pretrained.load_head("tiny-resnet18")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    w = ckpt["model"]["head.net1.0.weight"]
    assert torch.allclose(head.net1[0].weight, w.half().float()) and not head.training
    assert head(encoder.embed(torch.randn(3, 1, 101, 96))).shape == (3, 512)
    # a file exported before heads were shipped: load_head says so (the encoder itself still loads)
    old = tmp_path / "old"
    old.mkdir()
    blob = torch.load(tmp_path / "pretrained" / "tiny-resnet18.pt", weights_only=True)
    torch.save({k: v for k, v in blob.items() if k != "head"}, old / "tiny-resnet18.pt")
    entry = dict(pretrained.read_manifest(tmp_path / "pretrained")["tiny-resnet18"])
    entry.pop("metrics")
    entry["sha256"] = runtime.sha256_of(old / "tiny-resnet18.pt")
    (old / "manifest.json").write_text(json.dumps({"tiny-resnet18": entry}))
    pretrained.load_pretrained("tiny-resnet18", folder=old)
    with pytest.raises(ValueError, match="tiny-resnet18.pt: no projection head"):
        pretrained.load_head("tiny-resnet18", folder=old)
    # the evaluation command on the exported encoder, with a label-noise point
    out = tmp_path / "results.json"
    assert (
        main(
            [
                "evaluate",
                "--encoder",
                "tiny-resnet18",
                "--epochs",
                "1",
                "--seeds",
                "0",
                "--linear-lrs",
                "0.1",
                "--finetune-lrs",
                "0.01",
                "--probe-epochs",
                "0",
                "--label-noise",
                "0.5",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    assert {(r["init"], r["stage"], r["task"]) for r in results["summary"]} == {
        (i, s, t)
        for s, t in (("linear", "noisy"), ("finetune", "noisy"), ("finetune", "clean"))
        for i in STAGE_INITS[s]
    }
    assert results["recipe"]["linear_lrs"] == [0.1] and {g["baseline"] for g in results["gains"]} == {
        "random",
        "random_bn",
        "handcrafted",
    }
    assert {r["wrong_rate"] for r in results["label_noise"]["rows"]} == {0.5}
    # a rerun of one stage, with another seed, put into that file; its command is recorded
    merge = [
        "evaluate",
        "--encoder",
        "tiny-resnet18",
        "--epochs",
        "1",
        "--stages",
        "finetune:clean",
        "--seeds",
        "3",
        "--linear-lrs",
        "0.1",
        "--finetune-lrs",
        "0.01",
        "--probe-epochs",
        "0",
        "--device",
        "cpu",
        "--merge-into",
        str(out),
    ]
    assert main(merge) == 0
    merged = json.loads(out.read_text())
    assert len(merged["rows"]) == len(results["rows"]) + 2 and merged["seeds"] == [0, 3] and "label_noise" in merged
    assert [r["command"] for r in merged["runs"]] == [r["command"] for r in results["runs"]] + [
        "python -m uclser_lib " + " ".join(merge)
    ]
    assert merged["recipe"]["probe_epochs"] == [0] and merged["runs"][-1]["machine"]["torch"] == torch.__version__
    # another grid is another recipe: refused before any run, the file untouched
    before = out.read_text()
    assert main([*merge[:-2], "--finetune-lrs", "0.03", *merge[-2:]]) == 2
    assert "different recipes" in capsys.readouterr().err and out.read_text() == before
    before = out.read_text()
    assert main([*merge[:4], "2", *merge[5:]]) == 2  # other epochs: refused before any run, the file untouched
    assert "different epochs: 1 vs 2" in capsys.readouterr().err and out.read_text() == before
    # only the pre-trained init rerun (after re-training the encoder): the baselines' rows are kept
    only = [*merge[:6], "linear:noisy", *merge[7:8], "0", *merge[9:], "--inits", "pretrained"]
    assert main(only) == 0
    again = json.loads(out.read_text())
    assert len(again["rows"]) == len(merged["rows"]) and again["runs"][-1]["encoder_sha256"] == info["sha256"]
    assert {r["encoder_sha256"] for r in again["rows"] if r["init"] == "pretrained"} == {info["sha256"]}
    assert all("encoder_sha256" not in r for r in again["rows"] if r["init"] != "pretrained")
    # only the curves, by linear evaluation
    assert (
        main(
            [
                "evaluate",
                "--encoder",
                "tiny-resnet18",
                "--epochs",
                "1",
                "--seeds",
                "0",
                "--linear-lrs",
                "0.1",
                "--finetune-lrs",
                "0.01",
                "--probe-epochs",
                "0",
                "--stages",
                "--label-noise",
                "0.5",
                "--curve-stage",
                "linear",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    assert small_bn_recalibration and set(small_bn_recalibration) == {Protocol().bn_batches}  # the CLI's protocol
    assert results["summary"] == [] and {r["stage"] for r in results["label_noise"]["rows"]} == {"linear"}
    # a corrupted file is refused before it is unpickled
    path = tmp_path / "pretrained" / "tiny-resnet18.pt"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="sha256"):
        pretrained.load_pretrained("tiny-resnet18")
    with pytest.raises(FileNotFoundError, match="no pre-trained encoder 'nope'"):
        pretrained.load_pretrained("nope")


@pytest.mark.slow  # end to end: pre-training and evaluation runs
@pytest.mark.parametrize(
    "command, extra",
    [
        ("linear-eval", ["--encoder", "course-vgglike", "--task", "noisy"]),
        ("finetune", ["--encoder", "random:resnet18", "--task", "clean", "--batch_size", "16"]),
    ],
)
def test_downstream_commands(tmp_path, command, extra):
    out = tmp_path / "res.json"
    assert (
        main(
            [
                command,
                "--data.preset",
                "tiny",
                "--epochs",
                "2",
                "--milestones",
                "[1]",
                "--out",
                str(out),
                "--device",
                "cpu",
                *extra,
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["dataset"] == "course2_tiny" and len(report["history"]) == 2 and 1 <= report["best_epoch"] <= 2
    # the selected epoch is the first of best validation balanced accuracy, and its scores are the ones reported
    vals = [h["val_balanced"] for h in report["history"]]
    assert report["best_epoch"] == vals.index(max(vals)) + 1
    best = report["history"][report["best_epoch"] - 1]
    assert report["val"]["balanced"] == best["val_balanced"] and report["test"]["balanced"] == best["test_balanced"]
    # balanced accuracy = mean recall over the test set's classes (NaN for a class without test clips)
    assert len(report["test_per_class"]) == 20
    assert report["test"]["balanced"] == pytest.approx(np.nanmean(list(report["test_per_class"].values())))


def test_downstream_config_errors(capsys):
    assert main(["linear-eval", "--data.preset", "tiny", "--task", "both"]) == 2
    assert "config.task: expected one of ['clean', 'noisy']" in capsys.readouterr().err
    assert main(["finetune", "--data.preset", "tiny", "--lr", "fast"]) == 2
    assert "config.lr: expected float" in capsys.readouterr().err


def bad_inputs(tmp_path) -> dict[str, list[str]]:
    """For each subcommand, arguments it refuses at once (a missing file, folder or name; an unreachable mirror)."""
    return {
        "extract": ["extract", "--dataset", str(tmp_path / "missing")],
        "pretrain": ["pretrain", "--config", str(tmp_path / "none.yaml")],
        "export": ["export", "--run-dir", str(tmp_path), "--name", "x", "--dataset", "d"],
        "linear-eval": ["linear-eval", "--encoder", "nope"],
        "finetune": ["finetune", "--encoder", "random:nope"],
        "evaluate": ["evaluate", "--encoder", "nope"],
        "download": ["download", "esc50", "--root", str(tmp_path / "data"), "--url-base", "http://127.0.0.1:9/m"],
        "crossval": ["crossval", "--dataset", "esc50", "--encoder", "random:nope"],
    }


SUBCOMMANDS = sorted(bad_inputs(Path("unused")))  # the names only


def test_the_debug_test_covers_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    listed = re.search(r"choose from (.*)\)", capsys.readouterr().err).group(1)
    assert sorted(re.findall(r"'([\w-]+)'", listed)) == SUBCOMMANDS


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_one_error_path(command, tmp_path, capsys, monkeypatch):
    """Without --debug: one line 'error: ...' on stderr and exit code 2; with --debug the same error is raised."""
    monkeypatch.delenv("UCLSER_DEBUG", raising=False)
    argv = bad_inputs(tmp_path)[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    message = captured.err.strip()[len("error: ") :]
    with pytest.raises(Exception) as raised:
        main([*argv[:1], "--debug", *argv[1:]])  # --debug anywhere on the line
    assert str(raised.value).splitlines()[0] in message  # the same error, with its traceback
    assert raised.traceback and "error:" not in capsys.readouterr().err
    monkeypatch.setenv("UCLSER_DEBUG", "1")
    with pytest.raises(type(raised.value)):
        main(argv)


@pytest.mark.slow  # one Python process per subcommand
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_python_m_uclser_lib_prints_the_traceback_with_debug(command, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UCLSER_DEBUG": ""}
    argv = [sys.executable, "-m", "uclser_lib", *bad_inputs(tmp_path)[command]]
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert plain.returncode == 2 and plain.stderr.startswith("error: ") and plain.stderr.count("\n") == 1
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].endswith(plain.stderr.strip()[len("error: ") :])
