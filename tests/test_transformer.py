"""The tiny Transformer: shapes, causality, the Pre/Post-LN and QK-LN switches, seeded init."""


import pytest
import torch
from omegaconf import OmegaConf

from warmup_lab.errors import ConfigError
from warmup_lab.models.transformer import Transformer, build_transformer
from warmup_lab.paths import CONF_DIR

V, T = 20, 10
CONF = CONF_DIR


def make(norm="pre", qk=False, seed=0, **kw):
    return Transformer(V, T, d_model=32, n_layers=2, n_heads=4, norm_position=norm, qk_layernorm=qk, seed=seed, **kw)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("qk", [False, True])
def test_shapes_and_causality(norm, qk):
    model = make(norm, qk).eval()
    x = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    logits = model(x)
    assert logits.shape == (3, T, V) and torch.isfinite(logits).all()
    assert model(x[:, :4]).shape == (3, 4, V)  # shorter inputs use the first positions
    j = 6
    x2 = x.clone()
    x2[:, j] = (x2[:, j] + 1) % V
    logits2 = model(x2)
    torch.testing.assert_close(logits2[:, :j], logits[:, :j])  # the past never sees the future
    assert not torch.allclose(logits2[:, j], logits[:, j])


def test_norm_position_and_qk_layernorm_change_the_architecture():
    pre, post, qk = make("pre"), make("post"), make("pre", qk=True)
    assert isinstance(pre.ln_f, torch.nn.LayerNorm) and isinstance(post.ln_f, torch.nn.Identity)
    assert isinstance(qk.blocks[0].attn.q_ln, torch.nn.LayerNorm)
    assert isinstance(pre.blocks[0].attn.q_ln, torch.nn.Identity)
    head_dim, n_layers = 8, 2
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(qk) - n(pre) == n_layers * 2 * 2 * head_dim  # q and k LayerNorm: gain + bias each
    x = torch.randint(0, V, (2, T))
    assert not torch.allclose(pre(x), post(x))


def test_init_is_a_function_of_the_seed():
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if pa.dim() > 1:
            assert not torch.equal(pa, pc), name
    assert abs(a.tok.weight.std().item() - 0.02) < 0.003


def test_math_attention_allows_hessian_vector_products():
    model = make("post", qk=True)
    model.math_attention = True
    x = torch.randint(0, V, (2, T))
    params = [p for p in model.parameters()]
    loss = model(x).logsumexp(-1).mean()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hvp = torch.autograd.grad(sum((g * torch.ones_like(g)).sum() for g in grads), params, allow_unused=True)
    assert any(h is not None and h.abs().sum() > 0 for h in hvp)


def test_build_from_config_and_errors():
    cfg = OmegaConf.load(CONF / "model" / "transformer.yaml")
    model = build_transformer(cfg, vocab_size=V, seq_len=T, seed=0)
    assert model.max_len == T and model.blocks[0].mlp[0].out_features == 4 * cfg.d_model
    with pytest.raises(ConfigError, match="model.norm_position"):
        build_transformer(OmegaConf.merge(cfg, {"norm_position": "middle"}), V, T, 0)
    with pytest.raises(ConfigError, match="model.n_heads"):
        build_transformer(OmegaConf.merge(cfg, {"n_heads": 5}), V, T, 0)
    with pytest.raises(ConfigError, match="model.max_len"):
        build_transformer(OmegaConf.merge(cfg, {"max_len": T - 1}), V, T, 0)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, T + 1, dtype=torch.long))
