import torch

from sglang_esamp.runtime.digest import tensor_digest


def test_digest_tells_values_dtypes_and_shapes_apart():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert tensor_digest(t) == tensor_digest(t.clone())
    assert tensor_digest(t) != tensor_digest(t.bfloat16())
    assert tensor_digest(t) != tensor_digest(t.reshape(4, 3))
    u = t.clone()
    u[2, 3] += 1
    assert tensor_digest(t) != tensor_digest(u)
    assert tensor_digest(t.t()) == tensor_digest(t.t().contiguous())
