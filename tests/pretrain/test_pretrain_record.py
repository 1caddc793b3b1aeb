"""record: the stored vectors are what the taps produce, at the right positions; resume and refusal work."""
import pytest
import torch

from conftest import CORPUS, record_args


def _rerun_rows(model_dir, recording, spec_name, model_dtype="bfloat16"):
    """Re-run every recorded document alone (no padding, no batch) through hf_taps; gather the recorded rows."""
    from distiller_pretrain.corpus import iter_sequences, load_corpus
    from distiller_pretrain.record import load_hf_model
    from distiller_pretrain.shards import load_pairs
    from sglang_esamp.algo.hf_taps import capture_taps
    from sglang_esamp.algo.taps import tap_spec

    pairs = load_pairs(recording)
    model, tok = load_hf_model(model_dir, model_dtype)
    ds, _ = load_corpus(str(CORPUS))
    docs = sorted(set(pairs["doc"].tolist()))
    seqs = {s.doc: s for s in iter_sequences(ds, tok) if s.doc <= docs[-1]}
    src, tgt = torch.empty_like(pairs["src"], dtype=torch.float32), torch.empty_like(pairs["tgt"], dtype=torch.float32)
    for d in docs:
        s = seqs[d]
        with torch.inference_mode(), capture_taps(model, tap_spec(spec_name)) as cap:
            model(input_ids=torch.tensor([s.ids]))
        rows = (pairs["doc"] == d).nonzero(as_tuple=True)[0]
        pos = pairs["pos"][rows]
        assert (pairs["token"][rows] == torch.tensor(s.ids)[pos]).all()  # the row's input token is the doc's
        src[rows] = cap["source"][0, pos].float()
        tgt[rows] = cap["target"][0, pos].float()
    return pairs, src, tgt


def _rel_err(a, b):
    """Worst per-row relative L2 error."""
    return float(((a.float() - b.float()).norm(dim=-1) / b.float().norm(dim=-1)).max())


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_recorded_vectors_are_the_tap_outputs(which, request):
    if which == "tiny":
        model, recording = request.getfixturevalue("tiny_model"), request.getfixturevalue("tiny_recording")
    else:
        from sglang_esamp.models import resolve_model

        model, recording = resolve_model("smollm2-135m-instruct"), request.getfixturevalue("smollm2_recording")
    pairs, src, tgt = _rerun_rows(model, recording, "paper")
    assert len(pairs["src"]) == {"tiny": 2000, "smollm2": 3000}[which]
    # only bf16 batch-vs-single numerics (30 layers deep for SmolLM2's target) and fp16 storage rounding differ
    tol = {"tiny": 2e-2, "smollm2": 0.1}[which]
    assert _rel_err(pairs["src"], src) < 2e-2
    assert _rel_err(pairs["tgt"], tgt) < tol
    # and the check has teeth: a one-row shift is far off
    assert _rel_err(pairs["tgt"][1:], torch.roll(tgt, 1, 0)[1:]) > 0.5


def test_tllm_taps_and_bf16_storage(tiny_model, tmp_path):
    from distiller_pretrain.record import record
    from distiller_pretrain.shards import load_pairs, read_manifest

    out = tmp_path / "tllm"
    record(record_args(model=tiny_model, corpus=CORPUS, out=out, max_rows=300, taps="tllm", dtype="bfloat16"))
    m = read_manifest(out)
    assert m["taps"] == {"preset": "tllm", "source": "layers[0].input_layernorm",
                         "target": "layers[-1].input_layernorm"}
    assert m["storage_dtype"] == "bfloat16" and m["rows"] == 300
    pairs, src, tgt = _rerun_rows(tiny_model, out, "tllm")
    assert pairs["src"].dtype == torch.bfloat16
    assert _rel_err(pairs["src"], src) < 2e-2 and _rel_err(pairs["tgt"], tgt) < 2e-2


def test_resume_continues_and_mismatch_is_refused(tiny_model, tiny_recording, tmp_path):
    from distiller_pretrain.record import record
    from distiller_pretrain.shards import load_pairs, read_manifest

    out = tmp_path / "resumed"
    first = record(record_args(model=tiny_model, corpus=CORPUS, out=out, max_rows=700, shard_rows=300))
    assert first["rows"] == 700 and not first["complete"]
    (out / "shard-00099.arrow.tmp").write_bytes(b"half-written shard of a killed run")
    again = record(record_args(model=tiny_model, corpus=CORPUS, out=out, max_rows=700))
    assert again["rows"] == 700 and not (out / "shard-00099.arrow.tmp").exists()   # nothing to do
    done = record(record_args(model=tiny_model, corpus=CORPUS, out=out, max_rows=2000, shard_rows=300))
    assert done["rows"] == 2000 and sum(s["rows"] for s in done["shards"]) == 2000
    resumed, single = load_pairs(out), load_pairs(tiny_recording)
    keys = list(zip(resumed["doc"].tolist(), resumed["pos"].tolist()))
    assert len(set(keys)) == 2000  # no row recorded twice
    # run 1 = the one-shot recording's first 700 rows; run 2 drops the rest of the cut document and goes on
    one_shot = list(zip(single["doc"].tolist(), single["pos"].tolist()))
    assert keys[:700] == one_shot[:700]
    cut = keys[699][0]
    later = [k for k in one_shot if k[0] > cut]
    assert keys[700] == later[0] and keys[700:700 + len(later)] == later[:1300]
    assert torch.allclose(resumed["tgt"][:700].float(), single["tgt"][:700].float(), rtol=2e-2, atol=2e-2)
    with pytest.raises(SystemExit, match="--taps"):
        record(record_args(model=tiny_model, corpus=CORPUS, out=out, max_rows=3000, taps="tllm"))
    with pytest.raises(SystemExit, match="--dtype"):
        record(record_args(model=tiny_model, corpus=CORPUS, out=out, max_rows=3000, dtype="bfloat16"))
    assert read_manifest(out)["rows"] == 2000
