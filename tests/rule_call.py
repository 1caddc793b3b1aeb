"""The rule called with one keyword per knob (what the rule tests read best in), through its public form:
``esamp_sample(RuleInputs, h_hat, LMHead, RuleOptions)``."""
from sglang_esamp.algo.rule.inputs import LMHead, RuleInputs, RuleOptions
from sglang_esamp.algo.rule.sampling import esamp_sample


def rule(logits, temperatures, top_ks, top_ps, min_ps, betas, h_hat, lm_head_weight, lm_head_bias=None, *,
         candidate_cap=1024, greedy_mode="skip", temperature_form="tllm", distiller_coef=None, noise=None,
         generator=None, seeded=None, vocab_shard=None, phase_s=None, width=None, divisor=None):
    inputs = RuleInputs(logits, temperatures, top_ks, top_ps, min_ps, betas, distiller_coef, divisor, noise=noise,
                        seeded=seeded, width=width)
    return esamp_sample(inputs, h_hat, LMHead(lm_head_weight, lm_head_bias, vocab_shard),
                        RuleOptions(candidate_cap, greedy_mode, temperature_form), generator=generator,
                        phase_s=phase_s)
