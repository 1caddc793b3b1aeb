"""The ESamp sampling rule: the LLM's own filter, a candidate-only novelty shift, Gumbel-max over the candidates.

Per row r (DESIGN §1): candidates = SGLang's top-k/top-p/min-p filter of ``logits / T`` (``filters``), capped at C;
for those only ``new = (1+b)*l/T - c*l_dist`` with ``l_dist = W[cand] . h_hat (+ bias)`` and ``c = b`` (``tllm``
form) or ``b / T`` (``scaled`` form), computed by ``esamp_kernels.ops.candidate_novelty_logits`` (it gathers only
the needed LM-head rows); the filter is not recomputed; the token is ``argmax(new + g)`` with Gumbel noise g.

Decisions recorded here:
  * A row is reweighted iff ``beta != 0`` and (it is not greedy or ``greedy="apply"``). Rows that are not
    reweighted never touch the kernel: their candidate logits are the filter's output, bit for bit, so beta = 0
    gives the same logits and, for the same noise, the same token as the unmodified rule.
  * Greedy rows are SGLang's normalized ``top_k <= 1``. ``skip``: the token is ``argmax(logits)`` exactly as SGLang's
    greedy path. ``apply``: SGLang has already replaced the request's top_k by 1, so the candidates are the row's
    top-p/min-p filter at T = 1 with no top-k (capped at C), and the token is the argmax of the shifted logits.
  * Noise is indexed by candidate rank (column j = the j-th best LLM token), so common random numbers across arms
    and across beta values line up rank for rank. ``noise`` holds standard Gumbel draws [R, >= K]; otherwise they
    are drawn as ``-log(Exp(1))`` from ``generator``. Rows in ``seeded`` (requests with a ``sampling_seed``) draw
    counter-based noise instead (``seeded_noise``): the same (seed, sibling, position) gives the same token.
  * The output also says which candidate was chosen (``chosen_rank``) and how far the novelty shift moved its logit
    (``chosen_shift`` = sampled-from logit - the filter's ``l/T``; 0 on rows not reweighted): per-token signals.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from esamp_kernels import ops

from .filters import candidates
from .inputs import LMHead, RuleInputs, RuleOptions
from .vocab_shard import sharded_candidate_logits


@dataclass
class SampleOutput:
    tokens: torch.Tensor        # [R] int64
    cand_ids: torch.Tensor      # [R, K] int64, rank order (K = max candidate count in the batch)
    cand_logits: torch.Tensor   # [R, K] fp32, the logits sampled from (shifted on reweighted rows; -inf padding)
    counts: torch.Tensor        # [R] int64 candidates per row
    truncated: torch.Tensor     # [R] bool: the filter kept more than C and was cut to C
    reweighted: torch.Tensor    # [R] bool: the novelty shift was applied
    greedy: torch.Tensor        # [R] bool
    chosen_rank: torch.Tensor   # [R] int64 column of the chosen token in cand_ids (-1: greedy row off the list)
    chosen_shift: torch.Tensor  # [R] fp32 sampled-from logit minus the filter's l/T, at the chosen token


def gumbel_noise(shape, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard Gumbel draws ``-log(E)``, E ~ Exp(1), fp32."""
    e = torch.empty(shape, dtype=torch.float32, device=device).exponential_(1.0, generator=generator)
    return e.clamp_min_(torch.finfo(torch.float32).tiny).log_().neg_()


def esamp_sample(x: RuleInputs, h_hat: Optional[torch.Tensor], head: LMHead, options: RuleOptions = RuleOptions(),
                 *, generator: Optional[torch.Generator] = None, phase_s: Optional[dict] = None) -> SampleOutput:
    """Sample one token per row of ``x.logits`` [R, V] under the ESamp rule (``inputs.RuleInputs``: the rows'
    filters, betas, distiller coefficient, divisor, noise, seeds and width).

    h_hat: [R, H] predicted final hidden per row, or None (no row reweighted). ``x.distiller_coef`` [R]: multiplier
    of the distiller term (None = 1; 0 = the sharpening control ``(1+b)*l/T``). ``x.seeded``: rows whose noise is
    the counter-based draw of their (seed, stream, position) (overrides ``x.noise``). ``head.shard``: the LM head
    holds only these vocabulary rows (tensor parallel; ``vocab_shard``).
    phase_s: if given, wall seconds of the phases are added under "candidates", "reweight", "draw" (host time:
    on CUDA it measures launches, not kernels).
    ``x.width``: the sync-free form: the candidates' ``topk`` width (``filters.width_bucket``, from the rows' sampling
    params) and masks instead of row lists, so no tensor value is read back to the host (a CUDA step runs it; the
    tokens are the same as without it for the same noise per rank).
    ``x.divisor`` [R]: the reweighted rows' logits are divided by it before the draw (``esamp.sharpen: false``
    passes 1 + beta: ``l/T - coef/(1+beta) * l_dist``, no (1+beta) sharpening); rows not reweighted are untouched.
    """
    logits, temperatures, top_ks, top_ps, min_ps = x.logits, x.temperatures, x.top_ks, x.top_ps, x.min_ps
    betas, distiller_coef, divisor, noise, seeded, width = (x.betas, x.distiller_coef, x.divisor, x.noise, x.seeded,
                                                            x.width)
    candidate_cap, greedy_mode, temperature_form = options.candidate_cap, options.greedy_mode, options.temperature_form
    lm_head_weight, lm_head_bias, vocab_shard = head.weight, head.bias, head.shard
    t0 = time.perf_counter()
    # greedy_mode / temperature_form are validated once, by ESampConfig
    r = logits.shape[0]
    dev = logits.device
    temps = temperatures.reshape(-1).to(torch.float32)
    top_ks = top_ks.reshape(-1).to(torch.int64)
    betas = betas.reshape(-1).to(torch.float32)
    greedy = top_ks <= 1
    if greedy_mode == "apply":
        top_ks = torch.where(greedy, torch.full_like(top_ks, logits.shape[1]), top_ks)

    sync_free = width is not None
    cands = candidates(logits, temps, top_ks, top_ps, min_ps, candidate_cap, width)
    k = cands.ids.shape[1]
    t1 = time.perf_counter()
    new = cands.scaled
    reweight = betas != 0
    if h_hat is None:
        reweight = torch.zeros_like(reweight)
    else:  # a non-finite prediction (e.g. non-finite taps) must not steer: that row samples the plain rule
        reweight &= torch.isfinite(h_hat).all(dim=1)
    if greedy_mode == "skip":
        reweight &= ~greedy

    coef = betas if temperature_form == "tllm" else betas / temps    # the distiller term's coefficient per row
    if distiller_coef is not None:
        coef = coef * distiller_coef.reshape(-1).to(torch.float32)

    def shifted_logits(*args):
        if vocab_shard is None:
            return ops.candidate_novelty_logits(*args)
        return sharded_candidate_logits(*args, shard=vocab_shard)

    if sync_free:   # every row through the kernel, the result kept where reweighted (bit-identical elsewhere)
        if h_hat is not None and r:
            new = shifted_logits(h_hat.nan_to_num(0.0, 0.0, 0.0), cands.ids, cands.counts, cands.scaled,
                                 lm_head_weight, lm_head_bias, torch.where(reweight, betas, 0.0),
                                 torch.where(reweight, coef, 0.0))
    else:
        rows = reweight.nonzero(as_tuple=True)[0]
        if rows.numel():
            kr = int(cands.counts.index_select(0, rows).max().item())  # trim to what these rows need
            shifted = shifted_logits(h_hat.index_select(0, rows), cands.ids.index_select(0, rows)[:, :kr],
                                     cands.counts.index_select(0, rows), cands.scaled.index_select(0, rows)[:, :kr],
                                     lm_head_weight, lm_head_bias, betas.index_select(0, rows),
                                     coef.index_select(0, rows))
            new = new.clone()
            new[rows, :kr] = shifted

    if divisor is not None:   # x / 1 == x: rows with divisor 1 (and rows not reweighted) keep their logits exactly
        div = torch.where(reweight, divisor.reshape(-1).to(torch.float32), 1.0)
        new = new / div.unsqueeze(1)
    t2 = time.perf_counter()
    if noise is None:
        g = gumbel_noise((r, k), dev, generator)
    else:
        if noise.shape[0] != r or noise.shape[1] < k:
            raise ValueError(f"noise must be [R={r}, >= {k}], got {tuple(noise.shape)}")
        g = noise[:, :k].to(device=dev, dtype=torch.float32)
    if seeded is not None:
        g = seeded.overlay(g.clone() if noise is not None else g)
    if r == 0:
        tokens = torch.empty(0, dtype=torch.int64, device=dev)
        pick = torch.empty((0, 1), dtype=torch.int64, device=dev)
    else:
        pick = torch.where(greedy.unsqueeze(1), new, new + g).argmax(dim=1, keepdim=True)
        tokens = cands.ids.gather(1, pick).squeeze(1)
    shift = (new.gather(1, pick) - cands.scaled.gather(1, pick)).squeeze(1)
    rank = pick.squeeze(1)
    if greedy_mode == "skip" and (sync_free or bool(greedy.any())):
        argmax = logits.argmax(dim=-1)
        # SGLang's greedy path, ties included; its token is the filter's first candidate unless a tie broke otherwise
        rank = torch.where(greedy & (argmax != tokens), torch.full_like(rank, -1), rank)
        tokens = torch.where(greedy, argmax, tokens)
        shift = torch.where(greedy, torch.zeros_like(shift), shift)
    if phase_s is not None:
        t3 = time.perf_counter()
        for name, dt in (("candidates", t1 - t0), ("reweight", t2 - t1), ("draw", t3 - t2)):
            phase_s[name] = phase_s.get(name, 0.0) + dt
    return SampleOutput(tokens=tokens, cand_ids=cands.ids, cand_logits=new, counts=cands.counts,
                        truncated=cands.truncated, reweighted=reweight, greedy=greedy, chosen_rank=rank,
                        chosen_shift=shift)
