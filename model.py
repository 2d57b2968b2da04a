"""
A LLaMA-style GPT with the PolyCom activations of "Polynomial Composition Activations: Unleashing the
Dynamics of Large Language Models" (Zhuo et al., ICLR 2025), dense or with a Mixture-of-Experts FFN.

Read it top to bottom:
  1. GPTConfig                      every knob of the model
  2. PolyNorm, PolyReLU             the paper's contribution, the baselines, and how PolyCom runs fast
  3. FFN                            up -> activation -> down, parameter-matched across activations
  4. MoE                            OLMoE-style dropless top-k routing, a readable loop and a grouped-GEMM path
  5. Attention, Block, GPT          the transformer around them

`python model.py config/<name>.py` prints a model's size and FLOPs without allocating it.
"""

import math
import shutil
import sys
from dataclasses import dataclass
from functools import cache, partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

try:  # optional fused Triton kernels (polykernels.py) for CUDA; the code below stays the definition
    from polykernels import poly_norm_fused, poly_relu_fused
except ImportError:
    poly_norm_fused = poly_relu_fused = None

# -----------------------------------------------------------------------------
# 1. Config


ACTIVATIONS = ('relu', 'gelu', 'relu2', 'swiglu', 'polyrelu', 'polynorm', 'polyrelu_glu', 'polynorm_glu')
GATED = ('swiglu', 'polyrelu_glu', 'polynorm_glu')  # down(act(gate(x)) * up(x)) at 2/3 of the width
ACT_IMPLS = ('auto', 'plain', 'compiled', 'triton')  # how PolyCom runs; see polycom_impl
# how the model runs, not what it computes: a resumed run may change these
RUNTIME_KEYS = ('act_checkpointing', 'act_impl', 'moe_impl')


@dataclass
class GPTConfig:
    block_size: int = 256  # context length
    vocab_size: int = 50304  # gpt2's 50257 padded up to a multiple of 64 for faster matmuls
    n_layer: int = 6  # transformer blocks
    n_head: int = 6  # attention heads
    n_embd: int = 384  # the residual stream's width
    activation: str = 'polynorm'  # one of ACTIVATIONS
    poly_order: int = 3  # r, the degree of the polynomial in PolyReLU / PolyNorm
    ffn_hidden: int = 1536  # FFN width for non-gated activations; gated ones use 2/3 of it (same params)
    act_checkpointing: bool = True  # recompute PolyCom's powers in backward instead of storing them
    act_impl: str = 'auto'  # how PolyCom runs, one of ACT_IMPLS: auto | plain | compiled | triton
    # Mixture of Experts (n_experts = 0 means a dense FFN in every block)
    n_experts: int = 0
    top_k: int = 8
    moe_ffn_hidden: int = 1536  # width of each expert (non-gated; SwiGLU uses 2/3 of it)
    moe_impl: str = 'auto'  # auto | grouped | loop
    poly_per_expert: bool = False  # each expert its own PolyCom coefficients; False: one set per MoE layer
    lb_weight: float = 0.01  # load-balancing loss weight
    z_weight: float = 0.001  # router z-loss weight
    # transformer details
    qk_norm: bool = False  # RMSNorm on queries and keys (OLMoE); stabilizes MoE training
    tie_embeddings: bool = False
    init_std: float = 0.02
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not one of {ACTIVATIONS}")
        if self.poly_order < 1:
            raise ValueError(f"poly_order={self.poly_order} must be at least 1")
        if self.act_impl not in ACT_IMPLS:
            raise ValueError(f"act_impl={self.act_impl!r} is not one of {ACT_IMPLS}")
        if self.act_impl == 'triton' and not 2 <= self.poly_order <= 4:
            raise ValueError(f"act_impl='triton' handles poly_order 2 to 4, not {self.poly_order}; "
                             f"act_impl='auto' runs other orders in PyTorch")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd={self.n_embd} must split into n_head={self.n_head} heads of even size")
        if self.n_experts and not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be between 1 and n_experts={self.n_experts}")
        if self.moe_impl not in ('auto', 'grouped', 'loop'):
            raise ValueError(f"moe_impl={self.moe_impl!r} is not one of 'auto', 'grouped', 'loop'")
        if self.poly_per_expert and not (self.n_experts and self.activation.startswith('poly')):
            raise ValueError(f"poly_per_expert=True needs MoE layers (n_experts > 0) and a PolyCom activation, "
                             f"got n_experts={self.n_experts}, activation={self.activation!r}")
        if self.poly_per_expert and self.act_impl == 'triton':
            raise ValueError("act_impl='triton' takes one set of coefficients per layer, not poly_per_expert; "
                             "use act_impl='auto'")


def swiglu_width(hidden):
    """A gated FFN has three matrices instead of two, so 2/3 of the width keeps the parameter count (x8 for GEMMs)."""
    return max(8, 8 * round(hidden * 2 / 3 / 8))


# -----------------------------------------------------------------------------
# 2. Activations
#
# PolyCom composes a polynomial of order r with another function, with learnable coefficients a_0..a_r:
#
#   PolyReLU(x) = sum_{i=1..r} a_i * ReLU(x)^i  + a_0
#   PolyNorm(x) = sum_{i=1..r} a_i * norm(x^i)  + a_0,     norm(u) = u / RMS(u) over the hidden dimension
#
# In the code a_i is weight[i-1] and a_0 is bias, initialized to 1/r and 0. The math runs in float32 whatever
# the input dtype: in bf16, x^3 loses most of its mantissa and the mean of x^6 overflows for |x| of a few
# hundred. The gated forms (polynorm_glu, polyrelu_glu) put them on the gate branch of a SwiGLU-style FFN in
# place of SiLU (section 3).


def poly_norm(x, weight, bias, eps):
    xf = at_least_float32(x)
    y = bias + sum(a * rms_norm(xf ** i, eps) for i, a in enumerate(weight, start=1))
    return y.to(x.dtype)


def poly_relu(x, weight, bias):
    r = F.relu(at_least_float32(x))
    y = bias + sum(a * r ** i for i, a in enumerate(weight, start=1))
    return y.to(x.dtype)


def rms_norm(u, eps):
    """norm(u) = u / sqrt(mean(u^2) + eps), over the last (hidden) dimension, no learnable scale."""
    return u * torch.rsqrt(u.pow(2).mean(dim=-1, keepdim=True) + eps)


def at_least_float32(x):
    return x.to(torch.promote_types(x.dtype, torch.float32))


class PolyCom(nn.Module):
    """The learnable coefficients of PolyNorm and PolyReLU: weight (r,) = a_1..a_r at 1/r, bias (1,) = a_0 at 0.
    With experts=E (an MoE layer's per-expert coefficients), one set per expert: weight (E, r), bias (E, 1)."""

    def __init__(self, order, checkpointing, impl, experts):
        super().__init__()
        sets = (experts,) if experts else ()
        self.weight = nn.Parameter(torch.empty(*sets, order))
        self.bias = nn.Parameter(torch.empty(*sets, 1))
        self.checkpointing, self.impl = checkpointing, impl
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.constant_(self.weight, 1 / self.weight.shape[-1])
        nn.init.zeros_(self.bias)

    def coefficients(self, expert):
        """The weight and bias for x's rows: the shared ones, one expert's (expert an int), or each row's own
        expert's (expert a tensor of N ids, one per row of x): then (r, N, 1) and (N, 1), so that in the
        formula each a_i scales each row by that row's own coefficient."""
        if expert is None:
            return self.weight, self.bias
        if isinstance(expert, int):
            return self.weight[expert], self.bias[expert]
        return self.weight[expert].t().unsqueeze(-1), self.bias[expert]


class PolyNorm(PolyCom):
    def __init__(self, order=3, eps=1e-6, checkpointing=True, impl='auto', experts=0):
        super().__init__(order, checkpointing, impl, experts)
        self.eps = eps

    def forward(self, x, expert=None):  # (..., H) -> (..., H); expert: see coefficients
        weight, bias = self.coefficients(expert)
        return run_polycom(poly_norm, poly_norm_fused, self.impl, self.checkpointing, x, weight, bias, self.eps)


class PolyReLU(PolyCom):
    def __init__(self, order=3, checkpointing=True, impl='auto', experts=0):
        super().__init__(order, checkpointing, impl, experts)

    def forward(self, x, expert=None):
        weight, bias = self.coefficients(expert)
        return run_polycom(poly_relu, poly_relu_fused, self.impl, self.checkpointing, x, weight, bias)


class ReLU2(nn.Module):
    def forward(self, x):
        return F.relu(x).square()


def make_activation(cfg, experts=0):
    """The activation of the FFN: applied to up(x), or for the gated forms to gate(x) before the product
    with up(x). experts: per-expert coefficients for that many experts (PolyCom only)."""
    poly = cfg.activation.removesuffix('_glu')  # the gated PolyCom forms are the plain ones on the gate branch
    if poly == 'polynorm':
        return PolyNorm(cfg.poly_order, checkpointing=cfg.act_checkpointing, impl=cfg.act_impl, experts=experts)
    if poly == 'polyrelu':
        return PolyReLU(cfg.poly_order, checkpointing=cfg.act_checkpointing, impl=cfg.act_impl, experts=experts)
    return {'relu2': ReLU2, 'gelu': nn.GELU, 'relu': nn.ReLU, 'swiglu': nn.SiLU}[cfg.activation]()


# How PolyCom runs (act_impl). The functions above are the one definition; the fast paths compute the same
# thing. The choice is made at each call from the input's device, not when the model is built: a model is
# often built on one device (or on 'meta') and moved, and the choice is a few comparisons (inside a compiled
# model, made once while tracing).


def run_polycom(fn, fused, impl, checkpointing, x, *args):
    """fn(x, *args) (poly_norm or poly_relu) the way `impl` says, with or without recomputation in backward."""
    impl = polycom_impl(impl, x, args[0])
    if impl == 'triton':
        return fused(x, *args)  # saves only x for backward, like checkpointing
    if impl == 'compiled':
        fn = compiled(fn)
    if checkpointing and torch.is_grad_enabled():
        # keep only x for backward and recompute the r powers (and norms) there: the memory of a ReLU
        return checkpoint(fn, x, *args, use_reentrant=False)
    return fn(x, *args)


def polycom_impl(impl, x, weight):
    """The act_impl that runs for input x. 'auto': the Triton kernels (polykernels.py) on CUDA when they import
    and take these coefficients (one set of 2 to 4), else on the CPU inductor's compile of the plain function
    when a C++ compiler is found, else the plain code. Inside a model that is itself compiled, 'compiled'
    runs as plain code: the outer compile fuses it anyway."""
    if impl == 'auto':
        if x.is_cuda:
            kernels_apply = poly_norm_fused is not None and weight.dim() == 1 and 2 <= len(weight) <= 4
            impl = 'triton' if kernels_apply else 'plain'
        elif x.device.type == 'cpu' and not torch.compiler.is_compiling() and have_cpu_compiler():
            impl = 'compiled'
        else:
            impl = 'plain'
    if impl == 'compiled' and torch.compiler.is_compiling():
        return 'plain'
    if impl == 'triton' and poly_norm_fused is None:
        raise RuntimeError("act_impl='triton' needs Triton (pip install triton); use act_impl='auto' or 'plain'")
    if impl == 'compiled' and x.device.type == 'cpu' and not have_cpu_compiler():
        raise RuntimeError("act_impl='compiled' needs a C++ compiler on the CPU (g++); use act_impl='auto' or 'plain'")
    return impl


@cache
def have_cpu_compiler():
    """Whether inductor finds its C++ compiler (torch.compile on the CPU needs one); checked once per process."""
    from torch._inductor import config
    return any(cxx and shutil.which(cxx) for cxx in config.cpp.cxx)


@cache
def compiled(fn):
    """fn compiled by inductor, once per process on first use. dynamic=True: one compile serves every number
    of rows; x comes as rows (N, H), so the dense FFN and the MoE's experts share it."""
    fn_compiled = torch.compile(fn, dynamic=True)
    return lambda x, *args: fn_compiled(x.reshape(-1, x.shape[-1]), *args).view(x.shape)


# -----------------------------------------------------------------------------
# 3. The feed-forward network
#
#   non-gated:  down(act(up(x)))               2 * n_embd * hidden parameters
#   gated:      down(act(gate(x)) * up(x))     3 * n_embd * (2/3 hidden): the same count
#               act = SiLU for SwiGLU, PolyNorm or PolyReLU for polynorm_glu and polyrelu_glu


class FFN(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        gated = cfg.activation in GATED
        hidden = swiglu_width(cfg.ffn_hidden) if gated else cfg.ffn_hidden
        self.gate = nn.Linear(cfg.n_embd, hidden, bias=False) if gated else None
        self.up = nn.Linear(cfg.n_embd, hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.n_embd, bias=False)
        self.act = make_activation(cfg)  # each FFN has its own activation (its own PolyCom scalars)

    def forward(self, x):  # (B, T, C) -> (B, T, C), {} (no auxiliary losses, as MoE has)
        if self.gate is not None:
            return self.down(self.act(self.gate(x)) * self.up(x)), {}
        return self.down(self.act(self.up(x))), {}


# -----------------------------------------------------------------------------
# 4. Mixture of Experts (OLMoE-1B-7B's math, dropless)
#
# A router scores every token against E experts; softmax over all E in float32, keep the top k (the k
# probabilities are NOT renormalized) and sum the chosen experts' outputs weighted by them. Dropless: every
# token reaches its k experts however unbalanced the routing. Two auxiliary losses keep the router healthy:
#   load balancing  E * sum_e f_e * P_e      f_e: share of the N*k assignments sent to e, P_e: mean prob of e
#   router z-loss   mean_t logsumexp(logits_t)^2                       keeps the router logits small


def compute_dtype(x):
    """The dtype matmuls run in: autocast's when it is on (torch._grouped_mm is not covered by autocast)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        E, C = cfg.n_experts, cfg.n_embd
        gated = cfg.activation in GATED
        H = swiglu_width(cfg.moe_ffn_hidden) if gated else cfg.moe_ffn_hidden
        self.n_experts, self.top_k, self.impl = E, cfg.top_k, cfg.moe_impl
        self.router = nn.Linear(C, E, bias=False)
        # expert weights stacked as (E, in, out) so that torch._grouped_mm can run all experts at once
        self.w_gate = nn.Parameter(torch.empty(E, C, H)) if gated else None
        self.w_up = nn.Parameter(torch.empty(E, C, H))
        self.w_down = nn.Parameter(torch.empty(E, H, C))
        # one activation module for the layer's experts; with poly_per_expert it holds each expert's coefficients
        self.per_expert = cfg.poly_per_expert
        self.act = make_activation(cfg, experts=E if cfg.poly_per_expert else 0)

    def forward(self, x):  # (B, T, C) -> (B, T, C), {'lb': ..., 'z': ...}
        B, T, C = x.shape
        x = x.view(B * T, C)  # (N, C), N = B*T tokens: routing treats each token on its own
        logits = self.router(x).float()  # (N, E) in float32: bf16 rounding would flip close routing choices
        probs = logits.softmax(dim=-1)  # (N, E)
        weights, experts = probs.topk(self.top_k, dim=-1)  # (N, k) each, not renormalized

        flat = experts.flatten()  # (N*k,) every routing assignment
        counts = torch.zeros(self.n_experts, dtype=torch.int32, device=x.device)  # (E,) assignments per expert
        counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))  # bincount, but a fixed shape
        f = counts.float() / flat.numel()  # (E,) share of the N*k assignments per expert
        aux = {'lb': self.n_experts * (f * probs.mean(dim=0)).sum(),  # scalar
               'z': torch.logsumexp(logits, dim=-1).square().mean()}  # scalar

        if self.use_grouped(x):
            y = self.experts_grouped(x, weights, experts, counts)  # (N, C)
        else:
            y = self.experts_loop(x, weights, experts)  # (N, C)
        return y.view(B, T, C), aux

    def use_grouped(self, x):
        if self.impl != 'auto':
            return self.impl == 'grouped'
        # torch._grouped_mm wants rows of 16-byte multiples, and takes bf16 everywhere but float32 only in
        # eager mode on the CPU (never float64); GPUs older than Hopper lack its kernels. Elsewhere the loop.
        if not all(d % 8 == 0 for d in self.w_up.shape[1:]):
            return False
        dtype = compute_dtype(x)
        if x.is_cuda:
            return dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (9, 0)
        return dtype == torch.bfloat16 or (dtype == torch.float32 and not torch.compiler.is_compiling())

    def expert_ffn(self, h, expert, w_gate, w_up, w_down, mm):
        """One FFN applied with matmul `mm`, so that the loop and the grouped path share the math. expert: whose
        rows h holds (an int in the loop, an id per row in the grouped path), for per-expert coefficients."""
        act = partial(self.act, expert=expert) if self.per_expert else self.act
        if w_gate is not None:
            return mm(act(mm(h, w_gate)) * mm(h, w_up), w_down)
        return mm(act(mm(h, w_up)), w_down)

    def experts_loop(self, x, weights, experts):
        """The readable reference: for each expert, gather its tokens, run its FFN, scatter back weighted."""
        y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)  # (N, C), summed in float32
        for e in range(self.n_experts):
            token, slot = torch.where(experts == e)  # (n_e,) each: the tokens that chose e, and as which choice
            if token.numel() == 0:
                continue
            w_gate = self.w_gate[e] if self.w_gate is not None else None  # (C, H)
            out = self.expert_ffn(x[token], e, w_gate, self.w_up[e], self.w_down[e], torch.matmul)  # (n_e, C)
            y.index_add_(0, token, out.float() * weights[token, slot, None])  # (n_e, C) into (N, C)
        return y.to(x.dtype)

    def experts_grouped(self, x, weights, experts, counts):
        """The fast path: sort the N*k assignments by expert and run every expert in one grouped GEMM
        (counts: assignments per expert, from forward). No step needs the routing on the host, so it compiles
        to one graph and never syncs the GPU."""
        N, k = experts.shape
        flat = experts.flatten()  # (N*k,) the expert of each assignment, token-major
        order = flat.argsort(stable=True)  # (N*k,) assignments grouped by expert
        offsets = counts.cumsum(0, dtype=torch.int32)  # (E,) end row of each expert's group; empty groups are fine
        dt = compute_dtype(x)
        h = x.to(dt)[order // k]  # (N*k, C) the token behind each sorted assignment; cast once, before the k copies

        def mm(a, b):  # (rows, in) @ per-expert (E, in, out) -> (rows, out)
            return torch._grouped_mm(a.to(dt), b.to(dt), offs=offsets)

        out = self.expert_ffn(h, flat[order], self.w_gate, self.w_up, self.w_down, mm)  # (N*k, C), sorted
        out = torch.empty_like(out).index_copy_(0, order, out).view(N, k, -1)  # (N, k, C) back to (token, slot)
        # the k outputs weighted and summed as one batched matmul in the compute dtype: no (N, k, C) float32 copy
        y = torch.bmm(weights.to(dt).unsqueeze(1), out)  # (N, 1, k) @ (N, k, C) -> (N, 1, C)
        return y.view(N, -1).to(x.dtype)


# -----------------------------------------------------------------------------
# 5. The transformer


def rope_tables(block_size, head_dim, theta):
    """cos and sin of the rotary angles, (block_size, head_dim/2) each."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):  # x: (B, nh, T, hs); rotates each pair (x1[j], x2[j]) by position * freq[j]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.q_norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x, cos, sin, cache=None, pos=0):  # (B, T, C) -> (B, T, C); cos, sin (T, hs/2)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        if self.q_norm is not None:  # over all heads at once, as OLMoE
            q, k = self.q_norm(q), self.k_norm(k)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, nh, T, hs)
        if cache is not None:  # generation: append this step's keys and values, attend to all so far
            if pos > 0 and T > 1:
                raise ValueError("the KV cache takes a prompt at pos 0, then one token at a time")
            cache['k'][:B, :, pos:pos + T] = k  # (B, nh, T, hs) into (B_max, nh, block_size, hs)
            cache['v'][:B, :, pos:pos + T] = v
            k, v = cache['k'][:B, :, :pos + T], cache['v'][:B, :, :pos + T]  # (B, nh, pos+T, hs) each
        # causal within the new tokens; a single new token may see every cached one, so no mask then
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)  # (B, nh, T, hs); flash attention on GPU
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # heads side by side again: (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.ffn = MoE(cfg) if cfg.n_experts else FFN(cfg)

    def forward(self, x, cos, sin, cache=None, pos=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, pos)
        h, aux = self.ffn(self.ffn_norm(x))  # aux: the MoE's auxiliary losses, {} for a dense FFN
        return x + h, aux


@torch.no_grad()
def normal_(p, std):
    """Normal(0, std) into p. A sharded p (FSDP's DTensor) draws its whole tensor where its shard lives and keeps
    its shard, so that its values are what one process draws from the same seed, whatever the number of processes;
    one tensor at a time, so that no process ever holds the whole model."""
    if not hasattr(p, 'device_mesh'):  # a plain tensor (DTensor's module takes seconds to import: not for this)
        return nn.init.normal_(p, mean=0.0, std=std)
    from torch.distributed.tensor import distribute_tensor
    local = p.to_local()
    whole = torch.empty(p.shape, dtype=local.dtype, device=local.device).normal_(mean=0.0, std=std)
    local.copy_(distribute_tensor(whole, p.device_mesh, p.placements, src_data_rank=None).to_local())  # no traffic


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        device = torch.get_default_device()  # where the caller builds: the CPU, `with torch.device(...)`, or meta
        with torch.device('meta'):  # shapes only; init_weights sets every value, so no value is drawn twice
            self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
            self.norm_f = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
            self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
            if cfg.tie_embeddings:
                self.lm_head.weight = self.wte.weight
            half_head = cfg.n_embd // cfg.n_head // 2
            self.register_buffer('rope_cos', torch.empty(cfg.block_size, half_head), persistent=False)
            self.register_buffer('rope_sin', torch.empty(cfg.block_size, half_head), persistent=False)
        self.to_empty(device=device)
        self.init_weights()

    def init_weights(self):
        """Every parameter and buffer from scratch, so that GPT(cfg) equals a model built on the meta device,
        materialized with to_empty() (e.g. after FSDP sharded it) and then given init_weights(), seed for seed.
        Matrices and embeddings: Normal(0, init_std), and init_std / sqrt(2 * n_layer) for the projections
        that write into the residual stream, so the stream's variance does not grow with depth. Norms: 1.
        PolyCom: 1/r and 0 (every expert's, with per-expert coefficients). The RoPE tables: recomputed."""
        std = self.config.init_std
        if self.config.tie_embeddings:  # to_empty() from the meta device unties them
            self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.RMSNorm, PolyCom)):
                m.reset_parameters()
        poly = {id(p) for p in self.polycom_params()}
        for name, p in self.named_parameters():
            if p.dim() < 2 or id(p) in poly:
                continue
            residual = name.endswith(('attn.proj.weight', 'ffn.down.weight', 'ffn.w_down'))
            normal_(p, std / math.sqrt(2 * self.config.n_layer) if residual else std)
        cos, sin = rope_tables(self.config.block_size, self.config.n_embd // self.config.n_head, self.config.rope_theta)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def forward(self, idx, targets=None, cache=None, pos=0):
        """idx (B, T) token ids -> (logits, losses). With targets: logits (B, T, V) and the losses as scalar
        tensors {'loss': what to backpropagate, 'lm': the language-modelling loss, 'lb', 'z': the MoE's weighted
        auxiliary losses (zero for a dense model)}. Without targets: logits for the last position only
        (B, 1, V) and losses None."""
        B, T = idx.shape
        if pos + T > self.config.block_size:
            raise ValueError(f"sequence of {pos + T} tokens is longer than block_size={self.config.block_size}")
        cos, sin = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        x = self.wte(idx)  # (B, T, C)
        lb, z, n_moe = 0.0, 0.0, 0
        for i, block in enumerate(self.blocks):
            x, aux = block(x, cos, sin, cache[i] if cache is not None else None, pos)
            if aux:
                lb, z, n_moe = lb + aux['lb'], z + aux['z'], n_moe + 1
        x = self.norm_f(x)

        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)  # (B, T, V)
        lm = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        losses = {'lm': lm, 'lb': lm.new_zeros(()), 'z': lm.new_zeros(())}
        if n_moe:  # averaged over MoE layers, then weighted
            losses['lb'] = self.config.lb_weight * lb / n_moe
            losses['z'] = self.config.z_weight * z / n_moe
        losses['loss'] = losses['lm'] + losses['lb'] + losses['z']
        return logits, losses

    def polycom_params(self):
        """PolyCom's coefficients (weight and bias of every PolyNorm / PolyReLU): no weight decay, own init."""
        return [p for m in self.modules() if isinstance(m, PolyCom) for p in m.parameters()]

    def optim_groups(self, weight_decay):
        """AdamW parameter groups: matrices and embeddings decay; norms and PolyCom's coefficients (per-expert
        ones are matrices too) do not."""
        poly = {id(p) for p in self.polycom_params()}
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2 and id(p) not in poly]
        return [{'params': decay, 'weight_decay': weight_decay},
                {'params': [p for p in params if p.dim() < 2 or id(p) in poly], 'weight_decay': 0.0}]

    # -- sizes and FLOPs: what a user needs to plan a run ------------------------

    def num_params(self):
        """Parameter counts: total, non-embedding (without the input and output embeddings), active per
        token (an MoE layer uses top_k of its n_experts), and PolyCom's scalars."""
        cfg = self.config
        total = sum(p.numel() for p in self.parameters())  # a tied weight is counted once
        embedding = self.wte.weight.numel() + (0 if cfg.tie_embeddings else self.lm_head.weight.numel())
        idle_experts = 0
        for m in self.modules():
            if isinstance(m, MoE):
                experts = [m.w_gate, m.w_up, m.w_down] + (list(m.act.parameters()) if m.per_expert else [])
                idle = sum(p.numel() for p in experts if p is not None)
                idle_experts += idle * (cfg.n_experts - cfg.top_k) // cfg.n_experts
        poly = sum(p.numel() for p in self.polycom_params())
        return {'total': total, 'non_embedding': total - embedding, 'active': total - idle_experts, 'polycom': poly}

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token (forward + backward = 3x forward): 6 per active parameter, the output head
        included, the input lookup not (Kaplan's 6N: the matmul weights, and the norms' and PolyCom's few
        scalars with them), plus 12 * n_layer * n_embd * seq_len for the attention scores and their weighted
        sum (PaLM's count, which ignores the causal mask)."""
        cfg = self.config
        seq_len = seq_len or cfg.block_size
        matmul_params = self.num_params()['active'] - self.wte.weight.numel()
        if cfg.tie_embeddings:
            matmul_params += self.lm_head.weight.numel()
        return 6 * matmul_params + 12 * cfg.n_layer * cfg.n_embd * seq_len

    # -- generation ------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_cache=True):
        """Append max_new_tokens sampled tokens to idx (B, T). temperature=0 is greedy. With the KV cache
        each new token costs one position's work; once the context fills block_size, the window slides
        and every step recomputes it (the cache's keys were made at other positions)."""
        cfg = self.config
        cache, pos = None, 0
        for _ in range(max_new_tokens):
            if use_cache and idx.size(1) < cfg.block_size:
                if cache is None:  # prefill with the whole prompt
                    cache = self.new_cache(idx.size(0))
                    logits, _ = self(idx, cache=cache)
                else:  # one token at a time
                    logits, _ = self(idx[:, -1:], cache=cache, pos=pos)
                pos = idx.size(1)
            else:
                logits, _ = self(idx[:, -cfg.block_size:])
            idx = torch.cat([idx, sample_token(logits[:, -1, :].float(), temperature, top_k)], dim=1)
        return idx

    def new_cache(self, batch_size, dtype=None):
        """Keys and values for every layer, (B, nh, block_size, hs) each, in the dtype attention runs in (by
        default autocast's when it is on, else the weights'), so that no decoding step recasts the cache."""
        cfg = self.config
        p = self.lm_head.weight
        dtype = dtype or compute_dtype(p)
        shape = (batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        return [{'k': torch.zeros(shape, dtype=dtype, device=p.device),
                 'v': torch.zeros(shape, dtype=dtype, device=p.device)} for _ in range(cfg.n_layer)]


def sample_token(logits, temperature, top_k):  # (B, V) -> (B, 1)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


# -----------------------------------------------------------------------------
# Summarizing a model


def count(n):
    return f"{n / 1e9:8.4f} B" if n >= 1e9 else f"{n / 1e6:8.3f} M"


def summary(cfg):
    with torch.device('meta'):  # shapes only: the 7B MoE is summarized without allocating its weights
        model = GPT(cfg)
    n = model.num_params()
    lines = [f"{cfg.n_layer} layers, n_embd {cfg.n_embd}, {cfg.n_head} heads, context {cfg.block_size}, "
             f"activation {cfg.activation}"
             + (f" (order {cfg.poly_order}{', per expert' if cfg.poly_per_expert else ''})"
                if cfg.activation.startswith('poly') else '')
             + (f", {cfg.n_experts} experts top-{cfg.top_k}" if cfg.n_experts else ''),
             f"parameters, total:         {count(n['total'])}",
             f"parameters, non-embedding: {count(n['non_embedding'])}",
             f"parameters, active:        {count(n['active'])}",
             f"PolyCom scalars:           {n['polycom']:8d} ({100 * n['polycom'] / n['total']:.2e} % of total)",
             f"training FLOPs per token:  {model.flops_per_token() / 1e9:8.3f} GFLOP"]
    return '\n'.join(lines)


if __name__ == '__main__':  # python model.py CONFIG [--key=value ...]: the model a config means, in numbers
    import settings
    config, _ = settings.resolve(sys.argv[1:])
    config['vocab_size'] = settings.data_vocab(config)  # as train.py decides it, when the config leaves it to the data
    print(summary(GPTConfig(**settings.model_keys(config))))
