"""
A GPT with the PolyCom activations (PolyNorm, PolyReLU and their gated forms), dense or Mixture-of-Experts, for
Hugging Face transformers:

    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

The PolyCom project's export_hf.py copies this file next to the weights; it restates that project's model.py
forward in plain PyTorch (its test holds the two to equal logits). Read it top to bottom: the config, the
activations, the FFN and MoE, attention, the transformer.

generate uses a KV cache (transformers' DynamicCache) while the sequence is shorter than the context (n_positions
tokens): the prompt once, then one position per new token. From there on the window slides, as in that project's
sample.py: each step recomputes the last n_positions tokens without the cache, since the cached keys were rotated at
positions that have since shifted. Greedy generate gives sample.py's tokens, before and past the context.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import DynamicCache, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

# newer transformers (5.24 among them) name forward's cache `cache`, older ones `past_key_values`, as argument and
# output: both are accepted here, and the output names it as the installed version does
CACHE = 'cache' if 'cache' in CausalLMOutputWithPast.__dataclass_fields__ else 'past_key_values'

GATED = ('swiglu', 'polyrelu_glu', 'polynorm_glu')  # down(act(gate(x)) * up(x))


class PolyComConfig(PretrainedConfig):
    """intermediate_size is the FFN's width as built (gated ones included), or each expert's with num_experts > 0.
    n_positions is the context (GPT-2's name, which lm-eval reads): not max_position_embeddings, past which
    transformers' generate warns of trouble that the sliding window does not have."""
    model_type = 'polycom'

    def __init__(self, vocab_size=50304, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                 n_positions=256, hidden_act='polynorm', poly_order=3, poly_eps=1e-6,
                 intermediate_size=1536, num_experts=0, num_experts_per_tok=8, poly_per_expert=False,
                 qk_norm=False, rope_theta=10000.0, rms_norm_eps=1e-5, initializer_range=0.02,
                 tie_word_embeddings=False, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.n_positions = n_positions
        self.hidden_act, self.poly_order, self.poly_eps = hidden_act, poly_order, poly_eps
        self.intermediate_size = intermediate_size
        self.num_experts, self.num_experts_per_tok = num_experts, num_experts_per_tok
        self.poly_per_expert = poly_per_expert
        self.qk_norm, self.rope_theta, self.rms_norm_eps = qk_norm, rope_theta, rms_norm_eps
        self.initializer_range = initializer_range
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


# -----------------------------------------------------------------------------
# PolyCom, with learnable a_0..a_r (weight = a_1..a_r, bias = a_0), in float32 whatever the input's dtype:
#   PolyReLU(x) = sum_{i=1..r} a_i * ReLU(x)^i  + a_0
#   PolyNorm(x) = sum_{i=1..r} a_i * norm(x^i)  + a_0,     norm(u) = u / sqrt(mean(u^2) + eps) over the hidden dim


class PolyCom(nn.Module):
    def __init__(self, kind, order, eps, experts=0):
        super().__init__()
        sets = (experts,) if experts else ()  # an MoE's per-expert coefficients: one set per expert
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.full((*sets, order), 1 / order))
        self.bias = nn.Parameter(torch.zeros(*sets, 1))

    def forward(self, x, expert=None):
        weight, bias = (self.weight, self.bias) if expert is None else (self.weight[expert], self.bias[expert])
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # x^3 in bf16 loses most of its mantissa
        if self.kind == 'polynorm':
            terms = (rms_norm(xf ** i, self.eps) for i in range(1, len(weight) + 1))
        else:
            terms = (F.relu(xf) ** i for i in range(1, len(weight) + 1))
        return (bias + sum(a * t for a, t in zip(weight, terms))).to(x.dtype)


def rms_norm(u, eps):
    return u * torch.rsqrt(u.pow(2).mean(dim=-1, keepdim=True) + eps)


def make_activation(config, experts=0):
    kind = config.hidden_act.removesuffix('_glu')  # the gated forms apply the plain ones to the gate branch
    if kind in ('polynorm', 'polyrelu'):
        return PolyCom(kind, config.poly_order, config.poly_eps, experts)
    return {'relu': nn.ReLU, 'gelu': nn.GELU, 'swiglu': nn.SiLU, 'relu2': ReLU2}[kind]()


class ReLU2(nn.Module):
    def forward(self, x):
        return F.relu(x).square()


# -----------------------------------------------------------------------------
# The FFN, and the Mixture of Experts: softmax over all experts in float32, the top k kept (not renormalized)


class PolyComMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, H = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(C, H, bias=False) if config.hidden_act in GATED else None
        self.up_proj = nn.Linear(C, H, bias=False)
        self.down_proj = nn.Linear(H, C, bias=False)
        self.act = make_activation(config)

    def forward(self, x):
        if self.gate_proj is not None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class PolyComMoE(nn.Module):
    """Expert weights stacked as (E, in, out); each token's top-k experts, weighted by their probabilities."""

    def __init__(self, config):
        super().__init__()
        E, C, H = config.num_experts, config.hidden_size, config.intermediate_size
        self.top_k, self.per_expert = config.num_experts_per_tok, config.poly_per_expert
        self.router = nn.Linear(C, E, bias=False)
        self.gate_proj = nn.Parameter(torch.empty(E, C, H)) if config.hidden_act in GATED else None
        self.up_proj = nn.Parameter(torch.empty(E, C, H))
        self.down_proj = nn.Parameter(torch.empty(E, H, C))
        self.act = make_activation(config, experts=E if config.poly_per_expert else 0)

    def forward(self, x):
        B, T, C = x.shape
        x = x.reshape(B * T, C)
        probs = self.router(x).float().softmax(dim=-1)  # (N, E)
        weights, experts = probs.topk(self.top_k, dim=-1)  # (N, k) each
        y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)  # summed in float32
        for e in range(self.up_proj.shape[0]):
            token, slot = torch.where(experts == e)  # the tokens that chose e, and as which of their k choices
            if token.numel() == 0:
                continue
            h = x[token]
            act = (lambda u: self.act(u, expert=e)) if self.per_expert else self.act
            if self.gate_proj is not None:
                h = act(h @ self.gate_proj[e]) * (h @ self.up_proj[e])
            else:
                h = act(h @ self.up_proj[e])
            y.index_add_(0, token, (h @ self.down_proj[e]).float() * weights[token, slot, None])
        return y.to(x.dtype).view(B, T, C)


# -----------------------------------------------------------------------------
# Attention with rotary embeddings (rotating the two halves of each head), and the transformer


def apply_rope(x, cos, sin):  # x (B, nh, T, hs), cos and sin (T, hs/2)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class PolyComAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        C = config.hidden_size
        self.n_head = config.num_attention_heads
        self.qkv_proj = nn.Linear(C, 3 * C, bias=False)
        self.o_proj = nn.Linear(C, C, bias=False)
        # over all heads at once (OLMoE's qk-norm)
        self.q_norm = nn.RMSNorm(C, eps=config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(C, eps=config.rms_norm_eps) if config.qk_norm else None

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        B, T, C = x.shape
        q, k, v = self.qkv_proj(x).split(C, dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # the earlier tokens' keys and values, with these appended: (B, nh, past + T, hs)
            k, v = cache.update(k, v, layer)
        # without a mask: causal among T new tokens with nothing cached, or one new token that sees all
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class PolyComDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = PolyComAttention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = PolyComMoE(config) if config.num_experts else PolyComMLP(config)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class PolyComModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(PolyComDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class PolyComPreTrainedModel(PreTrainedModel):
    config_class = PolyComConfig
    base_model_prefix = 'model'
    _no_split_modules = ['PolyComDecoderLayer']

    def _init_weights(self, module):
        """For a model built from a config alone: the weights drawn, PolyCom at a_i = 1/r and a_0 = 0."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, PolyComMoE):
            for p in (module.gate_proj, module.up_proj, module.down_proj):
                if p is not None:
                    nn.init.normal_(p, std=std)
        elif isinstance(module, PolyCom):
            nn.init.constant_(module.weight, 1 / module.weight.shape[-1])
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):
            nn.init.ones_(module.weight)


class PolyComForCausalLM(PolyComPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {'lm_head.weight': 'model.embed_tokens.weight'}  # when config.tie_word_embeddings

    def __init__(self, config):
        super().__init__(config)
        self.model = PolyComModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask=None, labels=None, cache=None, past_key_values=None, use_cache=None,
                logits_to_keep=0, **kwargs):
        """Logits (B, T, V) for input_ids (B, T); with labels (B, T), also the mean next-token cross-entropy
        over the labels that are not -100 (labels[:, t] is predicted from the tokens up to t - 1).
        attention_mask (B, past + T): 0 marks padding, which no token attends to. cache (past_key_values in older
        transformers): the keys and values of the `past` tokens before input_ids, extended here and returned;
        use_cache=True starts one. logits_to_keep=n: the last n positions' logits only (0: all)."""
        cfg = self.config
        cache = cache if cache is not None else past_key_values
        if cache is None and use_cache:
            cache = DynamicCache(config=cfg)
        past, T = (cache.get_seq_length() if cache is not None else 0), input_ids.size(1)
        if past + T > cfg.n_positions:
            raise ValueError(f"sequence of {past + T} tokens is longer than n_positions={cfg.n_positions}")
        cos, sin = rope_tables(past, T, cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta, input_ids.device)
        mask = attention_mask_4d(attention_mask, past, T, input_ids.device)
        if attention_mask is not None:  # padding is never looked up, so a tokenizer may pad with any id (the pad
            input_ids = input_ids.masked_fill(attention_mask[:, -T:] == 0, 0)  # token lm-eval adds lies past the vocab)
        if bool((input_ids >= cfg.vocab_size).any()):
            raise ValueError(f"token id {int(input_ids.max())} is past this model's vocabulary ({cfg.vocab_size}): the "
                             "<|endoftext|> of a byte or character tokenizer is the tokenizer's alone, for lm-eval to "
                             "stop at; start a text from one of the data's tokens (lm-eval: prefix_token_id=ID)")
        x = self.model.embed_tokens(input_ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, mask, cache, i)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep  # 0: all
        logits = self.lm_head(self.model.norm(x[:, keep]))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE: cache})

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, cache=None, past_key_values=None,
                                      use_cache=True, logits_to_keep=None, **kwargs):
        """Each step of generate, as sample.py does it: while the sequence is shorter than the context, the tokens
        the cache lacks (the prompt, then the newest token); from there on the last n_positions tokens afresh."""
        cache = cache if cache is not None else past_key_values
        window = self.config.n_positions
        if use_cache and input_ids.size(1) < window:
            past = cache.get_seq_length() if cache is not None else 0
            inputs = {'input_ids': input_ids[:, past:], CACHE: cache, 'use_cache': True}
        else:  # the window slides: the cached keys were rotated at positions that have shifted since
            inputs = {'input_ids': input_ids[:, -window:], 'use_cache': False}
            attention_mask = attention_mask[:, -window:] if attention_mask is not None else None
        if logits_to_keep is not None:
            inputs['logits_to_keep'] = logits_to_keep
        return {**inputs, 'attention_mask': attention_mask}


def rope_tables(past, T, head_dim, theta, device):
    """cos and sin of the rotary angles of positions past..past+T-1, (T, head_dim/2) each, in float32."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    angles = torch.outer(torch.arange(past, past + T, dtype=torch.float32, device=device), freqs)
    return angles.cos(), angles.sin()


def attention_mask_4d(attention_mask, past, T, device):
    """None where attention needs no mask: no padding, and either nothing cached or one new token. Else
    (B or 1, 1, T, past + T), True where a query may attend: to its own and earlier positions, not to padding,
    and always to itself (so that a padding query attends somewhere rather than to nothing)."""
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and (past == 0 or T == 1):
        return None
    query = torch.arange(past, past + T, device=device)[:, None]  # (T, 1) positions
    key = torch.arange(past + T, device=device)[None, :]  # (1, past + T)
    allowed = (key <= query)[None, None]  # (1, 1, T, past + T)
    if padded:
        allowed = allowed & attention_mask.bool()[:, None, None, -(past + T):]
    return allowed | (key == query)
