"""
The paper's two analyses of a trained model, for any checkpoint that train.py wrote:

  1. the effective rank of each layer's FFN weights. PolyCom is said to give higher-rank weights, i.e. the
     FFN uses more independent directions of its space.
  2. the cosine similarity between the hidden states that different layers output. PolyCom is said to give
     lower layer-to-layer similarity, i.e. consecutive layers change the representation more.

    python analyze.py --out_dir out/sweep/polynorm_s0 [--out_dir out/sweep/swiglu_s0 ...]
        [--data_dir data/shakespeare_char] [--batch_size 8] [--device cpu] [--json FILE] [--no_plot]

Prints both analyses and draws the similarity matrix as a heatmap, <out_dir>/similarity.png, when
matplotlib is installed. --json FILE also writes each run's summary (mean effective rank per role, mean
layer similarity, parameters) as {out_dir: numbers}: sweep.py runs this script so for its report.
"""
import argparse
import glob
import json
import math
import os

import torch
import torch.nn.functional as F

from checkpoint import load_checkpoint
from common import pyplot, save_figure
from data.shards import ShardLoader, atomic_write
from model import MoE

ROOT = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------
# 1. Effective rank of the FFN weights
#
# With singular values s_1..s_n of a matrix, p_i = s_i / sum_j s_j is a distribution over its directions and
#   erank = exp(-sum_i p_i log p_i),
# the exponential of its entropy: n when all singular values are equal, 1 when one direction carries
# everything. Unlike the usual rank it does not count the many tiny singular values a trained matrix has.


def effective_rank(w):
    """The entropy-based effective rank of a 2-D matrix, between 1 and min(w.shape)."""
    if w.dim() != 2:
        raise ValueError(f"effective rank needs a 2-D matrix, got shape {tuple(w.shape)}")
    s = torch.linalg.svdvals(w.detach().double())
    if s.sum() == 0:
        raise ValueError("a zero matrix has no effective rank (its singular values are all 0)")
    p = s / s.sum()
    p = p[p > 0]  # 0 * log 0 counts as 0
    return math.exp(-(p * p.log()).sum().item())


def ffn_matrices(ffn):
    """The FFN's weight matrices by role ('up', 'down', and 'gate' for SwiGLU): a list each, holding one
    matrix for a dense FFN and one per expert for a Mixture of Experts."""
    if isinstance(ffn, MoE):
        by_role = {'up': ffn.w_up, 'down': ffn.w_down, 'gate': ffn.w_gate}  # (E, in, out) each
        return {role: list(w) for role, w in by_role.items() if w is not None}
    by_role = {'up': ffn.up, 'down': ffn.down, 'gate': ffn.gate}
    return {role: [linear.weight] for role, linear in by_role.items() if linear is not None}


def ffn_effective_ranks(model):
    """One dict per layer, role -> effective rank; for MoE layers the mean over the layer's experts."""
    ranks = []
    for block in model.blocks:
        layer = {}
        for role, mats in ffn_matrices(block.ffn).items():
            layer[role] = sum(effective_rank(w) for w in mats) / len(mats)
        ranks.append(layer)
    return ranks


# -----------------------------------------------------------------------------
# 2. Layer-to-layer similarity of hidden states
#
# Run one batch through the model, keep what every block writes to the residual stream, and compare
# every pair of layers (i, j) token by token: S[i, j] = mean over tokens of cos(h_i[token], h_j[token]).


@torch.no_grad()
def hidden_states(model, idx):
    """The output of each block for the token ids idx (B, T): a list of n_layer tensors (B, T, C)."""
    outputs = []
    # a Block returns (x, aux): keep x, the residual stream after the block
    hooks = [block.register_forward_hook(lambda module, inputs, output: outputs.append(output[0].float()))
             for block in model.blocks]
    try:
        model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def layer_similarity(hiddens):
    """The (L, L) matrix of mean per-token cosine similarity between L hidden states, each (B, T, C)."""
    if len({h.shape for h in hiddens}) != 1:
        raise ValueError(f"hidden states must all have one shape, got {sorted({tuple(h.shape) for h in hiddens})}")
    unit = torch.stack([F.normalize(h.flatten(0, -2).float(), dim=-1) for h in hiddens])  # (L, N, C), N = B*T
    return torch.einsum('inc,jnc->ij', unit, unit) / unit.size(1)  # (L, L)


def mean_off_diagonal(matrix):
    """The mean of a square matrix's entries off its diagonal (the diagonal of a similarity is always 1)."""
    n = matrix.size(0)
    if n < 2:
        raise ValueError("a 1 x 1 matrix has no off-diagonal entries: the model needs at least 2 layers")
    return ((matrix.sum() - matrix.diagonal().sum()) / (n * (n - 1))).item()


# -----------------------------------------------------------------------------
# Both analyses for a checkpoint


def validation_batch(data_dir, batch_size, block_size, vocab_size):
    """The first batch_size x block_size tokens of the validation split: the same batch for every model."""
    pattern = os.path.join(glob.escape(data_dir), '*_val_*.bin')
    x, _ = ShardLoader(pattern, batch_size, block_size, vocab_size=vocab_size).next_batch()
    return x  # (B, T)


def analyze(out_dir, data_dir=None, batch_size=8, device='cpu'):
    """Load out_dir's checkpoint and analyze it: {'erank': one dict of effective ranks per layer, 'similarity':
    the (L, L) matrix, 'moe': whether the FFNs are MoE, 'params': the parameter count}. data_dir defaults to
    the run's own (from its config)."""
    ckpt = load_checkpoint(out_dir, device=device)  # the model in eval mode
    model, config = ckpt['model'], ckpt['config']
    if data_dir is None:
        data_dir = config.get('data_dir')
        if not data_dir or not os.path.isdir(data_dir):  # trained on another machine: look beside this file
            data_dir = os.path.join(ROOT, 'data', config['dataset'])
    idx = validation_batch(data_dir, batch_size, model.config.block_size, model.config.vocab_size)
    similarity = layer_similarity(hidden_states(model, idx.to(device))).cpu()
    return {'erank': ffn_effective_ranks(model), 'similarity': similarity,
            'moe': isinstance(model.blocks[0].ffn, MoE), 'params': model.num_params()['total']}


def summarize(result):
    """The one-line summary per model (sweep.py reports it, through --json): mean effective rank of each
    role over layers, and the mean off-diagonal similarity (None for one layer, which has no other)."""
    roles = result['erank'][0].keys()
    summary = {f'erank_{role}': sum(layer[role] for layer in result['erank']) / len(result['erank'])
               for role in roles}
    summary['similarity'] = mean_off_diagonal(result['similarity']) if len(result['similarity']) > 1 else None
    return summary


# -----------------------------------------------------------------------------
# Printing and drawing


def format_analysis(out_dir, result):
    """Both analyses as plain-text tables."""
    roles = list(result['erank'][0])
    lines = [f"== {out_dir}",
             "effective rank of the FFN weights" + (" (mean over each layer's experts)" if result['moe'] else ""),
             "layer " + "".join(f"{role:>9}" for role in roles)]
    for i, layer in enumerate(result['erank']):
        lines.append(f"{i:5d} " + "".join(f"{layer[role]:9.1f}" for role in roles))
    lines += ["cosine similarity of the layers' hidden states (row i, column j: layer i vs layer j)"]
    for i, row in enumerate(result['similarity'].tolist()):
        lines.append(f"{i:5d} " + " ".join(f"{v:5.2f}" for v in row))
    summary = summarize(result)
    lines.append("mean: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if v is not None))
    return '\n'.join(lines)


def plot_similarity(similarity, path, title):
    """Draw the similarity matrix as a heatmap PNG; return False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    n = similarity.size(0)
    fig, ax = plt.subplots(figsize=(4.5, 3.8))
    image = ax.imshow(similarity.numpy(), vmin=0, vmax=1, cmap='viridis')  # one fixed scale: models compare
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel('layer')
    ax.set_ylabel('layer')
    if n <= 12:  # few enough cells to print each value
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{similarity[i, j]:.2f}", ha='center', va='center', fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label='cosine similarity')
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description="Effective rank of FFN weights and layer-to-layer similarity.")
    parser.add_argument('--out_dir', action='append', required=True,
                        help="a run folder holding ckpt.pt; repeat the flag to analyze several")
    parser.add_argument('--data_dir', help="the prepared dataset to take a validation batch from "
                                           "(default: data/<the run's dataset>)")
    parser.add_argument('--batch_size', type=int, default=8, help="sequences in the validation batch")
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--json', help="also write each run's summary numbers to this JSON file")
    parser.add_argument('--no_plot', action='store_true', help="draw no heatmaps")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")

    plotted, numbers = False, {}
    for out_dir in args.out_dir:
        try:
            result = analyze(out_dir, args.data_dir, args.batch_size, args.device)
        except (FileNotFoundError, ValueError) as e:  # no checkpoint, no data, a batch too big for the data...
            parser.error(str(e))
        print(format_analysis(out_dir, result))
        numbers[out_dir] = {**summarize(result), 'params': result['params'], 'moe': result['moe']}
        if args.no_plot:
            continue
        path = os.path.join(out_dir, 'similarity.png')
        plotted = plot_similarity(result['similarity'], path, f"layer similarity, {os.path.basename(out_dir)}")
        if plotted:
            print(f"heatmap: {path}")
    if args.json:
        atomic_write(args.json, json.dumps(numbers, indent=1).encode())
    if not plotted and not args.no_plot:
        print("pip install matplotlib to also get the heatmaps")


if __name__ == '__main__':
    main()
