"""Score a warm-start distiller where ESamp uses it: in logit space, through the model's own LM head.

    python -m distiller_pretrain.eval_logits --recording runs/smollm2/recording \
        --warm-start runs/smollm2/export/smollm2-135m-instruct.paper.paper.safetensors [--rows 4000]

On held-out rows (same document split as training), compares p_dist = softmax(W_head·ĥ) with the LLM's own
p_llm = softmax(W_head·h_tgt) for ĥ from the warm start, the identity map (random init at step 1) and the mean
target: top-1 agreement, KL(p_llm ‖ p_dist) in nats, and the squared L2 loss the trainer reports.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def logit_metrics(pred, tgt, weight, bias=None, chunk: int = 512) -> dict:
    import torch
    import torch.nn.functional as F

    top1, kl, sq, n = 0, 0.0, 0.0, 0
    for i in range(0, len(tgt), chunk):
        y = tgt[i:i + chunk].float()
        yh = pred[i:i + chunk].float()
        ll, ld = y @ weight.T, yh @ weight.T
        if bias is not None:
            ll, ld = ll + bias, ld + bias
        lp, lq = F.log_softmax(ll, -1), F.log_softmax(ld, -1)
        top1 += int((ll.argmax(-1) == ld.argmax(-1)).sum())
        kl += float((lp.exp() * (lp - lq)).sum())
        sq += float((y - yh).pow(2).sum())
        n += len(y)
    return {"top1_agree": top1 / n, "kl_nats": kl / n, "sq_loss": sq / n}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m distiller_pretrain.eval_logits", description=__doc__.splitlines()[0])
    p.add_argument("--recording", required=True)
    p.add_argument("--warm-start", required=True)
    p.add_argument("--model", help="model name/path (default: the recording's model_dir)")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--rows", type=int, default=4000, help="held-out rows to score")
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    a = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM

    from sglang_esamp.algo.distiller.distiller import Distiller
    from sglang_esamp.models import resolve_model

    from .data import load_split
    from .evaluated import recording_and_warm_start
    from .shards import read_manifest

    torch.set_num_threads(a.threads)
    manifest = read_manifest(a.recording) or {}
    model_dir = resolve_model(a.model) if a.model else manifest.get("model_dir")
    manifest, shape, state = recording_and_warm_start(p, a.recording, a.warm_start, model=model_dir)
    if manifest["taps"]["target"] != "lm_head_input":
        p.error("--recording: logit-space scoring needs the target tap lm_head_input (taps 'paper')")
    head = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).get_output_embeddings()
    weight = head.weight.detach()
    bias = head.bias.detach() if getattr(head, "bias", None) is not None else None
    data = load_split(a.recording, a.val_fraction, max_val_rows=a.rows)
    dist = Distiller(shape)
    dist.load_export_state(state)
    mu = data.train_tgt.double().mean(0).float()
    with torch.no_grad():
        preds = {"warm_start": dist(data.val_src.float()), "identity": data.val_src.float(),
                 "mean": mu.expand(len(data.val_src), -1)}
        result = {name: logit_metrics(pr, data.val_tgt, weight, bias) for name, pr in preds.items()}
    result["rows"] = len(data.val_src)
    for name in preds:
        r = result[name]
        print(f"{name:>10}: top-1 agreement {r['top1_agree']:.3f}  KL(p_llm||p_dist) {r['kl_nats']:.3f} nats  "
              f"sq loss {r['sq_loss']:.1f}")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
