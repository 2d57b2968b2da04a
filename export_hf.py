"""
Export a trained checkpoint as a Hugging Face transformers model folder.

    python export_hf.py --out_dir=out --to=hf_out
    python export_hf.py --out_dir=out/dense_1b_polynorm --to=exports/dense_1b_polynorm --overwrite   # replace one

The folder holds config.json, the weights as model.safetensors (float32, as trained), modeling_polycom.py (this
project's forward restated for transformers, copied from hf/), the data's tokenizer (gpt2 BPE, bytes or
characters) for AutoTokenizer, generation_config.json where the data has an end-of-text token, and a README.md
(the model card). Then:

    AutoModelForCausalLM.from_pretrained('hf_out', trust_remote_code=True)
    lm_eval --model hf --model_args pretrained=hf_out,trust_remote_code=True --tasks hellaswag,arc_easy,piqa

Writing the folder needs safetensors and tokenizers (which transformers installs); loading it needs transformers.
Either kind of checkpoint is read (ckpt.pt, or the sharded ckpt/ of an fsdp run).
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
        'num_attention_heads': cfg.n_head, 'n_positions': cfg.block_size,
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


def generation_config(meta):
    """generation_config.json: the end-of-text token, which also pads finished rows (else generate says it chose
    so, each call). No max_length: generate would then warn of two lengths whenever max_new_tokens is given."""
    eot = meta['eot']
    return {'bos_token_id': eot, 'eos_token_id': eot, 'pad_token_id': eot}


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
    return {'vocab.json': json.dumps(vocab, ensure_ascii=False),
            'merges.txt': '#version: 0.2\n' + '\n'.join(merges) + '\n',
            'tokenizer_config.json': json.dumps(config, indent=2)}


def plain_tokenizer_files(meta, block_size):
    """{file name: text} of a tokenizer with exactly the data's vocabulary and no merges, for AutoTokenizer.
    Bytes: token i is byte i, spelled in GPT-2's stand-ins, into which the byte-level step maps UTF-8 text.
    Characters: token i is data_chars[i]; a character outside them has no token and is left out.
    The special token <|endoftext|> is the data's end-of-text id (meta's eot, which starts each document) in place
    of its byte or character; data without one gets it after its own ids, for lm-eval, which needs one (to stop
    generation at, to start an empty context from), while the model never predicts it."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    except ImportError:
        raise ImportError("export_hf.py writes the tokenizer with tokenizers: pip install tokenizers") from None
    eot = '<|endoftext|>'
    spelled = [byte_symbols()[b] for b in range(256)] if meta['tokenizer'] == 'bytes' else list(meta['chars'])
    if meta.get('eot') is not None:
        spelled[meta['eot']] = eot
    tokenizer = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(spelled)}, merges=[]))
    if meta['tokenizer'] == 'bytes':
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
    else:
        tokenizer.decoder = decoders.Fuse()  # the characters joined as they are, no spaces between
    tokenizer.add_special_tokens([AddedToken(eot, special=True)])  # the id above, else the next one
    config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'eos_token': eot, 'model_max_length': block_size,
              'clean_up_tokenization_spaces': False}  # decoded text as the tokens spell it
    return {'tokenizer.json': tokenizer.to_str(), 'tokenizer_config.json': json.dumps(config, indent=2)}


# -----------------------------------------------------------------------------
# The model card, and the folder written whole


def tokenizing_note(meta):
    """How this model's tokenizer reads text, for the model card."""
    kind = meta['tokenizer']
    if kind == 'gpt2':
        return ("gpt2 BPE (vocab.json, merges.txt). The model was trained on tiktoken's `encode_ordinary`, which "
                "reads a literal `<|endoftext|>` in the text as plain text; transformers' tokenizer makes it the "
                "special token.")
    end = (f" Token {meta['eot']}, which starts each document in the data, is `<|endoftext|>`, where generation "
           "stops." if meta.get('eot') is not None else " `<|endoftext|>` is the tokenizer's alone, for lm-eval.")
    if kind == 'bytes':
        return "bytes (tokenizer.json): token i is the byte i of the text's UTF-8." + end
    return ("characters (tokenizer.json): token i is the i-th character of `data_chars` in config.json; a "
            "character not among them has no token and is left out." + end)


def model_card(config, meta, step):
    per_expert = ' (PolyCom coefficients per expert)' if config['poly_per_expert'] else ''
    experts = (f", {config['num_experts']} experts top-{config['num_experts_per_tok']}{per_expert}"
               if config['num_experts'] else '')
    return f"""# PolyCom GPT: {config['hidden_act']}

A GPT with the {config['hidden_act']} activation{experts}: {config['num_hidden_layers']} layers, hidden size
{config['hidden_size']}, {config['num_attention_heads']} heads, context {config['n_positions']} tokens,
trained {step:,} steps on {meta.get('source', 'data of tokenizer ' + meta['tokenizer'])}.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
print(pipeline('text-generation', model=model, tokenizer=tokenizer)('def ', max_new_tokens=50, do_sample=False))
```

- Tokenizer: {tokenizing_note(meta)}
- Generation: a KV cache while the sequence is shorter than the context; past it the window slides, and each new
  token recomputes the last {config['n_positions']} tokens (the cached keys were rotated at positions that have
  since shifted).
- Loss: with `labels`, the mean next-token cross-entropy only (an MoE's auxiliary losses are not added).
- Weights in float32, as trained.

Score it with lm-evaluation-harness (generative tasks: `--gen_kwargs max_gen_toks=N`, N well below the context):
`lm_eval --model hf --model_args pretrained=FOLDER,trust_remote_code=True --tasks hellaswag,arc_easy,piqa`
"""


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
    config, block_size = hf_config(model, meta), model.config.block_size
    files = gpt2_tokenizer_files(block_size) if meta['tokenizer'] == 'gpt2' else plain_tokenizer_files(meta, block_size)
    files.update({'config.json': json.dumps(config, indent=2), 'README.md': model_card(config, meta, ckpt['step'])})
    if meta.get('eot') is not None:
        files['generation_config.json'] = json.dumps(generation_config(meta), indent=2)
    tmp = to + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)  # a killed export's leftovers
    os.makedirs(tmp)
    try:
        for name, text in files.items():
            with open(os.path.join(tmp, name), 'w', encoding='utf-8') as f:
                f.write(text)
        shutil.copy(MODELING, tmp)
        save_file(hf_weights(model), os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
    except BaseException:  # a full disk, an interrupt: no half-written folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
