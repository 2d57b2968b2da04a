"""
Export a trained checkpoint as a Hugging Face transformers model folder.

    python export_hf.py --out_dir=out --to=hf_out
    python export_hf.py --out_dir=out/dense_1b_polynorm --to=exports/dense_1b_polynorm --overwrite   # replace an earlier export

The folder holds config.json, the weights as model.safetensors (float32, as trained), modeling_polycom.py (this
project's forward restated for transformers, copied from hf/), the gpt2 tokenizer's files when the data was
gpt2 BPE, and a README.md (the model card, with how to tokenize byte- or character-level data). Then:

    AutoModelForCausalLM.from_pretrained('hf_out', trust_remote_code=True)
    lm_eval --model hf --model_args pretrained=hf_out,trust_remote_code=True --tasks hellaswag,arc_easy,piqa

Writing the folder needs safetensors; loading it needs transformers. Either kind of checkpoint is read (ckpt.pt,
or the sharded ckpt/ of an fsdp run).
"""

import argparse
import json
import os
import shutil

from checkpoint import load_checkpoint

MODELING = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hf', 'modeling_polycom.py')

# model.py's module names -> the exported ones (Hugging Face's usual names), one dotted part at a time;
# parts not listed (layer numbers, weight, bias, act, router, q_norm, k_norm, lm_head) keep their names
NAMES = {'wte': 'model.embed_tokens', 'blocks': 'model.layers', 'norm_f': 'model.norm',
         'attn_norm': 'input_layernorm', 'attn': 'self_attn', 'qkv': 'qkv_proj', 'proj': 'o_proj',
         'ffn_norm': 'post_attention_layernorm', 'ffn': 'mlp',
         'gate': 'gate_proj', 'up': 'up_proj', 'down': 'down_proj',  # the dense FFN's Linear layers
         'w_gate': 'gate_proj', 'w_up': 'up_proj', 'w_down': 'down_proj'}  # the MoE's stacked (E, in, out) experts


def hf_name(name):
    """A parameter's name in the export: 'blocks.0.ffn.w_up' -> 'model.layers.0.mlp.up_proj'."""
    return '.'.join(NAMES.get(part, part) for part in name.split('.'))


def hf_weights(model):
    """The model's parameters under their exported names, contiguous. A tied output head is left out: it is the
    embedding, and transformers ties it again from config.json's tie_word_embeddings."""
    # named_parameters lists a shared tensor once, under its first name (the embedding's)
    return {hf_name(name): p.detach().contiguous() for name, p in model.named_parameters()}


def hf_config(model, meta):
    """config.json: the GPTConfig under transformers' usual names, the FFN's width and PolyNorm's eps as the model
    built them, and the data's tokenizer."""
    cfg, ffn = model.config, model.blocks[0].ffn
    config = {
        'architectures': ['PolyComForCausalLM'], 'model_type': 'polycom',
        'auto_map': {'AutoConfig': 'modeling_polycom.PolyComConfig',
                     'AutoModelForCausalLM': 'modeling_polycom.PolyComForCausalLM'},
        'vocab_size': cfg.vocab_size, 'hidden_size': cfg.n_embd, 'num_hidden_layers': cfg.n_layer,
        'num_attention_heads': cfg.n_head, 'max_position_embeddings': cfg.block_size,
        'hidden_act': cfg.activation, 'poly_order': cfg.poly_order, 'poly_eps': getattr(ffn.act, 'eps', None),
        'intermediate_size': ffn.w_up.shape[2] if cfg.n_experts else ffn.up.out_features,
        'num_experts': cfg.n_experts, 'num_experts_per_tok': cfg.top_k, 'poly_per_expert': cfg.poly_per_expert,
        'qk_norm': cfg.qk_norm, 'rope_theta': cfg.rope_theta, 'rms_norm_eps': cfg.norm_eps,
        'initializer_range': cfg.init_std, 'tie_word_embeddings': cfg.tie_embeddings, 'torch_dtype': 'float32',
        # the data's tokenizer, as its meta.json names it: 'gpt2', 'bytes' or 'char' (with its characters)
        'data_tokenizer': meta['tokenizer'], 'data_vocab_size': meta['vocab_size'],
    }
    if meta['tokenizer'] == 'char':
        config['data_chars'] = meta['chars']
    if meta.get('eot') is not None:  # the id that starts each document: generation ends there
        config['bos_token_id'] = config['eos_token_id'] = meta['eot']
    return config


# -----------------------------------------------------------------------------
# The gpt2 tokenizer as transformers reads it (vocab.json and merges.txt, GPT-2's own files), rebuilt from
# tiktoken's encoding, which works offline from its cache: token i is its bytes, spelled in GPT-2's printable
# stand-ins for bytes, and each token past the 256 bytes is the merge of the two pieces that BPE makes of it
# with the tokens before it.


def byte_symbols():
    """GPT-2's stand-in character for each byte: printable bytes stand for themselves, the others (spaces,
    control bytes) for characters from 256 on, in byte order."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def bpe_pieces(token, ranks):
    """The two pieces whose merge made `token`: byte-pair merging of its bytes, the lowest-ranked pair first,
    until two pieces are left (every merge on the way ranks below the token itself)."""
    pieces = [bytes([b]) for b in token]
    while len(pieces) > 2:
        pairs = [ranks.get(a + b, len(ranks)) for a, b in zip(pieces, pieces[1:])]
        i = pairs.index(min(pairs))
        pieces[i:i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def gpt2_tokenizer_files(block_size):
    """{file name: text} of the gpt2 tokenizer, for transformers' AutoTokenizer."""
    from data.shards import GPT2_EOT, get_tokenizer
    get_tokenizer({'tokenizer': 'gpt2', 'vocab_size': GPT2_EOT + 1})  # tiktoken's clear errors, if it is missing
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    ranks = {enc.decode_single_token_bytes(i): i for i in range(GPT2_EOT)}
    symbols = byte_symbols()
    spell = lambda token: ''.join(symbols[b] for b in token)
    vocab = {**{spell(token): i for token, i in ranks.items()}, '<|endoftext|>': GPT2_EOT}
    merges = [' '.join(spell(p) for p in bpe_pieces(token, ranks)) for token in sorted(ranks, key=ranks.get)
              if len(token) > 1]
    eot = '<|endoftext|>'
    config = {'tokenizer_class': 'GPT2Tokenizer', 'bos_token': eot, 'eos_token': eot, 'unk_token': eot,
              'model_max_length': block_size, 'add_prefix_space': False}
    return {'vocab.json': json.dumps(vocab, ensure_ascii=False), 'merges.txt': '#version: 0.2\n' + '\n'.join(merges) + '\n',
            'tokenizer_config.json': json.dumps(config, indent=2)}


# -----------------------------------------------------------------------------
# The model card, and the folder written whole


def tokenizing_note(meta):
    """How to turn text into this model's token ids, for the model card."""
    kind = meta['tokenizer']
    if kind == 'gpt2':
        return ("gpt2 BPE: `AutoTokenizer.from_pretrained(folder)` loads it (vocab.json, merges.txt). The model was "
                "trained on tiktoken's `encode_ordinary`, which reads a literal `<|endoftext|>` in the text as plain "
                "text; transformers' tokenizer makes it the special token.")
    if kind == 'bytes':
        return ("bytes: no tokenizer files; token i is the byte i, so `ids = list(text.encode('utf-8'))` and "
                "`text = bytes(ids).decode('utf-8', errors='replace')`.")
    return ("characters: no tokenizer files; token i is the i-th character of `data_chars` in config.json, so "
            "`ids = [chars.index(c) for c in text]` and `text = ''.join(chars[i] for i in ids)` (any other "
            "character has no token).")


def model_card(config, meta, step):
    experts = (f", {config['num_experts']} experts top-{config['num_experts_per_tok']}"
               f"{' (PolyCom coefficients per expert)' if config['poly_per_expert'] else ''}" if config['num_experts'] else '')
    return f"""# PolyCom GPT: {config['hidden_act']}

A GPT with the {config['hidden_act']} activation{experts}: {config['num_hidden_layers']} layers, hidden size
{config['hidden_size']}, {config['num_attention_heads']} heads, context {config['max_position_embeddings']} tokens,
trained {step:,} steps on {meta.get('source', 'data of tokenizer ' + meta['tokenizer'])}.

```python
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
```

- Tokenizing: {tokenizing_note(meta)}
- Generation: `model.generate` works without a KV cache: each new token recomputes the whole context window.
- Loss: with `labels`, the mean next-token cross-entropy only (an MoE's auxiliary losses are not added).
- Weights in float32, as trained.
{lm_eval_note(meta)}"""


def lm_eval_note(meta):
    if meta['tokenizer'] != 'gpt2':  # lm-eval tokenizes with the folder's tokenizer
        return "\nlm-evaluation-harness needs a tokenizer that transformers loads, which byte and character data lack.\n"
    return ("\nScore it with lm-evaluation-harness:\n"
            "`lm_eval --model hf --model_args pretrained=FOLDER,trust_remote_code=True --tasks hellaswag,arc_easy,piqa`\n")


def is_export(path):
    """Whether path is a folder this script wrote (its config.json names the model type)."""
    try:
        with open(os.path.join(path, 'config.json')) as f:
            return json.load(f).get('model_type') == 'polycom'
    except (OSError, ValueError, AttributeError):
        return False


def export(out_dir, to, overwrite=False):
    """Write the export of out_dir's checkpoint to the folder `to`, whole: built beside it as to + '.tmp', then
    renamed. An existing non-empty `to` is replaced only with overwrite, and only when it is an earlier export."""
    to = os.path.normpath(to)
    if os.path.exists(to) and not (os.path.isdir(to) and not os.listdir(to)):
        if not overwrite:
            raise FileExistsError(f"--to={to} exists and is not empty; export to a new folder, or add --overwrite "
                                  "to replace an earlier export there")
        if not is_export(to):
            raise FileExistsError(f"--to={to} holds something other than an export of export_hf.py, which "
                                  "--overwrite does not replace; export to a new or empty folder")
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ImportError("export_hf.py writes the weights with safetensors: pip install safetensors") from None
    ckpt = load_checkpoint(out_dir)
    model, meta = ckpt['model'], ckpt['meta']
    config = hf_config(model, meta)
    tmp = to + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)  # a killed export's leftovers
    os.makedirs(tmp)
    files = gpt2_tokenizer_files(model.config.block_size) if meta['tokenizer'] == 'gpt2' else {}
    files.update({'config.json': json.dumps(config, indent=2), 'README.md': model_card(config, meta, ckpt['step'])})
    for name, text in files.items():
        with open(os.path.join(tmp, name), 'w', encoding='utf-8') as f:
            f.write(text)
    shutil.copy(MODELING, tmp)
    save_file(hf_weights(model), os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
    if os.path.exists(to):  # empty, or an earlier export that overwrite replaces
        shutil.rmtree(to)
    os.replace(tmp, to)
    return to


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a checkpoint as a Hugging Face transformers model folder.")
    parser.add_argument('--out_dir', default='out', help="the training run's out_dir (default: out)")
    parser.add_argument('--to', required=True, help="the folder to write (new or empty)")
    parser.add_argument('--overwrite', action='store_true', help="replace an earlier export in --to")
    args = parser.parse_args(argv)
    try:
        to = export(args.out_dir, args.to, args.overwrite)
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # no or bad checkpoint, --to taken, a missing package
        raise SystemExit(f"export_hf.py: {e}") from None
    print(f"wrote {to}: load it with AutoModelForCausalLM.from_pretrained({to!r}, trust_remote_code=True)")


if __name__ == '__main__':
    main()
