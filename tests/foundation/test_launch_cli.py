"""`python -m sglang_esamp.launch_server` command line: help and flag errors (no server start needed)."""
import subprocess
import sys


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sglang_esamp.launch_server", *args], capture_output=True,
                          text=True, timeout=180)


def test_help_lists_esamp_flags_beside_sglang_flags():
    r = _cli("--help")
    assert r.returncode == 0, r.stderr[-2000:]
    for flag in ("--model-path", "--tp-size", "--esamp-bank-slots", "--esamp-default-beta", "--esamp-taps",
                 "--esamp-candidate-cap", "--esamp-warm-start", "--esamp-distiller"):
        assert flag in r.stdout, flag


def test_bad_esamp_flag_names_the_flag():
    r = _cli("--esamp-default-beta", "7")
    assert r.returncode != 0
    assert "--esamp-default-beta" in r.stderr and "[0, 4]" in r.stderr
    r = _cli("--esamp-bank-slots", "many")
    assert r.returncode != 0 and "--esamp-bank-slots" in r.stderr
