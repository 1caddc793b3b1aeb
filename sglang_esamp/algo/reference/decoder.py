"""The reference decoder: ESamp generation of n samples of one prompt with Hugging Face transformers.

Written for clarity, not speed; the oracle the SGLang integration is tested against. One loop step per token:
  step 0  the prefill forward gives the first token's logits; it is sampled without ESamp and not trained on;
  step t  (t >= 1) one forward of the n rows' last tokens gives h_src, h_tgt and logits;
          h_hat = predict(h_src) with the weights after update t-1 (exactly one step stale),
          the token is sampled under the ESamp rule, then one update on all live rows (h_src, h_tgt).
Taps are the config's preset resolved by ``hf_taps.capture_taps`` (DESIGN §1). Sampling, the bank and the counters
are those of ``ESampCore``, so the reference and the server share the rule's code but not the orchestration.

Decisions recorded here:
  * Noise: each step draws standard Gumbel noise [n, candidate_cap] from the group's torch.Generator (seeded per
    group), so two runs with the same seed see the same noise whatever beta is (common random numbers).
    Greedy rows ignore it.
  * ``stats`` of a result are the counters of the whole run (all groups of a ``generate_groups`` call).
  * With ``stop_at_eos`` a sample that produced EOS stops: later tokens are ``pad`` (= EOS), its rows are neither
    sampled nor trained on, like a finished sibling leaving SGLang's running batch.
  * ``esamp=False`` runs the same loop without predict/train (the baseline arm); beta = 0 with ESamp on gives the
    same tokens (tested). ``sharpen_only`` is DESIGN §1's control: the same candidates get ``(1+beta)*l/T`` with
    no distiller term, separating ESamp's novelty term from its sharpening.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from ..config import ESampConfig
from ..core import ESampCore
from ..rule.filters import NO_TOP_K
from ..rule.inputs import RuleInputs
from ..rule.sampling import gumbel_noise
from ..update.job import Update
from .hf_taps import capture_taps
from .tap_spec import tap_spec


@dataclass
class SamplingSettings:
    """SGLang-normalized per-request sampling params (greedy = temperature 1, top_k 1)."""
    temperature: float = 1.0
    top_k: int = NO_TOP_K
    top_p: float = 1.0
    min_p: float = 0.0

    def rows(self, n: int, device):
        return (torch.full((n,), self.temperature, dtype=torch.float32, device=device),
                torch.full((n,), self.top_k, dtype=torch.int64, device=device),
                torch.full((n,), self.top_p, dtype=torch.float32, device=device),
                torch.full((n,), self.min_p, dtype=torch.float32, device=device))


@dataclass
class StepRecord:
    """What the rule did at one step, for the n rows (live rows only are meaningful)."""
    step: int
    cand_ids: torch.Tensor        # [n, K]
    cand_logits: torch.Tensor     # [n, K] the logits sampled from (shifted where reweighted), -inf padding
    counts: torch.Tensor          # [n]
    reweighted: torch.Tensor      # [n] bool
    tokens: torch.Tensor          # [n] chosen (sampled or forced)
    live: torch.Tensor            # [n] bool
    losses: List[float] = field(default_factory=list)   # per-slot loss of this step's update (one slot here)


@dataclass
class GenerationResult:
    tokens: torch.Tensor          # [n, T] (EOS-padded after a stop)
    steps: List[StepRecord]
    stats: dict                   # ESampCore counters at the end
    group_stats: Optional[dict]   # the group's slot stats (meta_info.esamp)


class ReferenceDecoder:
    def __init__(self, model, config: ESampConfig = ESampConfig(), *, warm_start_state=None):
        self.model = model.eval()
        self.config = config
        self.taps = tap_spec(config.taps)
        head = model.get_output_embeddings()
        self.lm_head_weight = head.weight.detach()
        self.lm_head_bias = head.bias.detach() if getattr(head, "bias", None) is not None else None
        self.hidden = self.lm_head_weight.shape[1]
        self.device = self.lm_head_weight.device
        self.warm_start_state = warm_start_state

    def generate(self, prompt_ids: Sequence[int], n: int, max_new_tokens: int, *, beta: float = 0.25,
                 sampling: SamplingSettings = SamplingSettings(), seed: int = 0, esamp: bool = True,
                 eos_token_id: Optional[int] = None, stop_at_eos: bool = False,
                 sharpen_only: bool = False) -> GenerationResult:
        """n samples of one prompt; ``esamp=False`` is the baseline (no predict/train, no shift);
        ``sharpen_only`` is the control: ``(1+beta)*l/T`` on the same candidates, no distiller term."""
        return self.generate_groups(prompt_ids, n, max_new_tokens, seeds=[seed], beta=beta, sampling=sampling,
                                    esamp=esamp, eos_token_id=eos_token_id, stop_at_eos=stop_at_eos,
                                    sharpen_only=sharpen_only)[0]

    def generate_groups(self, prompt_ids: Sequence[int], n: int, max_new_tokens: int, *, seeds: Sequence[int],
                        beta: float = 0.25, sampling: SamplingSettings = SamplingSettings(), esamp: bool = True,
                        eos_token_id: Optional[int] = None, stop_at_eos: bool = False,
                        sharpen_only: bool = False) -> List[GenerationResult]:
        """Independent groups of n samples of the same prompt, one per seed, each with its own distiller slot and
        noise stream, run as one batch (the CPU forward is memory-bound: G groups cost about as much as one).
        Group g equals ``generate(seed=seeds[g])`` up to batch-size-dependent float rounding of the LLM forward."""
        return self._run(prompt_ids, n, max_new_tokens, beta, sampling, list(seeds), esamp, eos_token_id,
                         stop_at_eos, forced=None, sharpen_only=sharpen_only)

    def score_forced(self, prompt_ids: Sequence[int], forced: torch.Tensor, *, beta: float = 0.25,
                     sampling: SamplingSettings = SamplingSettings()) -> GenerationResult:
        """Replay given token sequences ``forced`` [n, T] (no EOS stop): per step, the candidate ids and the
        reweighted candidate logits ESamp would have sampled from, with the distiller trained on that history."""
        n, t = forced.shape
        return self._run(prompt_ids, n, t, beta, sampling, [0], True, None, False, forced=forced)[0]

    @torch.no_grad()
    def _forward(self, input_ids, past):
        with capture_taps(self.model, self.taps) as cap:
            out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
        return out.logits[:, -1, :], cap["source"][:, -1, :], cap["target"][:, -1, :], out.past_key_values

    def _run(self, prompt_ids, n, max_new_tokens, beta, sampling, seeds, esamp, eos_token_id, stop_at_eos, forced,
             sharpen_only=False):
        dev = self.device
        g_count = len(seeds)
        rows = g_count * n                          # row g*n + i = sample i of group g
        esamp = esamp and not sharpen_only
        config = self.config.with_bank_slots(max(1, g_count)) if self.config.bank_slots_auto else self.config
        core = ESampCore(config, self.hidden, self.lm_head_weight, None if sharpen_only else self.lm_head_bias,
                         dev, warm_start_state=self.warm_start_state)   # bank_slots auto: a slot per group
        slots = [core.acquire_slot() if esamp else None for g in range(g_count)]
        if esamp and any(s is None for s in slots):
            raise ValueError(f"{g_count} groups need {g_count} bank slots; config has {self.config.bank_slots}")
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        temps, top_ks, top_ps, min_ps = sampling.rows(rows, dev)
        zero_beta = torch.zeros(rows, dtype=torch.float32, device=dev)
        step_beta = torch.full((rows,), float(beta), dtype=torch.float32, device=dev)
        slot_ids = torch.tensor([(s if s is not None else -1) for s in slots for _ in range(n)], dtype=torch.int64,
                                device=dev)
        no_slot = torch.full_like(slot_ids, -1)
        coef_control = torch.zeros(rows, dtype=torch.float32, device=dev)

        prompt = torch.tensor([list(prompt_ids)] * rows, dtype=torch.long, device=dev)
        logits, h_src, h_tgt, past = self._forward(prompt, None)
        live = torch.ones(rows, dtype=torch.bool, device=dev)
        tokens, records = [], [[] for _ in range(g_count)]
        for t in range(max_new_tokens):
            if t > 0:
                logits, h_src, h_tgt, past = self._forward(tokens[-1].unsqueeze(1), past)
            use_esamp = esamp and t > 0            # the first token comes from prefill: never reweighted
            shift = use_esamp or (sharpen_only and t > 0)
            betas = torch.where(live, step_beta, zero_beta) if shift else zero_beta
            noise = torch.cat([gumbel_noise((n, self.config.candidate_cap), "cpu", g) for g in gens]).to(dev)
            # the control: coefficient 0 (no distiller term), i.e. (1+beta)*l/T on the candidates
            _, out = core.sample(RuleInputs(logits.float(), temps, top_ks, top_ps, min_ps, betas,
                                            coef_control if sharpen_only else None, h_src=h_src, slots=slot_ids,
                                            noise=noise), record=True)
            chosen = out.tokens if forced is None else forced[:, t].to(dev)
            if stop_at_eos and eos_token_id is not None:
                chosen = torch.where(live, chosen, torch.full_like(chosen, eos_token_id))
            losses = {}
            if use_esamp and bool(live.any()):
                core.train(Update(h_src, h_tgt, torch.where(live, slot_ids, no_slot)))
                res = core.last_train_result
                losses = dict(zip(res.slots, res.losses))
            for g in range(g_count):
                sl = slice(g * n, (g + 1) * n)
                loss = [losses[slots[g]]] if slots[g] in losses else []
                records[g].append(StepRecord(t, out.cand_ids[sl], out.cand_logits[sl], out.counts[sl],
                                             out.reweighted[sl], chosen[sl], live[sl].clone(), loss))
            tokens.append(chosen)
            if stop_at_eos and eos_token_id is not None:
                live = live & (chosen != eos_token_id)
                if not bool(live.any()):
                    break
        all_tokens = torch.stack(tokens, dim=1)
        stats = core.stats()
        return [GenerationResult(all_tokens[g * n:(g + 1) * n], records[g], stats,
                                 core.slot_stats(slots[g]) if esamp else None) for g in range(g_count)]
