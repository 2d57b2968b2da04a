"""
Tests for export_hf.py and the modeling code it copies (hf/modeling_polycom.py): transformers' logits, loss and
greedy generation (with its KV cache, and past the context) equal model.py's for every activation, dense and MoE;
an export loads with this folder first on sys.path; the gpt2 tokenizer files tokenize as tiktoken; the byte and
character tokenizers give sample.py's text through pipeline; lm-evaluation-harness scores a local task as eval.py
does, for every tokenizer; bad inputs stop with one line.

    python -m pytest -q test_export_hf.py

The transformers tests skip where transformers (or safetensors) is not installed, the lm-eval one where
lm-eval is not: pip install transformers safetensors "lm_eval[hf]". .ci/run also runs them under the newest
transformers release.
"""
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

import export_hf
import sample
from checkpoint import atomic_save
from data import tasks
from data.shards import get_tokenizer, gpt2_meta
from model import ACTIVATIONS, GPT, GPTConfig

ROOT = os.path.dirname(os.path.abspath(__file__))
TIKTOKEN_CACHE = os.path.join(ROOT, '..', 'shared', 'tiktoken_cache')  # offline gpt2 files, where there is a copy
TASK = os.path.join(ROOT, 'hf', 'lm_eval_task')
BYTES = {'tokenizer': 'bytes', 'vocab_size': 256}


def chars_meta(text):
    """A char tokenizer's meta over the characters of text."""
    chars = ''.join(sorted(set(text)))
    return {'tokenizer': 'char', 'vocab_size': len(chars), 'chars': chars}

needs_safetensors = pytest.mark.skipif(
    importlib.util.find_spec('safetensors') is None,
    reason="export_hf.py writes the weights with safetensors: pip install safetensors")
needs_transformers = pytest.mark.skipif(importlib.util.find_spec('transformers') is None or
                                        importlib.util.find_spec('safetensors') is None,
                                        reason="loading the export needs transformers: "
                                               "pip install transformers safetensors")


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


@pytest.fixture
def gpt2(monkeypatch):
    """tiktoken's gpt2 encoding, offline from ../shared when it is there; skip when it cannot load."""
    if os.path.isdir(TIKTOKEN_CACHE):
        monkeypatch.setenv('TIKTOKEN_CACHE_DIR', os.path.realpath(TIKTOKEN_CACHE))
    try:
        return get_tokenizer(gpt2_meta('test'))
    except (ImportError, RuntimeError) as e:
        pytest.skip(f"tiktoken's gpt2 encoding is unavailable offline: {e}")


def tiny_gpt(activation='polynorm', moe=False, vocab_size=256, block_size=16, **overrides):
    """A 2-layer model whose every parameter matters: weights drawn wide enough for decisive logits, and the
    PolyCom coefficients and norm scales moved off their initial values (1/r, 0, 1), which a swapped or
    dropped coefficient would otherwise hide. MoE: 4 experts top-2, per-expert PolyCom coefficients, qk-norm
    and tied embeddings, so that each of those is exported too."""
    moe_args = dict(n_experts=4, top_k=2, moe_ffn_hidden=24, qk_norm=True, tie_embeddings=True,
                    poly_per_expert=activation.startswith('poly')) if moe else {}
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16, ffn_hidden=32,
                    activation=activation, act_impl='plain', init_std=0.3, **{**moe_args, **overrides})
    model = GPT(cfg).eval()
    poly = {id(p) for p in model.polycom_params()}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() < 2 or id(p) in poly:
                p.add_(0.3 * torch.randn_like(p))
    return model


def save(model, out_dir, meta=BYTES, step=7):
    """out_dir/ckpt.pt as train.py writes it, as far as load_checkpoint reads it."""
    os.makedirs(out_dir, exist_ok=True)
    atomic_save({'model': model.state_dict(), 'config': asdict(model.config), 'meta': meta, 'step': step},
                os.path.join(out_dir, 'ckpt.pt'))
    return str(out_dir)


def export(model, tmp_path, meta=BYTES):
    out, to = save(model, tmp_path / 'out', meta), str(tmp_path / 'hf')
    export_hf.main([f'--out_dir={out}', f'--to={to}'])
    return to


def load_hf(folder):
    """The export through AutoModelForCausalLM, every parameter filled from the file and none left over."""
    from transformers import AutoModelForCausalLM
    model, info = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    assert not any(info[key] for key in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    return model.eval()


def refuse(argv):
    """export_hf.main's one-line message for argv."""
    with pytest.raises(SystemExit) as stop:
        export_hf.main(argv)
    message = str(stop.value.code)
    assert message.startswith('export_hf.py: ') and '\n' not in message
    return message


# -----------------------------------------------------------------------------
# the export equals model.py


def test_every_parameter_gets_a_name_of_its_own():
    """hf_name maps model.py's parameters one-to-one, for a dense model and an MoE of every kind of parameter."""
    for model in (tiny_gpt('polynorm_glu', qk_norm=True), tiny_gpt('polynorm_glu', moe=True)):
        names = [export_hf.hf_name(name) for name, _ in model.named_parameters()]
        assert len(set(names)) == len(names)
    assert export_hf.hf_name('blocks.1.ffn.w_gate') == 'model.layers.1.mlp.gate_proj'
    assert export_hf.hf_name('blocks.0.attn.qkv.weight') == 'model.layers.0.self_attn.qkv_proj.weight'


@needs_transformers
@pytest.mark.parametrize('moe', [False, True], ids=['dense', 'moe'])
@pytest.mark.parametrize('activation', ACTIVATIONS)
def test_transformers_computes_what_model_py_computes(activation, moe, tmp_path):
    model = tiny_gpt(activation, moe)
    hf = load_hf(export(model, tmp_path))
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, losses = model(x[:, :-1], x[:, 1:])  # with targets, model.py gives every position's logits
        out = hf(x[:, :-1])
        hf_loss = hf(x, labels=x).loss  # transformers' convention: labels are the inputs, shifted inside
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(hf_loss, losses['lm'], rtol=0, atol=1e-5)
    # greedy, 20 tokens after 5: past block_size=16, so the window slides in both; sample.py --temperature=0
    # runs model.generate so
    prompt = x[:, :5]
    expected = model.generate(prompt, 20, temperature=0)
    got = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False)
    assert got.tolist() == expected.tolist()


@needs_transformers
def test_padded_rows_compute_what_they_compute_alone(tmp_path):
    """A left-padded batch (attention_mask 0 on the padding): each row's logits and greedy tokens are those of
    the row alone, as batched generation and lm-eval's generation tasks need."""
    hf = load_hf(export(tiny_gpt(), tmp_path))
    long, short = torch.randint(0, 256, (8,)), torch.randint(0, 256, (5,))
    batch = torch.stack([long, torch.cat([torch.zeros(3, dtype=torch.long), short])])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    with torch.no_grad():
        padded = hf(batch, attention_mask=mask).logits
        alone = [hf(row[None]).logits[0] for row in (long, short)]
    torch.testing.assert_close(padded[0], alone[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(padded[1, 3:], alone[1], rtol=0, atol=1e-5)
    got = hf.generate(batch, attention_mask=mask, max_new_tokens=12, do_sample=False)  # slides past 16
    for row, prompt in zip(got, (long, short)):
        expected = hf.generate(prompt[None], max_new_tokens=12, do_sample=False)[0]
        assert row[-12:].tolist() == expected[-12:].tolist()


@needs_transformers
@pytest.mark.parametrize('moe', [False, True], ids=['dense', 'moe'])
def test_generate_uses_the_cache_until_the_window_slides(moe, tmp_path):
    """generate feeds the model the prompt, then one token a step while the sequence is shorter than the context
    (16), then the last 16 tokens a step (the cached keys' positions shifted), as sample.py does; a cached
    forward gives the logits of the whole sequence's, and logits_to_keep keeps the last ones."""
    model = tiny_gpt('polynorm_glu', moe)
    hf = load_hf(export(model, tmp_path))
    fed = []
    hook = hf.register_forward_pre_hook(lambda module, args, kwargs: fed.append(kwargs['input_ids'].shape[1]),
                                        with_kwargs=True)
    prompt = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(2))
    got = hf.generate(prompt, max_new_tokens=20, do_sample=False)
    hook.remove()
    assert fed == [5] + [1] * 10 + [16] * 9
    assert got.tolist() == model.generate(prompt, 20, temperature=0).tolist()

    x = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = hf(x).logits
        out = hf(x[:, :7], use_cache=True)  # then 4 tokens at once after the cached ones, then 1
        cache = out.get('cache', out.get('past_key_values'))  # its name in newer transformers, and in older
        parts = [out.logits, hf(x[:, 7:11], past_key_values=cache).logits, hf(x[:, 11:], past_key_values=cache).logits]
        last = hf(x, logits_to_keep=1).logits
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-5)
    assert cache.get_seq_length() == 12
    torch.testing.assert_close(last, whole[:, -1:], rtol=0, atol=1e-6)


@needs_transformers
def test_an_export_loads_with_this_folder_first_on_sys_path(tmp_path):
    """As scripts and `python -m lm_eval` run from this folder have it: no module here may take a name that
    transformers imports (transformers 5 imports the Hugging Face package `kernels` wherever it finds one)."""
    to = export(tiny_gpt(), tmp_path)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from transformers import AutoModelForCausalLM, PreTrainedModel; "
            "model = AutoModelForCausalLM.from_pretrained(sys.argv[2], trust_remote_code=True); "
            "print(isinstance(model, PreTrainedModel))")
    run = subprocess.run([sys.executable, '-c', code, ROOT, to], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert run.returncode == 0 and run.stdout.split()[-1:] == ['True'], run.stderr[-3000:]


@needs_safetensors
@pytest.mark.filterwarnings('ignore:torch.distributed is disabled')  # saving in one process is the point here
def test_a_sharded_checkpoint_exports_the_same_weights(tmp_path):
    """The sharded ckpt/ of an fsdp run (written here in one process) gives the same model.safetensors."""
    from safetensors.torch import load_file
    from torch.distributed import checkpoint as dcp
    model = tiny_gpt('polyrelu', moe=True)
    single = export(model, tmp_path / 'single')
    sharded = tmp_path / 'sharded' / 'ckpt'
    dcp.save({'model': model.state_dict()}, checkpoint_id=str(sharded), no_dist=True)
    atomic_save({'config': asdict(model.config), 'meta': BYTES, 'step': 7}, str(sharded / 'extra.pt'))
    export_hf.main([f'--out_dir={sharded.parent}', f'--to={tmp_path / "hf"}'])
    a, b = (load_file(os.path.join(folder, 'model.safetensors')) for folder in (single, tmp_path / 'hf'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -----------------------------------------------------------------------------
# tokenizers


@needs_transformers
def test_gpt2_data_gets_a_tokenizer_that_tokenizes_as_tiktoken(gpt2, tmp_path):
    from transformers import AutoTokenizer
    encode, _ = gpt2
    to = export(tiny_gpt(vocab_size=50304), tmp_path, gpt2_meta('test'))
    tokenizer = AutoTokenizer.from_pretrained(to, trust_remote_code=True)
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()  # prose, code, tables, symbols, non-ASCII characters, runs of spaces and newlines
    # the one known difference: transformers reads a literal <|endoftext|> as the special token, tiktoken's
    # encode_ordinary (the training data's) as text
    text = text.replace('<|endoftext|>', '')
    assert tokenizer(text)['input_ids'] == encode(text)
    with open(os.path.join(to, 'config.json')) as f:
        config = json.load(f)
    with open(os.path.join(to, 'generation_config.json')) as f:
        generation = json.load(f)
    assert config['eos_token_id'] == tokenizer.eos_token_id == generation['eos_token_id'] == 50256
    assert config['data_tokenizer'] == 'gpt2'


@needs_transformers
@pytest.mark.parametrize('kind', ['bytes', 'char'])
def test_pipeline_writes_sample_py_text_for_bytes_and_characters(kind, tmp_path, capfd):
    """The byte and character tokenizers: pipeline('text-generation') on the folder alone gives sample.py
    --temperature=0's text, past the context (9 + 20 tokens, context 14), and no reminder of a maximum length
    (the window slides correctly there)."""
    prompt = 'def f(x):'
    meta = BYTES if kind == 'bytes' else chars_meta(prompt + ' return x * 2\n')
    to = export(tiny_gpt(vocab_size=meta['vocab_size'], block_size=14), tmp_path, meta)
    capfd.readouterr()
    sample.main([f'--out_dir={tmp_path / "out"}', f'--start={prompt}', '--temperature=0', '--num_samples=1',
                 '--max_new_tokens=20', '--device=cpu'])
    expected = capfd.readouterr().out.split('\n' + '-' * 40 + '\n')[0]
    from transformers import pipeline
    generate = pipeline('text-generation', model=to, trust_remote_code=True)
    got = generate(prompt, max_new_tokens=20, do_sample=False)[0]['generated_text']
    assert got == expected and len(expected) > len(prompt)
    assert 'maximum length' not in capfd.readouterr().err


@needs_transformers
@pytest.mark.parametrize('kind', ['bytes', 'bytes_eot', 'char'])
def test_byte_and_char_tokenizers_spell_the_data_tokens(kind, tmp_path):
    """Token i is byte i (UTF-8, non-ASCII included) or data_chars[i]; decoding gives the text back. The end of
    text is the data's eot where it has one (as data/stdlib's NUL byte), else an id past the data's."""
    from transformers import AutoTokenizer
    text = 'Grüße,\n\t  naïve café ≠ 42' if kind != 'char' else 'to be, or not\n\tto be '
    meta = {'bytes': BYTES, 'bytes_eot': {**BYTES, 'eot': 0}, 'char': chars_meta(text)}[kind]
    to = export(tiny_gpt(vocab_size=meta['vocab_size']), tmp_path, meta)
    tokenizer = AutoTokenizer.from_pretrained(to, trust_remote_code=True)
    encode, _ = get_tokenizer(meta)
    ids = tokenizer(text)['input_ids']
    assert ids == encode(text) and tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == meta.get('eot', meta['vocab_size'])
    assert tokenizer.decode([*ids, tokenizer.eos_token_id], skip_special_tokens=True) == text
    with open(os.path.join(to, 'config.json')) as f:
        config = json.load(f)
    assert config['data_tokenizer'] == meta['tokenizer'] and config.get('eos_token_id') == meta.get('eot')
    assert os.path.exists(os.path.join(to, 'generation_config.json')) == (kind == 'bytes_eot')


# -----------------------------------------------------------------------------
# lm-evaluation-harness


@needs_transformers
@pytest.mark.parametrize('kind', ['gpt2', 'bytes', 'char'])
def test_lm_eval_scores_a_task_as_eval_py_does(kind, tmp_path, monkeypatch, request):
    """lm-eval through the export, offline on hf/lm_eval_task (a task YAML over a jsonl in this project's
    generic format), against data/tasks.py (eval.py's scoring) on the same checkpoint, for each tokenizer: the
    same log-likelihood for every choice, so the same acc. acc_norm differs by design: lm-eval divides a
    choice's log-likelihood by its characters, eval.py by its tokens; lm-eval's equals eval.py's losses divided
    by characters."""
    items = tasks.read_items(os.path.join(TASK, 'mc_tiny.jsonl'))
    if kind == 'gpt2':
        request.getfixturevalue('gpt2')
    meta = {'gpt2': gpt2_meta('test'), 'bytes': {**BYTES, 'eot': 0},  # data/stdlib's, the quick start's
            'char': chars_meta(''.join(item['context'] + ''.join(item['choices']) for item in items))}[kind]
    for name, value in (('HF_DATASETS_OFFLINE', '1'), ('HF_HUB_OFFLINE', '1'),
                        ('HF_DATASETS_CACHE', str(tmp_path / 'datasets'))):
        monkeypatch.setenv(name, value)
    lm_eval = pytest.importorskip('lm_eval', reason='lm-evaluation-harness is not installed: pip install "lm_eval[hf]"')
    pytest.importorskip('accelerate', reason="lm-eval's hf model needs accelerate: pip install \"lm_eval[hf]\"")
    from lm_eval.tasks import TaskManager

    model = tiny_gpt(vocab_size=50304 if kind == 'gpt2' else meta['vocab_size'], block_size=128)
    to = export(model, tmp_path, meta)
    task = tasks.load_task(os.path.join(TASK, 'mc_tiny.jsonl'), meta, model.config.block_size)
    ours = tasks.evaluate_task(model, task, batch_size=4)
    losses = [tasks.choice_losses(model, rows).tolist() for rows, _ in task['items']]

    monkeypatch.chdir(ROOT)  # the YAML names its jsonl relative to the working directory: the project's root
    out = lm_eval.simple_evaluate(model='hf', model_args=f'pretrained={to},trust_remote_code=True',
                                  tasks=['mc_tiny'],
                                  task_manager=TaskManager(include_path=TASK, include_defaults=False), device='cpu',
                                  batch_size=4, bootstrap_iters=0, log_samples=True)
    theirs = out['results']['mc_tiny']
    samples = sorted(out['samples']['mc_tiny'], key=lambda s: s['doc_id'])
    assert len(samples) == ours['n'] == 12
    for scored, item_losses in zip(samples, losses):
        assert [-ll for ll, _ in scored['filtered_resps']] == pytest.approx(item_losses, abs=1e-4)
    assert theirs['acc,none'] == ours['acc'] and 0 < ours['acc'] < 1  # a score that could have differed

    by_chars = [min(range(len(item['choices'])), key=lambda k: item_losses[k] / len(item['choices'][k]))
                == item['label'] for item, item_losses in zip(items, losses)]
    assert theirs['acc_norm,none'] == pytest.approx(sum(by_chars) / len(items))


# -----------------------------------------------------------------------------
# bad inputs: one line, and nothing a user made is touched


def test_no_checkpoint_is_one_line(tmp_path):
    message = refuse([f'--out_dir={tmp_path}', f'--to={tmp_path / "hf"}'])
    assert 'no checkpoint' in message and not os.path.exists(tmp_path / 'hf')
    run = subprocess.run([sys.executable, 'export_hf.py', f'--out_dir={tmp_path}', f'--to={tmp_path / "hf"}'],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert run.returncode == 1 and run.stderr.count('\n') == 1 and 'Traceback' not in run.stderr


@needs_safetensors
def test_a_folder_in_the_way_is_never_overwritten(tmp_path):
    out = save(tiny_gpt(), tmp_path / 'out')
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep me')
    for extra in ([], ['--overwrite']):  # not an export: --overwrite does not replace it either
        message = refuse([f'--out_dir={out}', f'--to={mine}', *extra])
        assert ('--overwrite' in message) and (mine / 'notes.txt').read_text() == 'keep me'
    assert sorted(os.listdir(mine)) == ['notes.txt']
    empty = tmp_path / 'empty'
    empty.mkdir()
    export_hf.main([f'--out_dir={out}', f'--to={empty}'])  # an empty folder is fine
    (empty / 'stale.txt').write_text('from before')
    refuse([f'--out_dir={out}', f'--to={empty}'])
    export_hf.main([f'--out_dir={out}', f'--to={empty}', '--overwrite'])  # an earlier export is replaced whole
    assert 'stale.txt' not in os.listdir(empty) and 'model.safetensors' in os.listdir(empty)


@needs_safetensors
def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    """A write that fails (here a full disk) stops with one line, and no half-written <to>.tmp stays."""
    out = save(tiny_gpt(), tmp_path / 'out')

    def full_disk(*args, **kwargs):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr('safetensors.torch.save_file', full_disk)
    message = refuse([f'--out_dir={out}', f'--to={tmp_path / "hf"}'])
    assert 'No space left' in message and sorted(os.listdir(tmp_path)) == ['out']


def test_without_safetensors_it_says_what_to_install(tmp_path, monkeypatch):
    out = save(tiny_gpt(), tmp_path / 'out')
    monkeypatch.setitem(sys.modules, 'safetensors.torch', None)  # as if it were not installed
    message = refuse([f'--out_dir={out}', f'--to={tmp_path / "hf"}'])
    assert 'pip install safetensors' in message and not os.path.exists(tmp_path / 'hf')
