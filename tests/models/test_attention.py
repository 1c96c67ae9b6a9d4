"""Both point transformers attend through `F.scaled_dot_product_attention` (one fused kernel
where the device has one) and give what the explicit softmax(q kᵀ / √d) v gives."""

import math

import pytest
import torch
from torch.nn import functional as F

from cg3d.models.encoders.pointbert import Attention
from cg3d.models.encoders.pointtransformer import PointTransformer


def explicit_attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads):
    """Multi-head self-attention written out: no fused kernel, every product spelled."""
    batch, tokens, width = x.shape
    d = width // heads
    qkv = x @ qkv_weight.T + (qkv_bias if qkv_bias is not None else 0)
    q, k, v = qkv.split(width, dim=-1)
    out = torch.zeros_like(x)
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(d)
        weights = torch.exp(scores - scores.amax(-1, keepdim=True))
        weights = weights / weights.sum(-1, keepdim=True)
        out[..., part] = weights @ v[..., part]
    return out @ proj_weight.T + proj_bias


def test_pointbert_attention_is_the_explicit_softmax_attention(monkeypatch):
    torch.manual_seed(0)
    attention = Attention(48, 6)
    x = torch.randn(3, 17, 48)
    calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused(*a, **k)
    )
    got = attention(x)
    expected = explicit_attention(
        x, attention.qkv.weight, None, attention.proj.weight, attention.proj.bias, 6
    )
    assert calls == [1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_pointtransformer_blocks_attend_as_the_explicit_softmax_attention(training):
    """nn.TransformerEncoderLayer (need_weights=False: torch's SDPA path; in eval its fused
    fast path), checked block by block against a pre-norm block written out."""
    torch.manual_seed(1)
    encoder = PointTransformer(out_dim=16, groups=8, group_size=8, width=32, depth=2, heads=4)
    encoder.train(training)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        got = encoder.blocks(x)
        expected = x
        for layer in encoder.blocks.layers:
            attn = layer.self_attn
            h = F.layer_norm(expected, (32,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
            expected = expected + explicit_attention(
                h,
                attn.in_proj_weight,
                attn.in_proj_bias,
                attn.out_proj.weight,
                attn.out_proj.bias,
                4,
            )
            h = F.layer_norm(expected, (32,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
            expected = expected + layer.linear2(F.gelu(layer.linear1(h)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
