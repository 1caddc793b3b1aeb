"""``ESampSampler``: SGLang's own Sampler, plus the ESamp rule on the rows of the current step that use it.

Everything SGLang does stays as it is (penalties, grammar, custom logit processors, NaN handling, logprobs, TP
token sync). Two overrides of private Sampler methods (listed and checked in ``sglang_esamp.hooks``):
  * ``_preprocess_logits``: after SGLang's preprocessing, keep a copy of the ESamp rows' logits in the step's
    ``ESampStep`` (the sampler then divides by the temperature and softmaxes in place);
  * ``_sample_from_probs``: SGLang samples every row as usual; the ESamp rows' tokens are then replaced by the
    ESamp rule applied to the saved logits with the rows' own temperature/top-k/top-p/min-p. When every row of
    the batch is an ESamp row, SGLang's draw (a full-vocabulary sort per row) is skipped: each row is sampled
    once; if the rule fails there, SGLang's own draw runs after all.
Rows without ESamp therefore go through exactly the stock computation (bit-identical), and an all-greedy batch
never reaches ``_sample_from_probs`` (greedy rows are untouched by default). Logprobs, when requested, are the
LLM's own log-probabilities of the token that was chosen -- unless the request asked ``esamp.logprobs:
"sampled"``: its rows of ``probs`` are then overwritten with the distribution the token was drawn from (softmax of
the sampled-from candidate logits, 0 elsewhere) before SGLang takes ``log(probs)``, so SGLang's own logprob code
returns the on-policy token and top logprobs. Rows of seeded requests draw counter-based noise
(``algo.rule.seeded_noise``). An exception in the ESamp rule is contained here: the rows keep SGLang's own tokens and
the error is left on the step for ``step.run`` to count. The sampler finds the armed step and its runtime on
``sampling_info`` (``step_state.Armed``; attached by ``after_init_new``, removed by ``around_sample`` when
``step.run`` does not arm the rows).
"""
from __future__ import annotations

import torch
from sglang.srt.layers.sampler import Sampler

from . import step as esamp_step
from . import step_state


class ESampSampler(Sampler):
    def _preprocess_logits(self, logits, sampling_info):
        logits = super()._preprocess_logits(logits, sampling_info)
        armed = step_state.current(sampling_info)
        step = None if armed is None else armed.step
        if step is not None and step.logits is None and logits.shape[0] == len(sampling_info.temperatures):
            try:
                step.logits = logits.index_select(0, step.rows).float()
            except Exception as e:  # contained: stock tokens for this step
                step.error = e
        return logits

    def _sample_from_probs(self, probs, sampling_info, positions, simple_sampling_case):
        armed = step_state.current(sampling_info)   # attached only while step.run armed the rows
        step = None if armed is None else armed.step
        ready = step is not None and step.logits is not None
        if ready and _every_row_is_esamp(step, probs, sampling_info):
            # each row sampled once: SGLang's draw would be thrown away (it sorts the whole vocabulary per row)
            out = _esamp_rule(armed, sampling_info)
            if out is not None:
                ids = torch.empty(probs.shape[0], dtype=torch.int32, device=probs.device)
                ids[step.rows] = out.tokens.to(torch.int32)
                _write_logprobs(step, probs, out)
                armed.rt.counters.add("stock_draws_skipped")
                return ids, None
            # the rule failed (contained, step.error is set): SGLang's own tokens for every row
        ids, capture = super()._sample_from_probs(probs, sampling_info, positions, simple_sampling_case)
        if not ready or step.error is not None:
            return ids, capture
        out = _esamp_rule(armed, sampling_info)
        if out is None:
            return ids, capture
        new_ids = ids.clone()
        new_ids[step.rows] = out.tokens.to(ids.dtype)
        _write_logprobs(step, probs, out)
        return new_ids, capture


def _esamp_rule(armed, sampling_info):
    """3.-4. predict and sample: the ESamp rule on the step's rows with their own filters, or None (contained)."""
    rows = armed.step.rows
    filters = [t.reshape(-1).index_select(0, rows) for t in (sampling_info.temperatures, sampling_info.top_ks,
                                                              sampling_info.top_ps, sampling_info.min_ps)]
    return esamp_step.sample(armed.rt, armed.step, filters)


def _write_logprobs(step, probs, out) -> None:
    """Rows that asked ``logprobs: "sampled"`` report the distribution their token was drawn from."""
    if step.sampled_logprobs is not None:
        _write_sampled_probs(probs, step.rows.index_select(0, step.sampled_logprobs), out, step.sampled_logprobs)


def _every_row_is_esamp(step, probs, sampling_info) -> bool:
    """The batch is all ESamp rows and SGLang was not asked to capture a sampling mask of its own draw."""
    return step.rows.numel() == probs.shape[0] and getattr(sampling_info, "sampling_mask_batch_indices", None) is None


def _write_sampled_probs(probs, batch_rows, out, out_rows) -> None:
    """probs[batch_rows] := the sampled-from distribution of those rows (SGLang then returns log(probs)). Greedy
    rows keep SGLang's own (their token is the argmax, not a draw)."""
    p = torch.softmax(out.cand_logits.index_select(0, out_rows), dim=-1)   # -inf padding -> 0
    dist = torch.zeros((out_rows.numel(), probs.shape[1]), dtype=probs.dtype, device=probs.device)
    dist.scatter_add_(1, out.cand_ids.index_select(0, out_rows), p.to(probs.dtype))  # padding adds 0
    greedy = out.greedy.index_select(0, out_rows).unsqueeze(1)
    probs.index_copy_(0, batch_rows, torch.where(greedy, probs.index_select(0, batch_rows), dist))
