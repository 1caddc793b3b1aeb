"""The evaluation commands' shared start: a recording without a manifest is a CLI error naming the flag."""
import pytest

from distiller_pretrain import eval_logits, online_trace


@pytest.mark.parametrize("cli", [eval_logits, online_trace])
def test_a_recording_without_a_manifest_is_refused_naming_the_flag(cli, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--recording", str(tmp_path), "--warm-start", str(tmp_path / "w.safetensors")])
    assert e.value.code == 2 and "--recording" in capsys.readouterr().err
