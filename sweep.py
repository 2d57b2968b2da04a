"""
Check the paper's main claim on your own data and hardware: the same model trained with each activation, on
the same data, for the same number of tokens, for several seeds, each at its own best learning rate; then one
report.

    python sweep.py --preset cpu                             # 6 activations x 3 seeds, ~35 min on 2 CPU cores
    python sweep.py --preset cpu-long                        # lr grid, 5 seeds, budget ladder, order ablation
    python sweep.py --preset cpu-stdlib                      # the same on a second corpus (Python source, bytes)
    python sweep.py --preset cpu-scale                       # the size ladder: 3 activations at 4 model sizes
    python sweep.py --preset gpu --lrs 1e-3,2e-3,4e-3 --budgets 0.5,0.7,1 --plan  # what it would run, how long
    python sweep.py --activations polynorm --orders 2,3,4    # PolyNorm's order ablation at one lr
    python sweep.py --preset cpu --max_steps=100             # any --key=value goes on to train.py
    python report.py --out out/sweep                         # the report again, from <out>/summary.json

Each run is a subprocess `python train.py config/sweep_<preset>.py --activation=A --seed=S --out_dir=DIR`
whose output goes to DIR/train.log. DIR is <out>/A_sS, or <out>/A_lr2e-3_sS with an lr grid (--lrs), a rung
of the budget ladder adds _b0.5, and an order-ablation run is named A_r2 (<out>/polynorm_r2_lr2e-3_sS). Only
the activation, its order, the seed, the learning rate and a rung's steps differ between runs; the seed sets
both the initialization and the order in which the data loader shuffles the training windows.

With --lrs the sweep runs every activation at every learning rate with seed GRID_SEED (1000) first (the grid),
picks each activation's lr by its final validation loss, and then runs seeds 0, 1, ... at that lr, so that the
run that picked the lr is not among those compared. With --budgets 0.5,0.7,1 those seeds of every activation but
SwiGLU run again at each fraction of max_steps: each rung a whole run, its cosine decaying to its own end after the
same warmup, for the compute-equivalent speed-up (the budget at which an activation gets down to SwiGLU's full-run
loss, which needs SwiGLU at the full budget only). The rungs go from the top down, each only while the one above
still comes near SwiGLU's loss (ladder_runs). With --orders as well, PolyNorm also runs at each other order, at
PolyNorm's chosen lr (with --order_seeds seeds, all by default). Without --lrs, --orders replaces each PolyCom
activation by one variant per order, all at the one lr.

--parallel N runs N train.py processes side by side, the grid's runs first, each with OMP_NUM_THREADS = cores // N
(unless you set OMP_NUM_THREADS yourself) and, with --device=cuda, a GPU of its own (CUDA_VISIBLE_DEVICES). Ctrl-C
makes every run save a checkpoint and stop. A restarted sweep (the same command) skips the finished runs and
resumes the interrupted ones from their checkpoints, so a long sweep can run in parts. A run whose loss becomes
non-finite in the lr grid counts as diverged (its lr is not chosen); any other failing run stops the sweep with the
end of its train.log.

At the end the sweep writes <out>/summary.json (every run's curves and final numbers, no weights), then
<out>/report.md (also printed) and <out>/val_loss.png from that summary alone, by report.py, which redoes them
anywhere. The report: the lr grid and whether each chosen lr is bracketed, final losses with their spread
over seeds, each activation's difference to SwiGLU with Welch's t and p, the budget ladder's
compute-equivalent speed-up, the order ablation, the tasks' accuracy when train.py logged it, and analyze.py's
two analyses (run as a subprocess) at each activation's lr and at one lr for all (--analysis_lr).
"""
import argparse
import glob
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time

import torch

import checkpoint
from common import bracket, cpu_name, device_kind, model_config, peak_flops
from data.shards import atomic_write
from model import ACTIVATIONS, GPT
from settings import EXIT_DIVERGED, data_vocab, resolve

ROOT = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(ROOT, 'train.py')
ANALYZE = os.path.join(ROOT, 'analyze.py')
REPORT = os.path.join(ROOT, 'report.py')
SWEEP_KEYS = ('activation', 'seed', 'out_dir', 'init_from')  # set by the sweep itself for every run
SMOOTH = 10  # the final training loss is the mean of the last SMOOTH logged training losses
BASELINE = 'swiglu'  # what every activation is compared with
ABLATED = 'polynorm'  # the activation of the order ablation when there is an lr grid (the paper's figure)
# The lr grid's seed: outside the reported seeds 0, 1, ..., so that the run that picks an activation's lr is not
# also one of the runs its comparison counts (which would favour it a little, and break the test's independence)
GRID_SEED = 1000
WIDEN = 4  # the size ladder widens a name's grid by one lr at a time, this many times at most (grid_lrs)
# standard errors a rung of the budget ladder may lie above the baseline's loss for the next rung down to run: about
# the t of the speed-up's 95 % interval at 3 seeds a side
REACH = 4
ASSUMED_MFU = 0.4  # --plan's time on GPUs when no throughput was measured (--tok_per_s)
TOKENS_PER_PARAM = 10  # the size ladder trains each size on this many tokens per non-embedding parameter
# one run's tok/s at each of the cpu-scale preset's sizes: train.py with one thread, two runs side by side (SwiGLU
# and PolyNorm) on the otherwise idle 2-core AMD EPYC, 40 steps, the median of the last 3 log lines, the mean of the
# two (SwiGLU / PolyNorm: 20,144 / 17,477, 15,674 / 15,292, 10,833 / 10,386, 6,970 / 6,828)
TOK_PER_S_SCALE = '18800,15500,10600,6900'

# Datasets too big for the sweep to download unasked: how to get them
DOWNLOAD_YOURSELF = {'fineweb': ('python data/fineweb/prepare.py', "8 train shards, 1.6 GB")}

# The sweep's own settings per preset; the training settings are in config/sweep_<preset>.py. Flags win.
# 5 seeds: 3 resolve only differences of about 3 seed SDs (power about 0.85 for PolyNorm against SwiGLU on
# Tiny Shakespeare, far less for the rest); the report prints the seeds each comparison would need
LONG = {'activations': 'relu2,swiglu,polyrelu,polynorm,polynorm_glu',
        'lrs': '2e-3,4e-3,8e-3,1.6e-2,3.2e-2,6.4e-2', 'seeds': 5, 'parallel': 2, 'orders': '2,4',
        'order_seeds': 1, 'budgets': '0.5,0.7,1'}
PRESETS = {
    'cpu': {'activations': 'relu,gelu,relu2,swiglu,polyrelu,polynorm', 'seeds': 3},
    'cpu-long': LONG,
    # the same protocol on a second corpus, the grid one lr lower: SwiGLU's loss on it rises from 2e-3 upwards
    'cpu-stdlib': {**LONG, 'lrs': '1e-3,' + LONG['lrs']},
    'gpu': {'activations': 'relu,gelu,relu2,swiglu,polyrelu,polynorm', 'seeds': 3},
    # the size ladder: 4 sizes, 0.05 M to 0.89 M non-embedding parameters (18x), each at TOKENS_PER_PARAM; the
    # smallest's grid wide, each larger size's 3 lrs around the size below's choice, each grid widened where the best
    # lr may lie outside it (grid_lrs); the budget ladder at the smallest and the largest size. tok_per_s: one run's
    # throughput at each size, for --plan's hours
    'cpu-scale': {'activations': 'swiglu,polynorm,polynorm_glu', 'seeds': 3, 'parallel': 2,
                  'sizes': '4x32,4x64,4x96,4x136', 'lrs': '2e-3,4e-3,8e-3,1.6e-2,3.2e-2',
                  'budgets': '0.35,0.5,0.7,1', 'tok_per_s': TOK_PER_S_SCALE},
}

# -----------------------------------------------------------------------------
# 1. Settings


def preset_path(preset):
    """config/sweep_<preset>.py for a preset name ('-' read as '_'), or the path of your own config file."""
    if preset.endswith('.py'):
        path = preset
    else:
        path = os.path.relpath(os.path.join(ROOT, 'config', f"sweep_{preset.replace('-', '_')}.py"))
    if not os.path.isfile(path):
        raise SystemExit(f"--preset {preset}: no config file {path}; use {', '.join(PRESETS)} or the path of a "
                         "config file")
    return path


def parse_overrides(args):
    """The --key=value arguments for train.py as {key: value text}; train.py itself checks keys and values
    (the first run stops the sweep with train.py's message if one is wrong)."""
    overrides = {}
    for arg in args:
        if not arg.startswith('--') or '=' not in arg:
            raise SystemExit(f"unknown argument {arg!r}: the sweep's own flags are listed by --help, and "
                             "settings for train.py must be written --key=value")
        key, value = arg[2:].split('=', 1)
        if key in SWEEP_KEYS:
            raise SystemExit(f"--{key} is set by the sweep for each run; use --activations, --seeds or --out instead")
        overrides[key] = value
    return overrides


def read_settings(config, overrides):
    """The runs' settings, resolved as train.py resolves them (settings.resolve): a wrong key or value stops
    the sweep before any run starts."""
    resolved, _ = resolve([config] + [f'--{key}={value}' for key, value in overrides.items()])
    return resolved


def lr_tag(lr):
    """A learning rate as folder names spell it: 0.002 -> '2e-3', 0.0015 -> '1.5e-3'."""
    mantissa, exponent = f'{lr:e}'.split('e')
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# -----------------------------------------------------------------------------
# 2. Planning the runs


def run_name(activation, order=None):
    """What the report averages over seeds: the activation, and its order when the sweep varies it."""
    return activation + (f'_r{order}' if order else '')


def make_run(spec, activation, seed, lr=None, order=None, budget=1):
    """One run: its name, folder, steps and train.py keys. With an lr grid, min_lr keeps the preset's ratio to
    the lr, so that every lr decays in the same shape, and the reported seeds evaluate on the test split. A rung
    of the budget ladder (budget < 1) is a whole run of its own length: its cosine decays to its own max_steps,
    after the same warmup_steps as the full run's."""
    out = spec['out']
    name = run_name(activation, order)
    folder = name + (f'_lr{lr_tag(lr)}' if lr else '') + (f'_b{budget:g}' if budget != 1 else '') + f'_s{seed}'
    keys = {'activation': activation}
    if order:
        keys['poly_order'] = order
    if lr:
        keys['learning_rate'] = lr
        if spec.get('min_lr_ratio') is not None:
            keys['min_lr'] = round(lr * spec['min_lr_ratio'], 12)  # 2e-4, not 0.00020000000000000001
    if spec['lrs'] and seed != GRID_SEED:
        keys['eval_split'] = 'test'  # the grid picks the lr on val; the reported runs are measured on other text
    steps = rung_steps(spec['max_steps'], budget)
    if budget != 1:
        keys['max_steps'] = steps
    run_dir = os.path.join(out, folder)
    return {'name': name, 'activation': activation, 'order': order, 'lr': lr, 'seed': seed, 'budget': budget,
            'steps': steps, 'dir': run_dir, 'keys': {**keys, 'seed': seed, 'out_dir': run_dir}}


def rung_steps(max_steps, budget):
    """The steps of a run at a fraction of the full budget."""
    return round(budget * max_steps)


def rungs(spec):
    """The budget ladder's fractions below the full run's, smallest first ([] without --budgets)."""
    return [b for b in spec['budgets'] or [] if b < 1]


def variants(spec):
    """(activation, order) of each name in the comparison; without an lr grid --orders makes one name per
    order of each PolyCom activation, as the sweep always did."""
    if spec['orders'] and not spec['lrs']:
        return [(a, r) for a in spec['activations'] for r in (spec['orders'] if a.startswith('poly') else [None])]
    return [(a, None) for a in spec['activations']]


def grid_lrs(spec, activation, order, finals):
    """The lrs of a name's grid: --lrs, or in the size ladder its own three around the size below's choice
    (spec['grids']). In the size ladder (spec['widen']) the grid grows by one lr (x2 or /2) at a time, WIDEN
    times at most, on a side where the best lr may lie outside it: while the best finished lr is at the grid's
    edge, and once its seeds have finished, where common.bracket finds that side 'open' (every lr out to the
    edge within sqrt(2) seed SDs of the best). A widened lr that wins becomes the choice, and its seeds run."""
    lrs = sorted(spec.get('grids', {}).get(run_name(activation, order)) or spec['lrs'] or [])
    start = len(lrs)
    while spec.get('widen') and len(lrs) < start + WIDEN:
        losses = {lr: finals.get(make_run(spec, activation, GRID_SEED, lr, order)['dir']) for lr in lrs}
        if None in losses.values():
            break
        best = min(lrs, key=lambda lr: (losses[lr], lr))
        if best in (lrs[0], lrs[-1]):  # open on that side, whatever the seeds' spread
            side = 'downwards' if best == lrs[0] else 'upwards'
        else:
            seeds = [finals.get(make_run(spec, activation, s, best, order)['dir']) for s in range(spec['seeds'])]
            if None in seeds:
                break
            sides = bracket(losses, best, statistics.stdev(seeds) if len(seeds) > 1 else 0.0)
            side = next((side for side, kind in sides.items() if kind == 'open'), None)
            if side is None:
                break
        lrs = [lrs[0] / 2] + lrs if side == 'downwards' else lrs + [lrs[-1] * 2]
    return lrs


def pick_lrs(spec, finals):
    """name -> its chosen lr, for the names whose grid is finished: the lr of the lowest final val loss (the
    smaller lr on a tie). finals: run folder -> final val loss (inf when diverged). Without a grid, None."""
    chosen = {}
    for activation, order in variants(spec):
        if not spec['lrs']:
            chosen[run_name(activation, order)] = None
            continue
        grid = [make_run(spec, activation, GRID_SEED, lr, order) for lr in grid_lrs(spec, activation, order, finals)]
        if all(run['dir'] in finals for run in grid):
            best = min(grid, key=lambda run: (finals[run['dir']], run['lr']))
            chosen[best['name']] = best['lr']
    return chosen


def plan_runs(spec, finals):
    """The runs known so far, in the order to run them: with an lr grid, every name at every lr with
    GRID_SEED; then seeds 0, 1, ... of each name whose lr is chosen (without a grid: all names, at the one lr);
    then the budget ladder's shorter runs of those but the baseline's (ladder_runs), and the order ablation at
    PolyNorm's chosen lr."""
    # activations interleaved (lr by lr, seed by seed), so that a shared machine's changing load falls on all
    # of them alike and the training-time comparison stays fair
    grids = {(a, r): grid_lrs(spec, a, r, finals) for a, r in variants(spec)}
    runs = [make_run(spec, a, GRID_SEED, lrs[i], r) for i in range(max(map(len, grids.values()), default=0))
            for (a, r), lrs in grids.items() if i < len(lrs)]
    chosen = pick_lrs(spec, finals)
    runs += [make_run(spec, a, s, chosen[run_name(a, r)], r)
             for s in range(spec['seeds']) for a, r in variants(spec) if run_name(a, r) in chosen]
    runs += ladder_runs(spec, finals, chosen)
    if spec['lrs'] and spec['orders'] and ABLATED in chosen:
        runs += [make_run(spec, ABLATED, s, chosen[ABLATED], r)
                 for r in spec['orders'] if r != spec['base_order'] for s in range(spec['order_seeds'])]
    return runs


def laddered(spec):
    """The variants that run the budget ladder: all but the baseline, whose speed-up is 1 by definition; the
    others' speed-ups place their own ladders against its full-budget loss alone."""
    return [(a, r) for a, r in variants(spec) if run_name(a, r) != BASELINE]


def ladder_runs(spec, finals, chosen):
    """The budget ladder's runs known so far, from its top rung down, rung by rung, names interleaved: a name's
    next rung runs only once the rung above it (at first its full runs) has finished and its mean final loss
    still comes within REACH standard errors of the baseline's full-budget mean. A speed-up places the budget
    where a name's loss crosses the baseline's between the two rungs around it, so a rung below one that stays
    clearly above the baseline's loss could not change it (and a name clearly above it at the full budget,
    slower than the baseline, runs no rung)."""
    seeds = range(spec['seeds'])
    if BASELINE not in chosen or not rungs(spec):
        return []
    base = [finals.get(make_run(spec, BASELINE, s, chosen[BASELINE])['dir']) for s in seeds]
    above = {(a, r): [make_run(spec, a, s, chosen[run_name(a, r)], r) for s in seeds]
             for a, r in laddered(spec) if run_name(a, r) in chosen}
    runs = []
    for budget in sorted(rungs(spec), reverse=True):
        above = {(a, r): [make_run(spec, a, s, chosen[run_name(a, r)], r, budget) for s in seeds]
                 for (a, r), previous in above.items()
                 if within_reach([finals.get(run['dir']) for run in previous], base)}
        runs += [rung[s] for s in seeds for rung in above.values()]
    return runs


def within_reach(losses, base):
    """Whether a rung's final losses (per seed; None while a run is unfinished) come within REACH standard
    errors of the baseline's mean full-budget loss: False until all of both have finished, or if one diverged."""
    if None in losses or None in base or not all(map(math.isfinite, losses + base)):
        return False
    spread = sum(statistics.variance(v) / len(v) for v in (losses, base) if len(v) > 1)
    return statistics.fmean(losses) - REACH * math.sqrt(spread) <= statistics.fmean(base)


def train_args(config, overrides, run):
    """The arguments of train.py for a run (without init_from, which depends on where the run stands)."""
    keys = {**overrides, **run['keys']}
    return [config] + [f'--{k}={v}' for k, v in keys.items()]


def count_runs(spec):
    """(grid runs, runs of the reported seeds, the ladder's shorter runs at most, order-ablation runs) the sweep
    will make, before any has run."""
    names = len(variants(spec))
    orders = [r for r in spec['orders'] or [] if r != spec['base_order']] if spec['lrs'] else []
    grid = sum(len(grid_lrs(spec, a, r, {})) for a, r in variants(spec)) if spec['lrs'] else 0
    ladder = len(laddered(spec)) * spec['seeds'] * len(rungs(spec))
    return grid, names * spec['seeds'], ladder, len(orders) * spec['order_seeds']


def full_runs(spec):
    """The runs count_runs plans, in full runs' worth of tokens: the ladder's shorter runs count by their steps
    (all of them: a rung a name cannot need is left out as the sweep goes, so the sweep may take less)."""
    grid, seeds, _, ablation = count_runs(spec)
    return grid + seeds + ablation + len(laddered(spec)) * spec['seeds'] \
        * sum(rung_steps(spec['max_steps'], b) for b in rungs(spec)) / spec['max_steps']


def model_facts(settings):
    """(non-embedding parameters, training FLOPs per token) of the preset's model, built on the meta device
    (shapes only); the vocabulary from the data's meta.json when the config leaves it to the data."""
    keys = {**settings, 'vocab_size': data_vocab(settings)}
    with torch.device('meta'):
        model = GPT(model_config(keys))
    return model.num_params()['non_embedding'], model.flops_per_token()


def plan_text(spec, settings, parallel, tok_per_s):
    """The sweep's plan in words: its runs, tokens and FLOPs, and its time at a measured throughput."""
    grid, seeds, ladder, ablation = count_runs(spec)
    runs = grid + seeds + ladder + ablation
    tokens = settings['max_steps'] * settings['tokens_per_step']
    full = full_runs(spec)
    params, flops = model_facts(settings)
    names = len(variants(spec))
    lines = ["plan: " + (f"lr grid: {names} activations x {len(spec['lrs'])} lrs, seed {GRID_SEED}: {grid} runs; "
                          if grid else "")
             + f"{names} x {spec['seeds']} seeds" + (" at each one's lr" if grid else "") + f": {seeds} runs"
             + (f"; budget ladder: the same but {BASELINE} at {', '.join(f'{b:g}' for b in rungs(spec))} of the "
                f"steps: at most {ladder} runs" if ladder else "")
             + (f"; order ablation: {ablation} runs" if ablation else "") + f"; {runs} runs in all"
             + (f" ({full:.1f} full runs' worth)" if ladder else ""),
             f"each run: {settings['max_steps']:,} steps x {settings['tokens_per_step']:,} tokens = "
             f"{tokens / 1e6:,.1f} M tokens; {params / 1e6:.2f} M non-embedding parameters: "
             f"{tokens / params:.1f} tokens per parameter; {flops / 1e9:.3f} GFLOP per token",
             f"all runs: {full * tokens / 1e9:.2f} B tokens, {full * tokens * flops:.2e} FLOPs"]
    if tok_per_s:
        hours = full * tokens / (tok_per_s * parallel) / 3600
        lines.append(f"time: {hours:.1f} h of training at {tok_per_s:,.0f} tok/s per run, {parallel} run(s) at a "
                     "time (evaluations and checkpoints add to it)")
    elif settings['device'] == 'cuda':  # no throughput measured yet: FLOPs at an MFU assumed, and said so
        peak = peak_flops('H200')
        hours = full * tokens * flops / (ASSUMED_MFU * peak) / 3600
        lines.append(f"time, from FLOPs at an assumed {ASSUMED_MFU:.0%} MFU of an H100's or H200's {peak / 1e12:.0f} "
                     f"TFLOP/s (not a measurement): {hours:.1f} h on one GPU, {hours / 8:.1f} h on 8 with --parallel "
                     "8 (one run per GPU); give --tok_per_s, one run's measured throughput, for a real estimate")
    else:
        lines.append("time: give --tok_per_s (one run's measured throughput, e.g. from the tok/s of a run's log) "
                     "for an estimate")
    target, ready = data_folder(settings)
    if not ready:
        lines.append(f"data: no shards in {target} yet"
                     + (f"; download them with `{DOWNLOAD_YOURSELF[settings['dataset']][0]}`"
                        if settings['dataset'] in DOWNLOAD_YOURSELF else "; the sweep prepares them"))
    return '\n'.join(lines)


# -----------------------------------------------------------------------------
# 3. The data, prepared once for all runs


def data_folder(settings, split='train'):
    """Where the runs read their shards, and whether the split's shards (and meta.json) are there."""
    target = settings.get('data_dir') or os.path.join(ROOT, 'data', settings['dataset'])
    shards = glob.glob(os.path.join(glob.escape(target), f'*_{split}_*.bin'))
    return target, bool(shards) and os.path.exists(os.path.join(target, 'meta.json'))


def ensure_data(settings, raw_input, test=False):
    """Run data/<dataset>/prepare.py unless the shards exist, the test split's too when test (a sweep with an lr
    grid reports on it; data prepared before the scripts wrote one is prepared again, its train shards the
    same); raw_input is a local copy of the raw text. A dataset of gigabytes (FineWeb) is never downloaded by the
    sweep: it says how to get it."""
    dataset, data_dir = settings['dataset'], settings.get('data_dir')
    target, ready = data_folder(settings)
    if ready and test and not data_folder(settings, 'test')[1]:
        if dataset in DOWNLOAD_YOURSELF or not os.path.isfile(os.path.join(ROOT, 'data', dataset, 'prepare.py')):
            raise SystemExit(f"no test split in {target}: an lr grid picks each lr on val and reports on test; "
                             f"write {dataset}_test_*.bin shards there (data/shards.py's write_dataset, test_tokens)")
        ready = False
    if ready:
        return
    if dataset in DOWNLOAD_YOURSELF:
        command, size = DOWNLOAD_YOURSELF[dataset]
        raise SystemExit(f"no {dataset} shards in {target}: download them first ({size}) with `{command}"
                         + (f" --out_dir {data_dir}" if data_dir else "") + "`, then run the sweep again")
    script = os.path.join(ROOT, 'data', dataset, 'prepare.py')
    if not os.path.isfile(script):
        raise SystemExit(f"no prepared data in {target}, and no {script} to prepare dataset {dataset!r}; "
                         f"write its shards there with data/shards.py's write_dataset")
    command = [sys.executable, script] + (['--input', raw_input] if raw_input else []) \
        + (['--out_dir', data_dir] if data_dir else [])
    print(f"preparing the data: {' '.join(command)}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"preparing {dataset} failed (see above); run the command by hand to retry")
    if test and not data_folder(settings, 'test')[1]:
        raise SystemExit(f"{script} wrote no test split in {target}: an lr grid picks each lr on val and reports "
                         "on test; run the sweep without --lrs, or give the data a test split")


# -----------------------------------------------------------------------------
# 4. Where a run stands


def read_log(run_dir):
    """(train records, eval records, task records) of the run's log.jsonl (checkpoint.read_log)."""
    try:
        return checkpoint.read_log(run_dir)
    except ValueError as e:
        raise SystemExit(f"{e}; delete {run_dir} to redo this run") from None


def run_state(run_dir, max_steps):
    """'done' when the log has the validation loss at max_steps, 'diverged' when the sweep saw the run's loss
    turn non-finite, 'resume' when a checkpoint exists, else 'new'."""
    _, evals, _ = read_log(run_dir)
    if evals and evals[-1]['step'] >= max_steps:
        return 'done'
    if os.path.exists(os.path.join(run_dir, 'diverged.txt')):
        return 'diverged'
    return 'resume' if os.path.exists(os.path.join(run_dir, 'ckpt.pt')) else 'new'


def final_val(run_dir, state):
    return math.inf if state == 'diverged' else read_log(run_dir)[1][-1]['val_loss']


def check_same_settings(run_dir, args, state):
    """A run folder is only ever continued with the settings it started with: sweep.json records them. A run
    that has nothing to continue from (state 'new', e.g. its train.py stopped at a bad key) takes the new ones."""
    path = os.path.join(run_dir, 'sweep.json')
    if os.path.exists(path) and state != 'new':
        with open(path) as f:
            before = json.load(f)['train_args']
        if before != args:
            raise SystemExit(f"{run_dir} was started with other settings:\n  before: {' '.join(before)}\n"
                             f"  now:    {' '.join(args)}\nuse another --out, or delete {run_dir} to redo it")
        return
    os.makedirs(run_dir, exist_ok=True)
    atomic_write(path, json.dumps({'train_args': args}, indent=1).encode())


def log_tail(path, lines=15):
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-lines:])


# -----------------------------------------------------------------------------
# 5. Running the runs, up to --parallel train.py subprocesses at a time


def child_env(parallel, out):
    """The environment of each train.py: the cores shared out between the runs side by side, and the sweep's
    folder as the W&B group of its runs (with --wandb_log=True; each run is named after its folder)."""
    env = {'WANDB_RUN_GROUP': os.path.basename(os.path.abspath(out)), **os.environ}
    if 'OMP_NUM_THREADS' not in env:
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def slot_gpus(device, parallel):
    """The GPU (its CUDA_VISIBLE_DEVICES) of each of the `parallel` slots, or None: on a machine with several
    GPUs, runs side by side go one to a GPU, in turn, rather than all to the first."""
    if device != 'cuda' or parallel == 1:
        return None
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    gpus = visible.split(',') if visible else [str(i) for i in range(torch.cuda.device_count())]
    return [gpus[slot % len(gpus)] for slot in range(parallel)] if gpus else None


def start(run, args, state, env, slot):
    """Start train.py for one run, its output appended to <run>/train.log. Its own session, so that Ctrl-C
    in the terminal reaches only the sweep, which passes it on exactly once (a second one would kill a run
    in the middle of saving its checkpoint)."""
    if state == 'resume':
        args = args + ['--init_from=resume']
    log_path = os.path.join(run['dir'], 'train.log')
    print(f"{'resuming' if state == 'resume' else 'starting'} {os.path.basename(run['dir'])} "
          f"(output: {log_path})", flush=True)
    with open(log_path, 'a') as log:
        process = subprocess.Popen([sys.executable, TRAIN] + args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    return {'run': run, 'process': process, 'log': log_path, 't0': time.time(), 'slot': slot}


def finish(child, in_grid):
    """The state of a run whose train.py has exited: 'done' or 'diverged' (in the grid only); otherwise the
    error that stops the sweep."""
    run, log_path = child['run'], child['log']
    code = child['process'].returncode
    state = run_state(run['dir'], run['steps'])
    if code == 0 and state == 'done':
        split = run['keys'].get('eval_split', 'val')  # a grid's reported seeds are measured on test
        print(f"finished {os.path.basename(run['dir'])} in {time.time() - child['t0']:.0f} s: {split} loss "
              f"{final_val(run['dir'], state):.4f}", flush=True)
        return state, None
    tail = log_tail(log_path)
    if code == EXIT_DIVERGED and in_grid:
        atomic_write(os.path.join(run['dir'], 'diverged.txt'), tail.encode())
        print(f"diverged: {os.path.basename(run['dir'])} (its loss became non-finite; see {log_path})", flush=True)
        return 'diverged', None
    if code != 0:
        return None, (f"train.py failed (exit code {code}) for {run['dir']}; the end of {log_path}:\n{tail}\n"
                      "fix the cause and run the sweep again: finished runs are kept")
    return None, (f"train.py stopped before step {run['steps']} in {run['dir']} (see {log_path}); "
                  "run the sweep again to resume it")


def stop_all(children):
    """Ask every running train.py to save and stop (SIGINT, as Ctrl-C), and wait for them; a second Ctrl-C
    passes a second SIGINT on, which stops them at once, as it does train.py alone."""
    if children:
        print(f"asking {len(children)} run(s) to save a checkpoint and stop (Ctrl-C again: stop at once) ...",
              flush=True)
    for attempt in range(2):
        for child in children:
            if child['process'].poll() is None:
                child['process'].send_signal(signal.SIGINT)
        try:
            for child in children:
                child['process'].wait()
            return
        except KeyboardInterrupt:
            if attempt == 1:
                raise


def in_grid(spec, run):
    """Whether a run is one of the lr grid's (where diverging is a result)."""
    return bool(spec['lrs']) and run['seed'] == GRID_SEED


def waiting_runs(runs, finals, busy, config, overrides):
    """The runs still to train, (run, train.py arguments, state) each; the finished ones found on the way go
    into finals (run folder -> final val loss)."""
    waiting = []
    for run in runs:
        if run['dir'] in finals or run['dir'] in busy:
            continue
        args = train_args(config, overrides, run)
        state = run_state(run['dir'], run['steps'])
        check_same_settings(run['dir'], args, state)
        if state in ('done', 'diverged'):
            print(f"{state} already: {os.path.basename(run['dir'])}", flush=True)
            finals[run['dir']] = final_val(run['dir'], state)
        else:
            waiting.append((run, args, state))
    return waiting


def run_all(spec, config, overrides, parallel, gpus=None):
    """Run every planned run to its end, up to `parallel` at a time (slot i on gpus[i] when given), planning
    the seeds as each lr grid finishes; return (finals: run folder -> final val loss, the runs)."""
    env = child_env(parallel, spec['out'])
    finals, running = {}, []

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        while True:
            known = len(finals)
            runs = plan_runs(spec, finals)
            waiting = waiting_runs(runs, finals, {c['run']['dir'] for c in running}, config, overrides)
            if len(finals) > known:
                continue  # plan again: a grid found finished may add runs
            if not waiting and not running:
                return finals, runs
            for run, args, state in waiting[:parallel - len(running)]:
                slot = min(set(range(parallel)) - {c['slot'] for c in running})
                slot_env = {**env, 'CUDA_VISIBLE_DEVICES': gpus[slot]} if gpus else env
                running.append(start(run, args, state, slot_env, slot))
            while not any(child['process'].poll() is not None for child in running):
                time.sleep(0.5)
            for child in [c for c in running if c['process'].poll() is not None]:
                running.remove(child)
                state, error = finish(child, in_grid(spec, child['run']))
                if error:
                    stop_all(running)
                    raise SystemExit(error)
                finals[child['run']['dir']] = final_val(child['run']['dir'], state)
    except KeyboardInterrupt:
        stop_all(running)
        raise SystemExit("interrupted: the runs saved their checkpoints; run the same command again to resume")
    finally:
        signal.signal(signal.SIGTERM, previous)


# -----------------------------------------------------------------------------
# 6. The summary of every run: curves and final numbers, enough to redo the report


def train_time_curve(train):
    """[(step, seconds)]: the cumulative training time at each training record. train.py's train_time_s when
    the log has it (it leaves out evaluations, checkpoints and the compiling first step of each start); else
    the sum of each logged interval's mean step time times its steps (evaluations and checkpoints are left out
    of dt_ms already)."""
    if train and all('train_time_s' in r for r in train):
        return [(r['step'], r['train_time_s']) for r in train]
    total, previous, curve = 0.0, 0, []
    for r in train:
        total += r['dt_ms'] / 1000 * (r['step'] - previous)
        previous = r['step']
        curve.append((r['step'], total))
    return curve


def value_at(curve, x):
    """y at x on the piecewise-linear curve [(x, y)] that starts at (0, 0); the last y beyond its end."""
    x0, y0 = 0, 0.0
    for x1, y1 in curve:
        if x <= x1:
            return y0 if x1 == x0 else y0 + (x - x0) / (x1 - x0) * (y1 - y0)
        x0, y0 = x1, y1
    return y0


def summarize_run(run, state):
    """A run's numbers for summary.json: final val and smoothed train loss, ms per step, the val curve
    [step, tokens, training seconds, loss], the last accuracy of each task; None for a diverged run's numbers."""
    entry = {k: run[k] for k in ('name', 'activation', 'order', 'lr', 'seed', 'budget')}
    entry.update(folder=os.path.basename(run['dir']), state=state)
    if state != 'done':
        return entry
    train, evals, tasks = read_log(run['dir'])
    if not train or not evals:
        raise SystemExit(f"{run['dir']}/log.jsonl has no training or no validation records; delete {run['dir']} "
                         "to redo it")
    times = train_time_curve(train)
    steps = [r['dt_ms'] for r in train[1:] or train]  # the first interval also pays for warm-up and compilation
    entry.update(val=evals[-1]['val_loss'], train=statistics.fmean(r['loss'] for r in train[-SMOOTH:]),
                 ms_per_step=statistics.median(steps), train_time_s=times[-1][1],
                 curve=[[r['step'], r['tokens'], round(value_at(times, r['step']), 3), r['val_loss']] for r in evals],
                 tasks={r['eval_task']: {k: r[k] for k in ('step', 'acc', 'acc_norm', 'n')} for r in tasks})
    return entry


def analyses(run_dirs, out, device):
    """analyze.py's summary of each run (effective ranks, layer similarity, parameters), run as a subprocess
    that writes JSON: run folder -> numbers."""
    path = os.path.join(out, 'analyses.json')
    command = [sys.executable, ANALYZE, '--json', path, '--no_plot', '--device', device]
    for run_dir in run_dirs:
        command += ['--out_dir', run_dir]
    print(f"analyzing {len(run_dirs)} checkpoints with analyze.py", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"analyze.py failed:\n{done.stderr.strip()}\nthe runs are kept: run the sweep again")
    with open(path) as f:
        return json.load(f)


def summarize(spec, runs, finals, config, overrides, settings):
    """The whole sweep as one JSON-able dict: its settings, each name's chosen lr, and every run."""
    chosen = pick_lrs(spec, finals)
    entries = [summarize_run(run, 'diverged' if finals[run['dir']] == math.inf else 'done') for run in runs]
    common = analysis_lr(spec, chosen, [run for run in runs if in_grid(spec, run)])
    final = [run['dir'] for run in runs if finals[run['dir']] < math.inf and run['budget'] == 1 and run['lr'] == (
        common if in_grid(spec, run) else chosen.get(run['name'], run['lr']))]
    device = device_kind(settings['device'])  # as train.py chooses
    numbers = analyses(final, spec['out'], device)
    for run, entry in zip(runs, entries):
        entry['analysis'] = numbers.get(run['dir'])
    return {'config': os.path.relpath(config, ROOT), 'overrides': overrides, 'hardware': hardware(),
            'tokenizer': tokenizer_kind(settings), 'baseline': BASELINE, 'ablated': ABLATED, 'smooth': SMOOTH,
            'grid_seed': GRID_SEED if spec['lrs'] else None, 'seeds': spec['seeds'],
            'lrs': sorted({lr for a, r in variants(spec) for lr in grid_lrs(spec, a, r, finals)}) or None,
            'budgets': spec['budgets'], 'max_steps': spec['max_steps'], 'warmup_steps': settings['warmup_steps'],
            'laddered': [run_name(a, r) for a, r in laddered(spec)] if rungs(spec) else None,
            'orders': spec['orders'], 'base_order': spec['base_order'], 'params': param_counts(spec, settings),
            'held_out': 'test' if spec['lrs'] else settings['eval_split'],
            'chosen_lr': chosen, 'analysis_lr': common, 'runs': entries}


def param_counts(spec, settings):
    """name -> its model's non-embedding parameters, exactly: the gated activations' 2/3 of ffn_hidden is rounded,
    so the counts differ a little, and the report shows them."""
    names = variants(spec) + [(ABLATED, r) for r in (spec['orders'] or []) if spec['lrs'] and r != spec['base_order']]
    return {run_name(a, r): model_facts({**settings, 'activation': a, 'poly_order': r or settings['poly_order']})[0]
            for a, r in names}


def analysis_lr(spec, chosen, grid):
    """The one lr at which every activation's grid run is also analyzed, so that the activation's effect on
    the analyses is told apart from the lr's: --analysis_lr, else of the lrs that every name's grid ran (grid:
    the grid's runs), the one nearest the baseline's chosen lr: that lr itself, unless the names ran grids of
    their own (a size ladder's larger sizes); None without a grid."""
    if not spec['lrs'] or spec.get('analysis_lr'):
        return spec.get('analysis_lr')
    target = chosen.get(BASELINE)
    ran = {name: {run['lr'] for run in grid if run['name'] == name} for name in {run['name'] for run in grid}}
    shared = set.intersection(*ran.values()) if ran else set()
    if target is None or not shared:
        return target
    return min(shared, key=lambda lr: (abs(math.log(lr / target)), lr))


def tokenizer_kind(settings):
    """The data's tokenizer ('char', 'bytes' or 'gpt2', from its meta.json): what one token of the loss is."""
    try:
        with open(os.path.join(data_folder(settings)[0], 'meta.json')) as f:
            return json.load(f).get('tokenizer')
    except (OSError, ValueError):
        return None


def hardware():
    """The machine the sweep ran on, in words."""
    words = f"{cpu_name()}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        words += f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return words


# -----------------------------------------------------------------------------
# 7. The size ladder: the same sweep at several model sizes, each size's lrs around the size below's


def size_tag(size):
    """A size (n_layer, n_embd) as its folder and --sizes spell it: (4, 64) -> '4x64'."""
    return f"{size[0]}x{size[1]}"


def size_keys(config, overrides, size):
    """train.py's keys for one size of the ladder: n_layer x n_embd with an FFN of 4 x n_embd, max_steps for
    TOKENS_PER_PARAM tokens per non-embedding parameter of the baseline's model, warmup 5 % of the steps, 10
    evaluations and 4 checkpoints per run."""
    keys = {**overrides, 'n_layer': size[0], 'n_embd': size[1], 'ffn_hidden': 4 * size[1]}
    settings = read_settings(config, keys)
    params = model_facts({**settings, 'activation': BASELINE})[0]
    steps = max(20, round(TOKENS_PER_PARAM * params / settings['tokens_per_step']))
    keys.update(max_steps=steps, warmup_steps=max(1, steps // 20), eval_interval=max(1, steps // 10),
                ckpt_interval=max(1, steps // 4))
    return keys


def size_spec(spec, sizes, k, chosen_below):
    """The sweep of size k: its own folder and steps; the smallest size runs spec's lr grid, each larger one a grid
    of its own per name, the size below's choice (chosen_below: name -> lr) and its half and double, every grid
    widened where the best lr may lie outside it; the budget ladder only at the smallest and the largest size."""
    own = {'out': os.path.join(spec['out'], size_tag(sizes[k])), 'widen': True,
           'budgets': spec['budgets'] if k in (0, len(sizes) - 1) else None}
    if k > 0:
        own['grids'] = {name: [lr / 2, lr, lr * 2] for name, lr in chosen_below.items()}
        own['lrs'] = sorted({lr for lrs in own['grids'].values() for lr in lrs})
    return {**spec, **own}


def size_setup(spec, sizes, k, config, overrides, chosen_below):
    """(train.py's keys, the resolved settings, the sweep's spec) of size k of the ladder."""
    keys = size_keys(config, overrides, sizes[k])
    s = {**size_spec(spec, sizes, k, chosen_below), 'max_steps': keys['max_steps']}
    check_rungs(s, keys['warmup_steps'])
    return keys, read_settings(config, keys), s


def scale_plan(spec, sizes, config, overrides, parallel, tok_per_s):
    """--plan of the size ladder: each size's model, runs and hours at its measured throughput, and the total."""
    lines, total = [], 0.0
    placeholder = {run_name(a, r): 1.0 for a, r in variants(spec)}  # the grids' centres are not known yet
    for k, size in enumerate(sizes):
        keys, settings, s = size_setup(spec, sizes, k, config, overrides, placeholder)
        grid, seeds, ladder, _ = count_runs(s)
        full = full_runs(s)
        tokens = keys['max_steps'] * settings['tokens_per_step']
        hours = full * tokens / (tok_per_s[k] * parallel) / 3600
        total += hours
        params = model_facts({**settings, 'activation': BASELINE})[0]
        lines.append(f"size {size_tag(size)}: {params / 1e6:.3f} M non-embedding parameters ({BASELINE}), "
                     f"{keys['max_steps']} steps, {tokens / 1e6:.2f} M tokens ({tokens / params:.1f} per parameter); "
                     f"grid {grid} runs{'' if k == 0 else ' (3 lrs a name, at least)'}, seeds {seeds}"
                     + (f", budget ladder {ladder} at most" if ladder else "") + f": {full:.1f} full runs' worth, "
                     f"{hours:.1f} h at {tok_per_s[k]:,.0f} tok/s per run, {parallel} at a time")
    lines.append(f"time: {total:.1f} h of training in all, at most (a widened grid, evaluations, checkpoints and "
                 "analyses add to it; rungs no name needs take from it); the sizes run one after another, and the "
                 "sweep resumes where it stopped")
    return '\n'.join(lines)


def scale_main(args, spec, config):
    """The size ladder: each size swept in turn (its lr grid centred on the size below's choices), each with its
    own summary and report in <out>/<size>; after each size <out>/summary.json holds the sizes finished so far,
    and report.py makes the scale report from it."""
    if args.tok_per_s and len(args.tok_per_s) != len(args.sizes):
        raise SystemExit(f"--tok_per_s: give one throughput per size ({len(args.sizes)}), got {len(args.tok_per_s)}")
    if args.plan:
        print(scale_plan(spec, args.sizes, config, args.overrides, args.parallel, args.tok_per_s))
        return
    ensure_data(read_settings(config, args.overrides), args.input, test=True)
    summaries, chosen, t0 = [], {}, time.time()
    for k, size in enumerate(args.sizes):
        keys, settings, s = size_setup(spec, args.sizes, k, config, args.overrides, chosen)
        print(f"size {size_tag(size)}: {keys['max_steps']} steps, in {s['out']}", flush=True)
        finals, runs = run_all(s, config, keys, args.parallel, slot_gpus(settings['device'], args.parallel))
        chosen = pick_lrs(s, finals)
        summaries.append({**summarize(s, runs, finals, config, keys, settings), 'size': size_tag(size)})
        write_summary(summaries[-1], s['out'])
        # the scale report after every size, not only the last: a sweep that runs in parts shows what it has
        write_summary({'scale': summaries, 'sizes': [size_tag(z) for z in args.sizes], 'baseline': BASELINE,
                       'tokens_per_param': TOKENS_PER_PARAM, 'hardware': hardware(),
                       'config': os.path.relpath(config, ROOT)}, args.out)
    print(f"all sizes finished; this sweep call took {time.time() - t0:.0f} s", flush=True)


def write_summary(summary, out):
    """<out>/summary.json, then report.py's report of it, as `python report.py --out <out>` redoes it."""
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, 'summary.json'), json.dumps(summary, indent=1).encode())
    if subprocess.run([sys.executable, REPORT, '--out', out]).returncode != 0:
        raise SystemExit(f"report.py failed; the summary is kept: python report.py --out {out}")


# -----------------------------------------------------------------------------
# 8. The sweep


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train one model per activation and seed, then compare them.",
        epilog="Any other --key=value (e.g. --max_steps=200 --device=cuda) is passed on to every train.py run. "
               "Preset defaults: " + '; '.join(f"{p}: {' '.join(f'--{k} {v}' for k, v in d.items())}"
                                             for p, d in PRESETS.items()),
        allow_abbrev=False)  # so that a train.py key is never taken for an abbreviation of a sweep flag
    parser.add_argument('--preset', default='cpu', help=f"{', '.join(PRESETS)}, or the path of a config file for "
                                                        "train.py")
    parser.add_argument('--seeds', type=int, default=3, help="runs per activation, with seeds 0, 1, ...")
    parser.add_argument('--activations', default=','.join(ACTIVATIONS), help="comma-separated")
    parser.add_argument('--lrs', help=f"comma-separated learning rates, e.g. 1e-3,2e-3,4e-3: every activation at "
                                      f"each with seed {GRID_SEED}, then seeds 0, 1, ... at each one's best")
    parser.add_argument('--orders', help="comma-separated polynomial orders, e.g. 2,3,4: with --lrs, PolyNorm's "
                                         "order ablation at its chosen lr; without, each PolyCom activation runs "
                                         "once per order (named e.g. polynorm_r2)")
    parser.add_argument('--order_seeds', type=int, help="seeds of each order-ablation run (default: --seeds)")
    parser.add_argument('--budgets', help="comma-separated fractions of max_steps, e.g. 0.5,0.7,1: the budget "
                                          "ladder, each activation's seeds at its lr again with fewer steps (1, the "
                                          "full run, is always in it)")
    parser.add_argument('--analysis_lr', type=float, help="with --lrs, the one lr of the grid at which every "
                                                         "activation is also analyzed (default: SwiGLU's chosen lr, "
                                                         "or the lr every grid ran nearest it)")
    parser.add_argument('--parallel', type=int, default=1, help="train.py processes side by side")
    parser.add_argument('--out', default=os.path.join('out', 'sweep'), help="folder of the runs and the report")
    parser.add_argument('--input', help="a local copy of the raw text for data/<dataset>/prepare.py, used only "
                                        "when the data is not prepared yet (by default it downloads)")
    parser.add_argument('--plan', action='store_true', help="print the runs, tokens, FLOPs and expected time, "
                                                           "training nothing")
    parser.add_argument('--tok_per_s', help="one run's measured tokens per second, for --plan's time (with "
                                            "--sizes: one per size, comma-separated)")
    parser.add_argument('--sizes', help="a size ladder, comma-separated n_layer x n_embd, e.g. 4x32,4x64 (FFN 4 x "
                                        f"n_embd, {TOKENS_PER_PARAM} tokens per parameter): the sweep at each size")
    first, _ = parser.parse_known_args(argv)
    parser.set_defaults(**PRESETS.get(first.preset, {}))
    args, rest = parser.parse_known_args(argv)
    args.activations = [a.strip() for a in args.activations.split(',') if a.strip()]
    unknown = [a for a in args.activations if a not in ACTIVATIONS]
    if unknown or not args.activations:
        parser.error(f"--activations: {unknown or 'none given'}; this model.py has "
                     f"{','.join(ACTIVATIONS)} (choose with --activations)")
    if not 1 <= args.seeds <= GRID_SEED:
        parser.error(f"--seeds must be between 1 and {GRID_SEED} (the lr grid's own seed), got {args.seeds}")
    args.tok_per_s = numbers(parser, '--tok_per_s', args.tok_per_s, float, "2000 or 16000,12000")
    if args.tok_per_s and min(args.tok_per_s) <= 0:
        parser.error(f"--tok_per_s must be positive, got {args.tok_per_s}")
    try:
        args.sizes = [tuple(int(n) for n in size.split('x')) for size in args.sizes.split(',')] if args.sizes else None
    except ValueError:
        parser.error(f"--sizes must be comma-separated n_layer x n_embd like 4x32,4x64, got {args.sizes!r}")
    if args.sizes and not (args.lrs and all(len(size) == 2 and min(size) > 0 for size in args.sizes)):
        parser.error("--sizes needs --lrs (the smallest size's grid) and sizes like 4x32,4x64")
    if args.parallel < 1:
        parser.error(f"--parallel must be at least 1, got {args.parallel}")
    args.lrs = numbers(parser, '--lrs', args.lrs, float, "1e-3,2e-3,4e-3")
    args.orders = numbers(parser, '--orders', args.orders, int, "2,3,4")
    args.budgets = numbers(parser, '--budgets', args.budgets, float, "0.5,0.7,1")
    if args.budgets and not all(0 < b <= 1 for b in args.budgets):
        parser.error(f"--budgets must be fractions of max_steps above 0 and at most 1, got {args.budgets}")
    if args.budgets:
        args.budgets = sorted(set(args.budgets) | {1.0})
    if args.lrs and (min(args.lrs) <= 0 or len(set(args.lrs)) != len(args.lrs)):
        parser.error(f"--lrs must be distinct positive numbers, got {args.lrs}")
    if args.analysis_lr is not None and args.analysis_lr not in (args.lrs or []):
        parser.error(f"--analysis_lr must be one of --lrs, got {args.analysis_lr}")
    if args.orders and min(args.orders) < 1:
        parser.error(f"--orders must be at least 1, got {args.orders}")
    if args.orders and not any(a.startswith('poly') for a in args.activations):
        parser.error("--orders applies to polyrelu and polynorm; add one of them to --activations")
    if args.orders and args.lrs and ABLATED not in args.activations:
        parser.error(f"with --lrs, --orders is {ABLATED}'s order ablation; add {ABLATED} to --activations")
    args.order_seeds = args.seeds if args.order_seeds is None else args.order_seeds
    if not 1 <= args.order_seeds <= args.seeds:
        parser.error(f"--order_seeds must be between 1 and --seeds ({args.seeds}), got {args.order_seeds}")
    args.overrides = parse_overrides(rest)
    if args.orders and 'poly_order' in args.overrides:
        parser.error("give the order either with --orders or with --poly_order, not both")
    if args.lrs and 'learning_rate' in args.overrides:
        parser.error("give the learning rate either with --lrs or with --learning_rate, not both")
    return args


def check_rungs(spec, warmup_steps):
    """Each rung of the budget ladder must be a run of its own: more steps than the warmup, and not as many as
    another rung's."""
    steps = [rung_steps(spec['max_steps'], b) for b in spec['budgets'] or []]
    for budget, n in zip(spec['budgets'] or [], steps):
        if n <= warmup_steps:
            raise SystemExit(f"--budgets {budget:g}: {n} steps, not more than warmup_steps={warmup_steps}; "
                             "use larger fractions")
        if steps.count(n) > 1:
            raise SystemExit(f"--budgets: {budget:g} and another fraction both make {n} steps of "
                             f"max_steps={spec['max_steps']}; use fractions further apart")


def numbers(parser, flag, text, kind, example):
    """A comma-separated list of numbers, or None."""
    if not text:
        return None
    try:
        return [kind(x) for x in text.split(',')]
    except ValueError:
        parser.error(f"{flag} must be comma-separated numbers like {example}, got {text!r}")


def main(argv=None):
    args = parse_args(argv)
    config = preset_path(args.preset)
    settings = read_settings(config, args.overrides)
    spec = {'out': args.out, 'activations': args.activations, 'lrs': args.lrs, 'seeds': args.seeds,
            'orders': args.orders, 'order_seeds': args.order_seeds, 'analysis_lr': args.analysis_lr,
            'budgets': args.budgets, 'max_steps': settings['max_steps'],
            'base_order': settings['poly_order'], 'min_lr_ratio': settings['min_lr'] / settings['learning_rate']}
    if args.sizes:
        return scale_main(args, spec, config)
    check_rungs(spec, settings['warmup_steps'])
    if args.tok_per_s and len(args.tok_per_s) > 1:
        raise SystemExit("--tok_per_s: give one throughput (several are for --sizes)")
    if args.plan:
        print(plan_text(spec, settings, args.parallel, args.tok_per_s and args.tok_per_s[0]))
        return
    ensure_data(settings, args.input, test=bool(args.lrs))

    t0 = time.time()
    gpus = slot_gpus(settings['device'], args.parallel)
    finals, runs = run_all(spec, config, args.overrides, args.parallel, gpus)
    print(f"all {len(runs)} runs finished; this sweep call took {time.time() - t0:.0f} s", flush=True)

    write_summary(summarize(spec, runs, finals, config, args.overrides, settings), args.out)


if __name__ == '__main__':
    main()
