"""CLI plumbing: YAML configs as defaults, flags override, errors name the flag or key."""
import pytest

from pretrain_testutil import REPO, train_args


def _parse(module, argv):
    from distiller_pretrain.cli_config import parse_args

    return parse_args(module.build_parser(), module.__name__.rsplit(".", 1)[-1], argv)


@pytest.mark.parametrize("name", ["smollm2.yaml", "qwen2.5-coder-0.5b.yaml"])
def test_shipped_configs_parse_for_every_stage(name):
    from distiller_pretrain import export, record, train

    cfg = str(REPO / "configs" / "pretrain" / name)
    r = _parse(record, ["--config", cfg])
    t = _parse(train, ["--config", cfg, "--steps", "7"])
    e = _parse(export, ["--config", cfg])
    assert r.model == t.model == e.model and r.taps == t.taps == "paper" and t.preset == "paper"
    assert r.max_rows == 200000 and (REPO / r.corpus).is_file()
    assert t.steps == 7 and t.zero_stage == 1 and t.lr == 1e-3  # the flag wins over the YAML
    assert train.resolve_paths(train.build_parser(), t).recording.endswith("/recording")


def test_unknown_keys_and_missing_values_name_themselves(tmp_path, capsys):
    from distiller_pretrain import record, train

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ntrain:\n  stepz: 3\n")
    with pytest.raises(SystemExit):
        _parse(train, ["--config", str(bad)])
    assert "stepz" in capsys.readouterr().err
    bad.write_text("train:\n  lr: 1e-3\n  zero_stage: 3\n")
    with pytest.raises(SystemExit):
        _parse(train, ["--config", str(bad)])
    assert "zero_stage: 3" in capsys.readouterr().err
    bad.write_text("train:\n  lr: 1e-3\n")  # YAML 1.1 reads this as a string; it must still become a float
    assert _parse(train, ["--config", str(bad)]).lr == 1e-3
    bad.write_text("modle: m\n")
    with pytest.raises(SystemExit, match="modle"):
        _parse(train, ["--config", str(bad)])
    with pytest.raises(SystemExit):
        record.main(["--model", "m"])
    assert "--corpus is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.resolve_paths(train.build_parser(), train.build_parser().parse_args(["--out", "x"]))
    assert "--recording is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.resolve_paths(train.build_parser(), train.build_parser().parse_args(["--recording", "r", "--out", "o",
                                                                                   "--val-fraction", "1.5"]))
    assert "--val-fraction" in capsys.readouterr().err


def test_train_and_export_refuse_mismatched_inputs(tiny_recording, tmp_path):
    from distiller_pretrain.export import export
    from distiller_pretrain.train import train

    with pytest.raises(SystemExit, match="--taps tllm"):
        train(train_args(recording=tiny_recording, out=tmp_path / "t", steps=1, taps="tllm"))
    with pytest.raises(SystemExit, match="--preset"):
        train(train_args(recording=tiny_recording, out=tmp_path / "t", steps=1, preset="big"))
    with pytest.raises(SystemExit, match="--recording"):
        train(train_args(recording=tmp_path / "nothing", out=tmp_path / "t", steps=1))
    with pytest.raises(SystemExit, match="--train-dir"):
        export(tmp_path / "t")
