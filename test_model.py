"""Tests of model.py: the PolyCom math against independent float64 formulas, memory, MoE paths, configs, compile."""

import glob
import math
import os
import re

import pytest
import torch

import model
import settings
from common import saved_bytes
from model import GPT, MoE, FFN, GPTConfig, PolyNorm, PolyReLU

ACTIVATIONS = model.ACTIVATIONS
PAPER_ACTIVATIONS = ['relu', 'gelu', 'relu2', 'swiglu', 'polyrelu', 'polynorm']  # the paper's dense 1B configs
ROOT = os.path.dirname(os.path.abspath(__file__))


def tiny(**kw):
    # act_impl 'plain': the tests check the math; the compiled path is checked against it once, below, since
    # every compile costs seconds
    base = dict(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, ffn_hidden=48, moe_ffn_hidden=48,
                act_impl='plain')
    return GPTConfig(**{**base, **kw})


# -----------------------------------------------------------------------------
# the activations, against the paper's formulas written out independently in float64

def ref_polynorm(x, a, b, eps=1e-6):
    out = b.clone()
    for i in range(1, len(a) + 1):
        p = x ** i
        out = out + a[i - 1] * p / torch.sqrt((p * p).mean(-1, keepdim=True) + eps)
    return out


def ref_polyrelu(x, a, b):
    return b + sum(a[i - 1] * torch.clamp(x, min=0) ** i for i in range(1, len(a) + 1))


@pytest.mark.parametrize('order', [2, 3, 4])
@pytest.mark.parametrize('cls,ref', [(PolyNorm, ref_polynorm), (PolyReLU, ref_polyrelu)])
@pytest.mark.parametrize('checkpointing', [True, False])
def test_poly_matches_float64_formula(cls, ref, order, checkpointing):
    torch.manual_seed(order)
    act = cls(order=order, checkpointing=checkpointing, impl='plain')
    with torch.no_grad():  # move off the symmetric init so that a swapped weight order would show
        act.weight.copy_(torch.randn(order))
        act.bias.fill_(0.3)
    x = torch.randn(3, 5, 40, requires_grad=True)
    y = act(x)
    g = torch.randn_like(y)
    y.backward(g)

    x64 = x.detach().double().requires_grad_()
    a64 = act.weight.detach().double().requires_grad_()
    b64 = act.bias.detach().double().requires_grad_()
    y64 = ref(x64, a64, b64)
    y64.backward(g.double())
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(act.weight.grad.double(), a64.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(act.bias.grad.double(), b64.grad, rtol=1e-4, atol=1e-4)


def test_poly_init_and_api():
    for cls in (PolyNorm, PolyReLU):
        act = cls(impl='plain')
        assert [n for n, _ in act.named_parameters()] == ['weight', 'bias']
        torch.testing.assert_close(act.weight.data, torch.full((3,), 1 / 3))
        torch.testing.assert_close(act.bias.data, torch.zeros(1))
    x = torch.randn(7, 16)
    # weight[0] goes with x: only the first power left must give norm(x) exactly
    act = PolyNorm(order=3, impl='plain')
    with torch.no_grad():
        act.weight.copy_(torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(act(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


@pytest.mark.parametrize('cls', [PolyNorm, PolyReLU])
def test_checkpointing_gives_identical_results(cls):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 64)
    results = []
    for ckpt in (True, False):
        act = cls(checkpointing=ckpt, impl='plain')
        xi = x.clone().requires_grad_()
        y = act(xi)
        (y * torch.arange(64)).sum().backward()
        results.append((y, xi.grad, act.weight.grad, act.bias.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize('baseline,forms', [('relu2', ['polynorm', 'polyrelu']),
                                             ('swiglu', ['polynorm_glu', 'polyrelu_glu'])])
def test_checkpointed_polycom_saves_no_more_than_its_baseline(baseline, forms):
    x = torch.randn(4, 32, 64, requires_grad=True)
    sizes = {}
    for act in [baseline] + forms:
        for ckpt in (True, False):
            cfg = GPTConfig(n_embd=64, n_head=4, ffn_hidden=256, activation=act, act_checkpointing=ckpt,
                            act_impl='plain')
            ffn = FFN(cfg)
            sizes[act, ckpt] = saved_bytes(ffn, [x], ffn.parameters())
    hidden_bytes = 4 * 32 * ffn.up.out_features * 4  # one float32 (B, T, hidden) tensor
    for act in forms:
        assert sizes[act, True] <= sizes[baseline, True], sizes
        # without recomputation the powers (and norms) stay alive: at least two more hidden-sized tensors
        assert sizes[act, False] >= sizes[act, True] + 2 * hidden_bytes, sizes


@pytest.mark.parametrize('cls', [PolyNorm, PolyReLU])
def test_bf16_large_inputs_are_computed_in_float32(cls):
    torch.manual_seed(0)
    x = (torch.rand(4, 256) * 2 - 1) * 1e3  # |x|^6 up to 1e18: overflows a bf16 mean of squares
    x[:, 0] = 1e3
    act = cls(impl='plain')
    xb = x.bfloat16()
    y = act(xb)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    with torch.no_grad():
        ref = (ref_polynorm if cls is PolyNorm else ref_polyrelu)(
            xb.double(), act.weight.double(), act.bias.double())
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item() * 1e-3 + 1e-2)


def test_polynorm_gradcheck():
    act = PolyNorm(order=3, checkpointing=False).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    w = act.weight.detach().clone().requires_grad_()
    b = act.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: model.poly_norm(x, w, b, 1e-6), (x, w, b))


@pytest.mark.parametrize('activation,ref', [('polynorm_glu', ref_polynorm), ('polyrelu_glu', ref_polyrelu)])
@pytest.mark.parametrize('checkpointing', [True, False])
def test_gated_polycom_matches_float64_formula(activation, ref, checkpointing):
    """down(Poly(gate(x)) * up(x)), forward and every gradient, against the formula in float64."""
    torch.manual_seed(0)
    ffn = FFN(tiny(activation=activation, act_checkpointing=checkpointing))
    with torch.no_grad():
        ffn.act.weight.copy_(torch.randn(3))
        ffn.act.bias.fill_(0.3)
    x = torch.randn(3, 5, 32, requires_grad=True)
    y, _ = ffn(x)
    g = torch.randn_like(y)
    y.backward(g)

    leaves = [t.detach().double().requires_grad_() for t in (x, ffn.gate.weight, ffn.up.weight, ffn.down.weight,
                                                              ffn.act.weight, ffn.act.bias)]
    x64, wg, wu, wd, a, b = leaves
    y64 = (ref(x64 @ wg.t(), a, b) * (x64 @ wu.t())) @ wd.t()
    y64.backward(g.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    for t, t64 in zip([x, ffn.gate.weight, ffn.up.weight, ffn.down.weight, ffn.act.weight, ffn.act.bias], leaves):
        torch.testing.assert_close(t.grad.double(), t64.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('activation', ['polynorm', 'polyrelu', 'polynorm_glu', 'polyrelu_glu'])
def test_compiled_polycom_matches_plain(activation):
    """act_impl='compiled' (inductor's compile of the plain function, under checkpointing as the model runs
    it) gives the plain code's output and gradients for x, the FFN weights and the coefficients."""
    results = []
    for impl in ('plain', 'compiled'):
        torch.manual_seed(0)
        ffn = FFN(tiny(activation=activation, act_impl=impl))
        with torch.no_grad():
            ffn.act.weight.copy_(torch.randn(3))
            ffn.act.bias.fill_(0.3)
        for rows in (5, 7):  # a second shape must not need a second compile to be right
            x = torch.randn(2, rows, 32, generator=torch.Generator().manual_seed(rows), requires_grad=True)
            y, _ = ffn(x)
            y.backward(torch.linspace(-1, 1, 32).expand_as(y))
            results.append([y, x.grad] + [p.grad.clone() for p in ffn.parameters()])
            ffn.zero_grad()
    for plain, compiled in zip(results[:2], results[2:]):
        for a, b in zip(plain, compiled):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_auto_impl_picks_compiled_on_the_cpu_only_with_a_compiler(monkeypatch):
    x, w = torch.zeros(4, 8), torch.ones(3)
    model.have_cpu_compiler.cache_clear()
    monkeypatch.setattr(model.shutil, 'which', lambda name: None)  # no g++ on this machine
    try:
        assert model.polycom_impl('auto', x, w) == 'plain'
        act = PolyNorm()
        xr = torch.randn(4, 8, requires_grad=True)
        act(xr).sum().backward()  # runs, plainly, without trying to compile
        torch.testing.assert_close(act(xr), model.poly_norm(xr, act.weight, act.bias, act.eps))
        with pytest.raises(RuntimeError, match='C\\+\\+ compiler'):
            model.polycom_impl('compiled', x, w)
        model.have_cpu_compiler.cache_clear()
        monkeypatch.setattr(model.shutil, 'which', lambda name: '/usr/bin/' + name)
        assert model.polycom_impl('auto', x, w) == 'compiled'
        assert model.polycom_impl('plain', x, w) == 'plain'
    finally:
        model.have_cpu_compiler.cache_clear()


@pytest.mark.parametrize('activation', ['polynorm', 'polyrelu_glu'])
def test_triton_impl_runs_the_kernels_in_the_model(activation, monkeypatch):
    # on the CPU the kernels run in Triton's interpreter (conftest.py): the model's dispatch to them is tested here,
    # not only the kernels; calls are counted, since the plain path would give the same numbers
    if model.poly_norm_fused is None or (not torch.cuda.is_available() and os.environ.get('TRITON_INTERPRET') != '1'):
        pytest.skip("needs Triton, and on the CPU its interpreter (TRITON_INTERPRET=1, set by conftest.py)")
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    calls = []
    for name in ('poly_norm_fused', 'poly_relu_fused'):
        fused = getattr(model, name)
        monkeypatch.setattr(model, name, lambda *args, name=name, fused=fused: (calls.append(name), fused(*args))[1])
    torch.manual_seed(0)
    idx = torch.randint(0, 64, (2, 16), device=device)
    losses, grads = [], []
    for impl in ('plain', 'triton'):
        torch.manual_seed(0)
        m = GPT(tiny(activation=activation, act_impl=impl)).to(device)
        for b in m.blocks:  # coefficients away from their equal initial values, so that a swap would show
            torch.nn.init.normal_(b.ffn.act.weight, mean=0.3, std=0.2)
            torch.nn.init.normal_(b.ffn.act.bias, std=0.1)
        loss = m(idx, idx)[1]['loss']
        loss.backward()
        losses.append(loss)
        grads.append({name: p.grad for name, p in m.named_parameters()})
    assert calls == ['poly_' + activation[4:8] + '_fused'] * 2  # once per layer, the kernel of the activation
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-5)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=0, atol=1e-5 * (1 + g.abs().max().item()), msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the Triton kernels' order limits")
@pytest.mark.parametrize('order', [1, 5])
def test_orders_outside_the_kernels_run_plain_on_cuda(order):
    act = PolyNorm(order=order).cuda()
    x = torch.randn(4, 64, device='cuda', requires_grad=True)
    assert model.polycom_impl('auto', x, act.weight) == 'plain'
    act(x).sum().backward()
    torch.testing.assert_close(act(x), model.poly_norm(x, act.weight, act.bias, act.eps))


# -----------------------------------------------------------------------------
# the FFN and the dense model

def test_ffn_parameter_matching():
    counts = {}
    for act in ACTIVATIONS:
        ffn = FFN(GPTConfig(n_embd=2048, n_head=16, ffn_hidden=8256, activation=act))
        counts[act] = sum(p.numel() for n, p in ffn.named_parameters() if not n.startswith('act.'))
    assert model.swiglu_width(8256) == 5504
    assert len(set(counts.values())) == 1, counts


def test_moe_parameter_matching():
    counts = {}
    for act in ACTIVATIONS:
        moe = MoE(tiny(n_embd=64, n_head=4, moe_ffn_hidden=96, n_experts=4, top_k=2, activation=act))
        counts[act] = sum(p.numel() for n, p in moe.named_parameters() if not n.startswith('act.'))
    assert len(set(counts.values())) == 1, counts


def test_loss_at_init_is_about_ln_vocab():
    torch.manual_seed(0)
    m = GPT(tiny(vocab_size=512, n_layer=4))
    idx = torch.randint(0, 512, (4, 16))
    loss = m(idx, idx)[1]['loss']
    assert abs(loss.item() - math.log(512)) < 0.1


@pytest.mark.parametrize('activation,n_experts', [(a, 0) for a in ACTIVATIONS] + [('polynorm', 4), ('swiglu', 4)])
def test_tiny_model_overfits_one_batch(activation, n_experts):
    torch.manual_seed(0)
    m = GPT(tiny(activation=activation, n_experts=n_experts, top_k=2))
    opt = torch.optim.AdamW(m.optim_groups(0.0), lr=1e-2)
    idx = torch.randint(0, 64, (4, 17))
    x, y = idx[:, :-1], idx[:, 1:]
    for _ in range(60):
        loss = m(x, y)[1]['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, losses = m(x, y)
    assert losses['lm'].item() < 0.3


def test_optim_groups_split():
    m = GPT(tiny(activation='polynorm'))
    decay, no_decay = m.optim_groups(0.1)
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    ids = lambda ps: {id(p) for p in ps}
    assert id(m.wte.weight) in ids(decay['params']) and id(m.blocks[0].ffn.up.weight) in ids(decay['params'])
    assert id(m.blocks[0].ffn.act.weight) in ids(no_decay['params'])
    assert id(m.blocks[0].ffn.act.bias) in ids(no_decay['params'])
    assert id(m.norm_f.weight) in ids(no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(m.parameters()))


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=8, n_embd=256, n_head=4, ffn_hidden=1024, init_std=0.02, vocab_size=256))
    assert abs(m.blocks[0].ffn.up.weight.std().item() - 0.02) < 1e-3
    assert abs(m.blocks[0].ffn.down.weight.std().item() - 0.02 / 4) < 5e-4  # 1 / sqrt(2 * 8)
    assert abs(m.blocks[0].attn.proj.weight.std().item() - 0.02 / 4) < 5e-4


@pytest.mark.parametrize('kw', [dict(activation='polynorm'),
                                dict(activation='polynorm_glu', n_experts=4, top_k=2, poly_per_expert=True,
                                     qk_norm=True),
                                dict(activation='polyrelu', n_experts=4, top_k=2, tie_embeddings=True)],
                         ids=['dense', 'moe-per-expert', 'moe-tied'])
def test_meta_build_then_init_weights_equals_a_direct_build(kw):
    """FSDP's way: shapes on the meta device, to_empty() where the model runs, then init_weights()."""
    torch.manual_seed(0)
    direct = GPT(tiny(**kw))
    torch.manual_seed(0)
    with torch.device('meta'):
        late = GPT(tiny(**kw))
    late.to_empty(device='cpu')
    late.init_weights()
    a, b = dict(direct.named_parameters()), dict(late.named_parameters())
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for (name, x), (_, y) in zip(direct.named_buffers(), late.named_buffers()):
        assert torch.equal(x, y), name  # the RoPE tables
    if direct.config.tie_embeddings:
        assert late.lm_head.weight is late.wte.weight
    # and init_weights really sets each value: garbage in every tensor first, the same model after
    with torch.no_grad():
        for t in [*late.parameters(), *late.buffers()]:
            t.fill_(float('nan'))
    torch.manual_seed(0)
    late.init_weights()
    for name, p in late.named_parameters():
        assert torch.equal(p, a[name]), name
    assert all(torch.isfinite(t).all() for t in late.buffers())


def test_new_cache_is_in_the_dtype_attention_runs_in():
    m = GPT(tiny()).eval()
    assert m.new_cache(2)[0]['k'].dtype == torch.float32
    assert m.new_cache(2, dtype=torch.float16)[0]['v'].dtype == torch.float16
    prompt = torch.randint(0, 64, (2, 5))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        cache = m.new_cache(2)
        assert cache[0]['k'].dtype == torch.bfloat16
        logits, _ = m(prompt, cache=cache)
        m(prompt[:, -1:], cache=cache, pos=5)
        assert cache[0]['k'].dtype == torch.bfloat16 and cache[0]['k'][:, :, :6].abs().sum() > 0
        assert m.generate(prompt, 4, temperature=0).shape == (2, 9)


def test_tied_embeddings():
    m = GPT(tiny(tie_embeddings=True))
    assert m.lm_head.weight is m.wte.weight
    assert m.num_params()['total'] == GPT(tiny()).num_params()['total'] - 64 * 32


@pytest.mark.parametrize('n_experts', [0, 4])
def test_kv_cache_generation_matches_recompute(n_experts):
    torch.manual_seed(0)
    m = GPT(tiny(n_experts=n_experts, top_k=2, qk_norm=True)).eval()
    prompt = torch.randint(0, 64, (2, 5))
    with_cache = m.generate(prompt, 20, temperature=0)  # runs past block_size=16: the window slides
    without = m.generate(prompt, 20, temperature=0, use_cache=False)
    assert torch.equal(with_cache, without)
    # and the cached logits equal the full forward's at every position
    cache = m.new_cache(2)
    seq = with_cache[:, :12]
    step_logits = [m(seq[:, :4], cache=cache)[0]] + [m(seq[:, t:t + 1], cache=cache, pos=t)[0] for t in range(4, 12)]
    full = torch.stack([m(seq[:, :t + 1])[0][:, -1] for t in range(3, 12)], dim=1)
    torch.testing.assert_close(torch.cat(step_logits, dim=1), full, rtol=1e-4, atol=1e-5)


# -----------------------------------------------------------------------------
# the MoE layer

def moe_per_token(moe, x):
    """Each token on its own, in float64: softmax, top-k, then sum_j p_j * FFN_{e_j}(x)."""
    x = x.double().view(-1, x.size(-1))

    def act(u, e):  # one hidden vector as a row (PolyNorm's RMS is over it), with expert e's coefficients
        act64 = moe.act.double()
        return (act64(u[None], expert=e) if moe.per_expert else act64(u[None]))[0]

    probs = (x @ moe.router.weight.double().t()).softmax(-1)
    out = torch.zeros_like(x)
    for t in range(x.size(0)):
        top = sorted(range(moe.n_experts), key=lambda e: -probs[t, e].item())[:moe.top_k]
        for e in top:
            h = x[t] @ moe.w_up[e].double()
            if moe.w_gate is not None:
                h = act(x[t] @ moe.w_gate[e].double(), e) * h
            else:
                h = act(h, e)
            out[t] += probs[t, e] * (h @ moe.w_down[e].double())
    return out


@pytest.mark.parametrize('activation,per_expert', [('polynorm', False), ('swiglu', False), ('relu2', False),
                                                   ('polynorm_glu', False), ('polynorm', True), ('polyrelu_glu', True)])
def test_moe_paths_agree_with_each_other_and_per_token(activation, per_expert):
    torch.manual_seed(0)
    cfg = tiny(n_experts=8, top_k=2, activation=activation, poly_per_expert=per_expert)
    moe = MoE(cfg)
    for p in moe.parameters():  # per-expert PolyCom coefficients too: every expert different
        torch.nn.init.normal_(p, std=0.3)
    with torch.no_grad():  # experts 6 and 7 can never win the routing: they get no token
        moe.router.weight[6:] = -100.0 * moe.router.weight[:2].abs().sum(0)
    x = torch.randn(2, 10, 32).abs()  # positive inputs so the -100 router rows lose for sure

    outs, grads = {}, {}
    for impl in ('loop', 'grouped'):
        moe.impl = impl
        moe.zero_grad()
        xi = x.clone().requires_grad_()
        y, aux = moe(xi)
        (y * torch.linspace(-1, 1, 32)).sum().backward()  # a non-uniform upstream gradient
        outs[impl] = y
        grads[impl] = [xi.grad] + [p.grad for p in moe.parameters()]
    assert moe.w_up.grad[6:].abs().sum() == 0  # experts without tokens get zero gradient, not NaN

    torch.testing.assert_close(outs['loop'], outs['grouped'], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads['loop'], grads['grouped']):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs['grouped'].double().view(-1, 32), moe_per_token(moe, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('impl', ['loop', 'grouped'])
def test_per_expert_coefficients_reach_exactly_their_experts_tokens(impl):
    torch.manual_seed(0)
    moe = MoE(tiny(n_experts=4, top_k=2, activation='polynorm_glu', poly_per_expert=True, moe_impl=impl))
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    assert moe.act.weight.shape == (4, 3) and moe.act.bias.shape == (4, 1)
    x = torch.randn(1, 24, 32)
    experts = moe.router(x.view(24, 32)).topk(2, dim=-1).indices  # (24, 2) what the layer routes
    with torch.no_grad():
        before = moe(x)[0]
        for e in range(4):
            routed = (experts == e).any(dim=-1)
            assert 0 < routed.sum() < 24  # some tokens go to e, some do not: the check below can fail
            saved = moe.act.weight[e].clone()
            moe.act.weight[e] += 0.5
            changed = (moe(x)[0] != before).any(dim=-1).view(24)
            moe.act.weight[e] = saved
            assert torch.equal(changed, routed), (e, changed, routed)


def test_per_expert_coefficients_start_like_the_shared_ones_and_do_not_decay():
    m = GPT(tiny(n_experts=4, top_k=2, poly_per_expert=True))
    act = m.blocks[0].ffn.act
    torch.testing.assert_close(act.weight.data, torch.full((4, 3), 1 / 3))
    torch.testing.assert_close(act.bias.data, torch.zeros(4, 1))
    decay, no_decay = m.optim_groups(0.1)
    assert id(act.weight) in {id(p) for p in no_decay['params']}
    assert id(act.weight) not in {id(p) for p in decay['params']}
    assert id(m.blocks[0].ffn.w_up) in {id(p) for p in decay['params']}
    n = m.num_params()
    assert n['polycom'] == 2 * 4 * 4  # 2 layers x 4 experts x (r + 1)


@pytest.mark.parametrize('activation', ['polynorm', 'swiglu'])
def test_moe_paths_agree_in_bf16(activation):
    """Under bf16 autocast the grouped path gathers and combines in bf16; it must stay within bf16's rounding
    of the loop, which accumulates in float32."""
    torch.manual_seed(0)
    moe = MoE(tiny(n_experts=4, top_k=2, activation=activation))
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 12, 32)
    outs, grads = {}, {}
    for impl in ('loop', 'grouped'):
        moe.impl = impl
        moe.zero_grad()
        xi = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y, _ = moe(xi)
        (y.float() * torch.linspace(-1, 1, 32)).sum().backward()
        outs[impl], grads[impl] = y.float(), [xi.grad] + [p.grad for p in moe.parameters()]
    torch.testing.assert_close(outs['grouped'], outs['loop'], rtol=2e-2, atol=2e-2)
    for a, b in zip(grads['grouped'], grads['loop']):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2 * b.abs().max().item())


def test_moe_auto_picks_grouped_where_it_applies():
    assert MoE(tiny(n_experts=4, top_k=2)).use_grouped(torch.zeros(1))
    assert not MoE(tiny(n_experts=4, top_k=2, n_embd=30, n_head=3, moe_ffn_hidden=45)).use_grouped(torch.zeros(1))


def test_float64_moe_auto_takes_the_loop():
    # torch._grouped_mm refuses float64 ("Expected mat_a to be Float32, BFloat16 or Float16")
    torch.manual_seed(0)
    moe = MoE(tiny(n_experts=4, top_k=2)).double()
    for p in moe.parameters():  # MoE leaves its weights to GPT's init
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 8, moe.w_up.shape[1], dtype=torch.float64)
    assert not moe.use_grouped(x)
    y, _ = moe(x)
    assert y.dtype == torch.float64 and torch.isfinite(y).all()


def test_compiled_float32_moe_falls_back_to_the_loop():
    # compiled torch._grouped_mm accepts only bf16; in float32, 'auto' must pick the loop (graph breaks allowed)
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = GPT(tiny(n_experts=4, top_k=2))
    idx = torch.randint(0, 64, (2, 16))
    eager = m(idx, idx)[1]['loss']
    compiled = torch.compile(m, backend='aot_eager')(idx, idx)[1]['loss']
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_moe_odd_shapes_use_the_loop():
    # widths that are not multiples of 8: torch._grouped_mm cannot take them, 'auto' must take the loop
    torch.manual_seed(0)
    m = GPT(tiny(n_experts=3, top_k=2, n_embd=30, n_head=3, moe_ffn_hidden=45))
    moe = m.blocks[0].ffn
    x = torch.randn(2, 16, 30)
    assert not moe.use_grouped(x)
    torch.testing.assert_close(moe(x)[0].double().view(-1, 30), moe_per_token(moe, x), rtol=1e-4, atol=1e-5)
    idx = torch.randint(0, 64, (2, 16))
    loss = m(idx, idx)[1]['loss']
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_aux_losses_match_hand_computation():
    cfg = tiny(n_embd=4, n_head=1, n_experts=4, top_k=2, moe_ffn_hidden=8)
    moe = MoE(cfg)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0],    # token 0 -> experts 0, 1
                           [0.0, 3.0, 1.0, 0.0],     # token 1 -> experts 1, 2
                           [1.0, 0.0, 0.0, 2.0]])    # token 2 -> experts 3, 0
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[:, :3] = logits.t()  # x_t = one-hot e_t, so router(x_t) = logits[t]
    x = torch.eye(4)[:3].view(1, 3, 4)
    _, aux = moe(x)

    probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]
    f = [2 / 6, 2 / 6, 1 / 6, 1 / 6]  # 6 assignments: expert 0 twice, 1 twice, 2 once, 3 once
    P = [sum(p[e] for p in probs) / 3 for e in range(4)]
    lb = 4 * sum(fe * pe for fe, pe in zip(f, P))
    z = sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits.tolist()) / 3
    assert aux['lb'].item() == pytest.approx(lb, rel=1e-5)
    assert aux['z'].item() == pytest.approx(z, rel=1e-5)


def test_aux_losses_are_averaged_and_weighted_in_the_loss():
    torch.manual_seed(0)
    m = GPT(tiny(n_experts=4, top_k=2, lb_weight=0.5, z_weight=0.25))
    idx = torch.randint(0, 64, (2, 16))
    raw = []
    hooks = [b.ffn.register_forward_hook(lambda mod, i, o: raw.append(o[1])) for b in m.blocks]
    _, parts = m(idx, idx)
    loss = parts['loss']
    for h in hooks:
        h.remove()
    assert parts['lb'].item() == pytest.approx(0.5 * (raw[0]['lb'] + raw[1]['lb']).item() / 2, rel=1e-5)
    assert parts['z'].item() == pytest.approx(0.25 * (raw[0]['z'] + raw[1]['z']).item() / 2, rel=1e-5)
    assert loss.item() == pytest.approx((parts['lm'] + parts['lb'] + parts['z']).item(), rel=1e-6)


# -----------------------------------------------------------------------------
# the configs: every file loads, and the paper's models have the paper's sizes

def expected_non_embedding(cfg):
    """Closed form: attention 4C^2, FFN 2CH (SwiGLU 3C(2H/3)), MoE E experts + router, norms, PolyCom scalars."""
    C, L = cfg.n_embd, cfg.n_layer
    gated = cfg.activation in model.GATED
    width = lambda h: model.swiglu_width(h) if gated else h
    ffn = (3 if gated else 2) * C * width(cfg.moe_ffn_hidden if cfg.n_experts else cfg.ffn_hidden)
    if cfg.n_experts:
        ffn = cfg.n_experts * ffn + C * cfg.n_experts
    poly = ((cfg.poly_order + 1 if cfg.activation.startswith('poly') else 0)
            * (cfg.n_experts if cfg.poly_per_expert else 1))
    norms = 2 * C + (2 * C if cfg.qk_norm else 0)
    return L * (4 * C * C + ffn + poly + norms) + C


PAPER = {  # non-embedding (or total / active for MoE) parameters the paper's configs must have
    'dense_1b_': ('non_embedding', 1.214e9, 0.005),
    'moe_1b7b_': [('total', 6.92e9, 0.01), ('active', 1.28e9, 0.01)],
    'dense_110m': ('non_embedding', 85.0e6, 0.01),  # 110 M with the paper's 32000-token embedding
    'dense_226m': ('non_embedding', 193.0e6, 0.01),
    'dense_502m': ('non_embedding', 453.0e6, 0.01),
}


def config_of(path, **overrides):
    """The GPTConfig a config file means (settings.resolve), with gpt2's vocabulary where it leaves it to the data."""
    keys = {**settings.model_keys(settings.resolve([path])[0]), **overrides}
    return GPTConfig(**{**keys, 'vocab_size': keys['vocab_size'] or GPTConfig.vocab_size})


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(ROOT, 'config', '*.py'))), ids=os.path.basename)
def test_config_parameter_counts(path):
    cfg = config_of(path)
    with torch.device('meta'):
        n = GPT(cfg).num_params()
    assert n['non_embedding'] == expected_non_embedding(cfg)
    name = os.path.basename(path)
    for prefix, targets in PAPER.items():
        if name.startswith(prefix):
            for key, value, tol in targets if isinstance(targets, list) else [targets]:
                assert abs(n[key] - value) / value < tol, (key, n[key], value)


def test_per_expert_variant_of_the_gated_moe_config():
    cfg = config_of(os.path.join(ROOT, 'config', 'moe_1b7b_polynorm_glu.py'), poly_per_expert=True)
    with torch.device('meta'):
        n = GPT(cfg).num_params()
    assert n['non_embedding'] == expected_non_embedding(cfg)
    assert n['polycom'] == 16 * 64 * 4
    assert 'per expert' in model.summary(cfg)


def test_paper_config_files_exist():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, 'config', '*.py'))}
    for act in PAPER_ACTIVATIONS:
        assert f'dense_1b_{act}.py' in names
    for act in ['polynorm', 'polyrelu', 'swiglu']:
        assert f'moe_1b7b_{act}.py' in names
    # the gated form, as released models use it
    assert {'dense_1b_polynorm_glu.py', 'moe_1b7b_polynorm_glu.py'} <= names
    assert config_of(os.path.join(ROOT, 'config', 'dense_1b_swiglu.py')).activation == 'swiglu'


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match='activation'):
        GPTConfig(activation='tanh')
    with pytest.raises(ValueError, match='n_head'):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match='top_k'):
        GPTConfig(n_experts=4, top_k=5)
    with pytest.raises(ValueError, match='poly_order'):
        GPTConfig(poly_order=0)
    with pytest.raises(ValueError, match='poly_order 2 to 4'):
        GPTConfig(poly_order=5, act_impl='triton')
    with pytest.raises(ValueError, match='act_impl'):
        GPTConfig(act_impl='fused')
    with pytest.raises(ValueError, match='poly_per_expert'):
        GPTConfig(poly_per_expert=True)  # a dense model has no experts
    with pytest.raises(ValueError, match='poly_per_expert'):
        GPTConfig(n_experts=4, top_k=2, activation='swiglu', poly_per_expert=True)


def test_flops_per_token_is_the_hand_count():
    # 6 per active non-embedding parameter (forward + backward; the output head counts, the input lookup not),
    # plus the attention scores and their weighted sum: 12 * n_layer * n_embd * seq_len
    C, H, V, L, T = 32, 48, 64, 2, 16
    per_layer = 4 * C * C + 2 * C * H + 2 * C + 4  # attention, the FFN's up and down, 2 norms, PolyNorm's a_0..a_3
    hand = 6 * (L * per_layer + C + V * C) + 12 * L * C * T  # + final norm and output head
    assert hand == 111_600
    for tie in (False, True):  # tied, the one matrix is still one matmul at the output
        assert GPT(tiny(tie_embeddings=tie)).flops_per_token() == hand
    assert GPT(tiny()).flops_per_token(seq_len=8) == hand - 12 * L * C * 8


def test_moe_flops_per_token_and_the_docs_figure():
    with torch.device('meta'):
        m = GPT(config_of(os.path.join(ROOT, 'config', 'moe_1b7b_polynorm.py')))
    C, V, L, T, E, k, H = 2048, 50304, 16, 4096, 64, 8, 1536
    # per layer: attention, q/k/attention/FFN norms, the router, k of the E experts (up and down), one PolyNorm
    per_layer = 4 * C * C + 4 * C + C * E + k * 2 * C * H + 4
    hand = 6 * (L * per_layer + C + V * C) + 12 * L * C * T
    assert m.flops_per_token() == hand
    with open(os.path.join(ROOT, 'docs', 'model.md'), encoding='utf-8') as f:
        quoted = re.search(r"training FLOPs per token: +([\d.]+) GFLOP", f.read())
    assert quoted.group(1) == f"{hand / 1e9:.3f}" == '8.685'


def test_summary_runs_on_meta_device():
    text = model.summary(config_of(os.path.join(ROOT, 'config', 'moe_1b7b_polynorm.py')))
    assert '6.919' in text and '1.282' in text and 'FLOPs' in text


# -----------------------------------------------------------------------------
# torch.compile: one graph, same numbers

# the MoE model goes through inductor (its grouped GEMM is the unusual lowering); the dense one through
# aot_eager, which checks the same single graph and autograd in a few seconds instead of half a minute
# tolerance: aot_eager runs the same ops as eager (equal to float32 rounding); inductor fuses the bf16 ops and
# rounds in other places (the loss moves about 2e-5, a gradient up to about 2% of its parameter's largest)
@pytest.mark.parametrize('n_experts,backend,activation,per_expert,tol', [
    (0, 'aot_eager', 'polynorm', False, 1e-5), (4, 'inductor', 'polynorm', False, 5e-2),
    (4, 'aot_eager', 'polynorm_glu', True, 1e-5)])
def test_compile_fullgraph_matches_eager(n_experts, backend, activation, per_expert, tol):
    torch._dynamo.reset()
    torch.manual_seed(0)
    # the activation's own fast paths must step aside inside a compiled model (no nested compile, no break)
    m = GPT(tiny(n_experts=n_experts, top_k=2, activation=activation, qk_norm=bool(n_experts),
                 act_impl='compiled' if n_experts else 'auto', poly_per_expert=per_expert))
    if per_expert:  # distinct coefficients per expert, so that mixing them up would show
        for b in m.blocks:
            torch.nn.init.normal_(b.ffn.act.weight, mean=0.3, std=0.2)
    idx = torch.randint(0, 64, (2, 16))
    # bf16 autocast: on the CPU, torch._grouped_mm compiles only for bf16 inputs
    with torch.autocast('cpu', dtype=torch.bfloat16):
        eager = m(idx, idx)[1]['loss']
        eager.backward()
        eager_grads = {name: p.grad.clone() for name, p in m.named_parameters()}
        m.zero_grad()
        compiled = torch.compile(m, fullgraph=True, backend=backend)  # fullgraph: any graph break raises
        loss = compiled(idx, idx)[1]['loss']
        loss.backward()
    torch.testing.assert_close(loss, eager, rtol=0, atol=tol / 100)
    for name, p in m.named_parameters():  # each gradient to tol of its own scale, the PolyCom coefficients' too
        g = eager_grads[name]
        torch.testing.assert_close(p.grad, g, rtol=0, atol=tol * g.abs().max().item(), msg=name)
    for b in m.blocks:  # every coefficient learns: each expert's set, when it has its own
        assert (b.ffn.act.weight.grad != 0).all() and (b.ffn.act.bias.grad != 0).all()
