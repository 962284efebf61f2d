"""What a new user hits in the first hour: default folders, one epoch numbering, ``--test`` on a
run folder, ``--version``, the Ray flags of ``train``, HParams in a run's own event files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_cfg

from snas_ray import cli
from snas_ray.cli.jobs import default_train_out
from snas_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from snas_ray.engine.sinks import JsonlSink
from snas_ray.genotype import save_genotype
from snas_ray.published import get_genotype
from snas_ray.retrain import run_retrain

_TINY_TRAIN = (
    "train.layers=3",
    "train.init_channels=4",
    "train.epochs=3",
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.log_every=1000",
    "train.auxiliary=false",
)


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_default_train_out_is_unique_per_genotype_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = default_train_out("A/genotype.json")
    b = default_train_out("B/genotype.json")
    assert a != b and a.parent == b.parent == Path("runs")
    assert a.name.startswith("train-A-genotype-") and b.name.startswith("train-B-genotype-")
    # The same file named two ways is the same run folder (so a re-run resumes it).
    assert default_train_out(str(tmp_path / "A" / "genotype.json")) == a
    assert default_train_out("./A/../A/genotype.json") == a
    assert default_train_out("SNAS_mild") == Path("runs/train-SNAS_mild")


def test_two_genotype_files_retrain_into_two_folders(tmp_path, monkeypatch, capsys):
    # The first-hour failure: the second file's run was refused with a checkpoint mismatch.
    monkeypatch.chdir(tmp_path)
    for folder, name in (("A", "SNAS_mild"), ("B", "DARTS")):
        save_genotype(get_genotype(name), tmp_path / folder / "genotype.json")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_cfg(*_TINY_TRAIN, "train.epochs=1").to_dict()))
    for folder in ("A", "B"):
        argv = ["train", "--config", str(config), "--genotype", f"{folder}/genotype.json"]
        assert cli.main(argv) == 0
    outs = [json.loads(line)["out"] for line in capsys.readouterr().out.splitlines()]
    assert len(set(outs)) == 2 and all((tmp_path / o / "result.json").is_file() for o in outs)


def test_epochs_are_numbered_from_1_in_every_place(tmp_path, capsys, caplog):
    cfg = tiny_cfg(*_TINY_TRAIN)
    caplog.set_level("INFO", logger="snas_ray")
    result = run_retrain(cfg, tmp_path / "run")
    lines = _lines(tmp_path / "run")
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert "epoch 3/3 done" in caplog.text and "epoch 0/" not in caplog.text
    best = max(lines, key=lambda line: line["test/acc1"])  # the first of equal ones
    assert result["best_epoch"] == best["epoch"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 3
    # train --test takes the run folder and names the same epoch.
    assert cli.main(["train", "--test", "--checkpoint", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "(model after epoch 3 of 3)" in out
    assert json.loads(out.splitlines()[-1])["epoch"] == 3


def test_test_of_a_folder_without_a_checkpoint_is_one_line(tmp_path, capsys):
    assert cli.main(["train", "--test", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "without checkpoints/last.pt" in err and "\n" not in err


def test_a_run_folder_from_before_1_based_epochs_still_resumes(tmp_path):
    # Written by an older snas-ray: metrics.jsonl from epoch 0, best epoch 0-based in last.pt.
    cfg = tiny_cfg(*_TINY_TRAIN)
    run = tmp_path / "run"
    run_retrain(cfg, run)
    old = [line | {"epoch": line["epoch"] - 1} for line in _lines(run)[:2]]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in old))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    # Stopped after 2 of 3 epochs, as saved before: best under "epoch", 0-based.
    best = dict(state["best"])
    best["epoch"] = best.pop("best_epoch") - 1
    (run / "result.json").unlink()
    state |= {"epoch": 2, "best": best}  # the weights stay epoch 3's: numbering is tested here
    save_checkpoint(run / "checkpoints" / "last.pt", state)
    result = run_retrain(cfg, run)
    assert [line["epoch"] for line in _lines(run)] == [1, 2, 3]
    assert 1 <= result["best_epoch"] <= 3


def test_jsonl_sink_renumbers_a_0_based_file_and_drops_unfinished_epochs(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"epoch": e, "x": e}) + "\n" for e in range(4)))
    JsonlSink(path, resume_epoch=2)  # two epochs finished (and checkpointed)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"epoch": 1, "x": 0},
        {"epoch": 2, "x": 1},
    ]
    JsonlSink(path, resume_epoch=1)  # a 1-based file is left numbered as it is
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1]


def test_version_prints_the_installed_versions(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("snas-ray ") and "torch " in out and "ray " in out


@pytest.mark.parametrize(
    "flags",
    [
        ["--address", "auto"],
        ["--storage", "/s"],
        ["--max-failures", "1"],
        ["--gpus-per-worker", "0"],
    ],
)
def test_train_and_search_take_the_ray_flags_only_with_workers(flags, capsys):
    for command in (["search"], ["train", "--genotype", "SNAS_mild"]):
        assert cli.main([*command, *flags]) == 2
        assert "need --workers >= 1" in capsys.readouterr().err


def test_train_passes_the_ray_flags_as_search_does(tmp_path, monkeypatch):
    import snas_ray.distributed as distributed

    seen = {}

    def fake(job):
        def run(cfg, out, options):
            seen[job] = options
            keys = ("val_acc", "test_acc", "test_acc5", "best_test_acc", "params", "flops")
            return dict.fromkeys((*keys, "mac", "epochs_done"), 0)

        return run

    monkeypatch.setattr(distributed, "run_distributed_retrain", fake("train"))
    monkeypatch.setattr(distributed, "run_distributed_search", fake("search"))
    flags = ["--workers", "2", "--address", "10.0.0.1:6379", "--storage", "/shared/ray"]
    flags += ["--max-failures", "5", "--gpus-per-worker", "1", "--out", str(tmp_path / "o")]
    assert cli.main(["train", "--genotype", "SNAS_mild", *flags]) == 0
    assert cli.main(["search", *flags]) == 0
    assert seen["train"] == seen["search"]
    assert (seen["train"].workers, seen["train"].max_failures) == (2, 5)
    assert seen["train"].address == "10.0.0.1:6379" and seen["train"].gpus_per_worker == 1


def test_a_run_writes_hparams_into_its_own_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    cfg = tiny_cfg(*_TINY_TRAIN, "train.epochs=1", "output.tensorboard=true")
    run_retrain(cfg, tmp_path / "run")
    tb = tmp_path / "run" / "tb"
    assert [p for p in tb.iterdir() if p.is_dir()] == []  # no add_hparams sub-run
    events = EventAccumulator(str(tb))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["train.epochs"].number_value == 1
    assert start.hparams["seed"].number_value == 0
    assert "device" not in start.hparams and "data.root" not in start.hparams  # may differ
    assert metadata.SESSION_END_INFO_TAG in content
