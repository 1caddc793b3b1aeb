"""slot_optimizer.py against torch: per slot, the clip equals clip_grad_norm_ and Adam equals torch.optim.Adam at
that slot's own step count; SGD is p - lr * g."""
import torch

from sglang_esamp.algo.update.slot_optimizer import AdamCoefficients, OptimizerSpec, clip_coefficients, slot_update


def test_adam_per_slot_matches_torch_adam_with_its_own_step_count():
    opt = OptimizerSpec(lr=1e-2, grad_clip=0.5)
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(2, 4, 3, generator=gen)
    grads = [torch.randn(2, 4, 3, generator=gen) for _ in range(4)]
    # slot 0 steps four times; slot 1 only on the last two (its own bias correction starts later)
    refs = [torch.nn.Parameter(p0[s].clone()) for s in range(2)]
    torch_opts = [torch.optim.Adam([r], lr=opt.lr, betas=opt.betas, eps=opt.eps) for r in refs]
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    steps = torch.zeros(2, dtype=torch.int64)
    for t, g in enumerate(grads):
        upd = torch.tensor([True, t >= 2])
        norms = torch.linalg.vector_norm(g.reshape(2, -1), dim=1)
        for s in range(2):
            if upd[s]:
                refs[s].grad = g[s].clone()
                torch.nn.utils.clip_grad_norm_([refs[s]], opt.grad_clip)
                torch_opts[s].step()
        steps += upd.long()
        new_p, new_m, new_v = slot_update(opt, p, g, clip_coefficients(opt, norms), (m, v),
                                          AdamCoefficients(opt, steps))
        u = upd.view(-1, 1, 1)
        p, m, v = torch.where(u, new_p, p), torch.where(u, new_m, m), torch.where(u, new_v, v)
    for s in range(2):
        torch.testing.assert_close(p[s], refs[s].detach(), rtol=1e-5, atol=1e-6)


def test_sgd_and_no_clip():
    opt = OptimizerSpec(kind="sgd", lr=0.1, grad_clip=0.0)
    p, g = torch.ones(2, 3), torch.full((2, 3), 100.0)
    coef = clip_coefficients(opt, torch.tensor([1e3, 1e3]))
    assert coef.tolist() == [1.0, 1.0]
    (new_p,) = slot_update(opt, p, g, coef)
    torch.testing.assert_close(new_p, torch.full((2, 3), -9.0))
