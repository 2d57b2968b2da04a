"""
Multiple-choice tasks scored by the model's own loss: the downstream evaluation that eval.py runs on a
checkpoint and train.py runs as it goes.

Every task is read into one generic form, a JSON object per line of a .jsonl file:
    {"context": "She opened the oven and", "choices": [" took out the bread.", " sang to it."], "label": 0}
Each choice is scored by the model's cross-entropy over the choice's tokens, given the context: context and
choice are fed together, cut from the left to fit block_size, and only the choice's tokens count. The answer
is the choice with the lowest summed loss (acc) or the lowest mean loss per token (acc_norm).

    load_task(task, meta, block_size)   a task read, checked and tokenized: 'hellaswag' or a generic .jsonl file
    evaluate_task(model, task, batch)   acc and acc_norm with their 95 % intervals, summed over processes
"""
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from data.shards import download, get_tokenizer

# The HellaSwag validation set (10,042 items) as its authors publish it; llm.c's hellaswag.py reads the same file.
HELLASWAG_URL = 'https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl'
HELLASWAG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hellaswag', 'hellaswag_val.jsonl')

# -----------------------------------------------------------------------------
# reading: the generic form, and HellaSwag's published one converted to it


def check_item(item):
    """item, if it is a well-formed generic item; a ValueError saying what is wrong otherwise."""
    if not isinstance(item, dict):
        raise ValueError(f"expected a JSON object, got {type(item).__name__}")
    missing = [key for key in ('context', 'choices', 'label') if key not in item]
    if missing:
        raise ValueError(f"missing {', '.join(repr(key) for key in missing)}; each line needs "
                         "{\"context\": str, \"choices\": [str, ...], \"label\": int}")
    context, choices, label = item['context'], item['choices'], item['label']
    # the first choice token needs a token before it to be predicted from
    if not isinstance(context, str) or not context:
        raise ValueError(f"'context' must be a non-empty string, got {context!r}")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"'choices' must be a list of at least 2 non-empty strings, got {choices!r}")
    if type(label) is not int or not 0 <= label < len(choices):  # `type(...) is`: True is an int to isinstance
        raise ValueError(f"label {label!r} is out of range: it must be an integer in 0..{len(choices) - 1}, "
                         f"the index of the right one of the {len(choices)} choices")
    return {'context': context, 'choices': choices, 'label': label}


def hellaswag_item(record):
    """A record of HellaSwag's published jsonl in the generic form, as the usual completion-style scoring has
    it: the context is 'ctx', each choice is one of the 'endings' after a space."""
    for key in ('ctx', 'endings', 'label'):
        if key not in record:
            raise ValueError(f"missing {key!r}: not a record of HellaSwag's published jsonl")
    endings = record['endings']
    if not isinstance(endings, list) or not all(isinstance(e, str) for e in endings):
        raise ValueError(f"'endings' must be a list of strings, got {endings!r}")
    return {'context': record['ctx'], 'choices': [' ' + e for e in endings], 'label': record['label']}


def read_items(path, convert=None):
    """The checked generic items of a .jsonl file, one per non-blank line, each record first passed through
    convert (e.g. hellaswag_item) if given. A bad line stops with its number."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no task file {path}")
    items = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                items.append(check_item(convert(record) if convert else record))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {number}: not valid JSON ({e.msg} at column {e.colno})") from None
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}, line {number}: {e}") from None
    if not items:
        raise ValueError(f"{path} holds no items; write one JSON object per line")
    return items


def hellaswag_file():
    """data/hellaswag/hellaswag_val.jsonl, downloaded on first use (under torchrun by rank 0, the others wait)."""
    if (not dist.is_initialized() or dist.get_rank() == 0) and not os.path.exists(HELLASWAG_PATH):
        try:
            download(HELLASWAG_URL, HELLASWAG_PATH)
        except RuntimeError as e:  # one line: what failed (download's own words), and the way round it
            raise RuntimeError(f"{str(e).splitlines()[0]}; offline, fetch {HELLASWAG_URL} elsewhere and give it "
                               f"to eval.py with --input=FILE, or put it at {HELLASWAG_PATH}") from None
    if dist.is_initialized():
        dist.barrier()
    return HELLASWAG_PATH


# -----------------------------------------------------------------------------
# tokenizing


def encode_item(item, encode, block_size):
    """(rows, label): one row (tokens, n) per choice, tokens being context + choice cut from the left to
    block_size + 1 tokens (the model reads all but the last, the targets are all but the first) and n the
    number of the choice's tokens at its end."""
    context = encode(item['context'])
    rows = []
    for k, choice in enumerate(item['choices']):
        tokens = encode(choice)
        if len(tokens) > block_size:
            raise ValueError(f"choice {k} is {len(tokens)} tokens, which leaves no room for even one token of "
                             f"context within the model's block_size={block_size}; shorten the choice")
        rows.append(((context + tokens)[-(block_size + 1):], len(tokens)))
    return rows, item['label']


def load_task(task, meta, block_size, path=None, limit=None):
    """{'name', 'path', 'items'}: a task read, checked and tokenized with the tokenizer that meta names.
    task is 'hellaswag' (read from path, else downloaded on first use), 'mc' (the generic file at path), or
    the path of a generic file itself; limit keeps the first limit items."""
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValueError(f"the item limit must be a positive integer, got {limit!r}")
    if task == 'hellaswag':
        name, path = 'hellaswag', path or hellaswag_file()
        items = read_items(path, hellaswag_item)
    else:
        if task == 'mc' and path is None:
            raise ValueError("the 'mc' task reads the generic format from a file: give eval.py --input=FILE")
        if task != 'mc' and path is not None:
            raise ValueError(f"two task files, {task} and {path}: name the file as the task, or use 'mc' and the path")
        path = path if task == 'mc' else task
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no task file {path}: the task is 'hellaswag', or a generic .jsonl file "
                                    "(one {\"context\", \"choices\", \"label\"} object per line)")
        name = os.path.splitext(os.path.basename(path))[0]
        items = read_items(path)
    encode, _ = get_tokenizer(meta)
    encoded = []
    for i, item in enumerate(items[:limit]):
        try:
            encoded.append(encode_item(item, encode, block_size))
        except ValueError as e:
            raise ValueError(f"{path}, item {i + 1}: {e}") from None
    return {'name': name, 'path': path, 'items': encoded}


# -----------------------------------------------------------------------------
# scoring


@torch.no_grad()
def choice_losses(model, rows):
    """Each row's (tokens, n) summed cross-entropy over its last n tokens given the ones before them, (R,)
    float32, from one forward pass over all rows padded on the right (causal attention: padding after a
    row's tokens cannot change them)."""
    device = next(model.parameters()).device
    T = max(len(tokens) for tokens, _ in rows) - 1
    x = torch.zeros(len(rows), T, dtype=torch.long)  # (R, T)
    y = torch.full((len(rows), T), -1, dtype=torch.long)  # (R, T) targets; -1: context or padding, not scored
    for r, (tokens, n) in enumerate(rows):
        tokens = torch.tensor(tokens)
        x[r, :len(tokens) - 1] = tokens[:-1]
        y[r, len(tokens) - 1 - n:len(tokens) - 1] = tokens[-n:]
    x, y = x.to(device), y.to(device)
    logits, _ = model(x, y)  # (R, T, V): with targets, the model returns every position's logits
    scored = y >= 0  # (R, T)
    losses = torch.zeros(y.shape, dtype=torch.float32, device=device)  # (R, T)
    # in float32 whatever precision the forward pass ran in
    losses[scored] = F.cross_entropy(logits[scored].float(), y[scored], reduction='none')
    return losses.sum(dim=1)  # (R,)


def evaluate_task(model, task, batch_size, progress=False):
    """{'n', 'acc', 'acc_norm', 'acc_ci95', 'acc_norm_ci95'} of model on task, batch_size items (all their
    choices) per forward pass. Under torchrun each process scores every world_size-th item and the counts
    are summed, so that any number of processes gives the same result. progress: a line with items/s."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    items, n = task['items'][rank::world_size], len(task['items'])
    device = next(model.parameters()).device
    # every process makes the same number of passes, as FSDP gathers each block's weights with all of them
    passes = math.ceil(math.ceil(n / world_size) / batch_size)
    right, right_norm = 0, 0  # items whose label has the lowest summed loss, the lowest mean loss
    was_training, start = model.training, time.time()
    model.eval()
    for p in range(passes):
        batch = items[p * batch_size:(p + 1) * batch_size]
        batch_rows = [row for rows, _ in batch for row in rows]
        # an idle process (fewer items than the others) still makes the pass, with a stand-in row
        sums = choice_losses(model, batch_rows or [([0, 0], 1)]).tolist()
        for rows, label in batch:
            item_sums, sums = sums[:len(rows)], sums[len(rows):]
            means = [total / n_tokens for total, (_, n_tokens) in zip(item_sums, rows)]
            right += item_sums.index(min(item_sums)) == label
            right_norm += means.index(min(means)) == label
        if progress and rank == 0:
            done = min(n, (p + 1) * batch_size * world_size)
            print(f"\r{task['name']}: {done:,} / {n:,} items, {done / (time.time() - start):,.1f} items/s",
                  end='', file=sys.stderr, flush=True)
    if progress and rank == 0:
        print(file=sys.stderr)
    model.train(was_training)
    counts = torch.tensor([right, right_norm], dtype=torch.float64, device=device)
    if world_size > 1:
        dist.all_reduce(counts)
    result = {'n': n}
    for name, count in zip(('acc', 'acc_norm'), counts.tolist()):
        p = count / n
        result[name] = p
        result[f'{name}_ci95'] = 1.96 * math.sqrt(p * (1 - p) / n)  # the normal approximation's half-width
    return result
