"""
Check the paper's main claim on your own data and hardware: the same model trained with each activation, on
the same data in the same order, for the same number of tokens, for several seeds; then one table.

    python sweep.py --preset cpu                             # 6 activations x 3 seeds, ~35 min on 2 CPU cores
    python sweep.py --preset gpu                             # a bigger model on FineWeb (gpt2 BPE)
    python sweep.py --activations polynorm --orders 2,3,4    # PolyNorm's order ablation
    python sweep.py --activations polyrelu,polynorm          # the composition ablation: ReLU vs norm inside
    python sweep.py --preset cpu --max_steps=100             # any --key=value goes on to train.py

Each run is a subprocess `python train.py config/sweep_<preset>.py --activation=A --seed=S --out_dir=<out>/A_sS`
whose output goes to <out>/A_sS/train.log. Only the activation and the seed differ between runs (the data
loader reads the shards in a fixed order, so the seed changes the initialization only). A restarted sweep
skips the runs that finished and resumes the interrupted ones from their checkpoints.

The report, <out>/report.md (also printed), has one row per activation: final validation and training loss,
the convergence speed-up over SwiGLU as the paper measures it, milliseconds per step, and a summary of
analyze.py's two analyses. <out>/val_loss.png plots the validation curves (with matplotlib installed).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from analyze import analyze, pyplot, save_figure, summarize
from common import cpu_name
from data.shards import atomic_write
from train import get_config

ROOT = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(ROOT, 'train.py')
ACTIVATIONS = ('relu', 'gelu', 'relu2', 'swiglu', 'polyrelu', 'polynorm')
SWEEP_KEYS = ('activation', 'seed', 'out_dir', 'init_from')  # set by the sweep itself for every run
SMOOTH = 10  # the final training loss is the mean of the last SMOOTH logged training losses

# -----------------------------------------------------------------------------
# 1. Planning the runs


def preset_path(preset):
    """config/sweep_<preset>.py for a preset name, or the path of your own config file."""
    path = preset if preset.endswith('.py') else os.path.relpath(os.path.join(ROOT, 'config', f'sweep_{preset}.py'))
    if not os.path.isfile(path):
        raise SystemExit(f"--preset {preset}: no config file {path}; use cpu, gpu or the path of a config file")
    return path


def parse_overrides(args):
    """The --key=value arguments for train.py as {key: value text}; train.py itself checks keys and values."""
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


def plan_runs(out, activations, orders, seeds):
    """Every run of the sweep: activation (x order, for the PolyCom ones, when orders are given) x seed.
    Runs with the same name differ only in the seed; the report averages over them."""
    runs = []
    for activation in activations:
        if orders and activation.startswith('poly'):
            variants = [(f'{activation}_r{r}', {'activation': activation, 'poly_order': r}) for r in orders]
        else:
            variants = [(activation, {'activation': activation})]
        for name, keys in variants:
            for seed in range(seeds):
                run_dir = os.path.join(out, f'{name}_s{seed}')
                runs.append({'name': name, 'dir': run_dir, 'keys': {**keys, 'seed': seed, 'out_dir': run_dir}})
    return runs


def train_args(config, overrides, run):
    """The arguments of train.py for a run (without init_from, which depends on where the run stands)."""
    keys = {**overrides, **run['keys']}
    return [config] + [f'--{k}={v}' for k, v in keys.items()]


# -----------------------------------------------------------------------------
# 2. The data, prepared once for all runs


def ensure_data(settings, raw_input):
    """Run data/<dataset>/prepare.py unless the shards exist; raw_input is a local copy of the raw text."""
    dataset, data_dir = settings['dataset'], settings['data_dir']
    target = data_dir or os.path.join(ROOT, 'data', dataset)
    shards = glob.glob(os.path.join(glob.escape(target), '*_train_*.bin'))
    if shards and os.path.exists(os.path.join(target, 'meta.json')):
        return
    script = os.path.join(ROOT, 'data', dataset, 'prepare.py')
    if not os.path.isfile(script):
        raise SystemExit(f"no prepared data in {target}, and no {script} to prepare dataset {dataset!r}; "
                         f"write its shards there with data/shards.py's write_dataset")
    command = [sys.executable, script] + (['--input', raw_input] if raw_input else []) \
        + (['--out_dir', data_dir] if data_dir else [])
    print(f"preparing the data: {' '.join(command)}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"preparing {dataset} failed (see above); run the command by hand to retry")


# -----------------------------------------------------------------------------
# 3. Running the runs, each as a train.py subprocess


def read_log(run_dir):
    """(train records, eval records) of the run's log.jsonl, ordered by step; should a step appear twice
    (train.py trims a resumed run's log, so it should not), the later record wins."""
    path = os.path.join(run_dir, 'log.jsonl')
    train, evals = {}, {}
    if not os.path.exists(path):
        return [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if not line.endswith('\n'):
                    continue  # the half-written last line of a killed run; its resume rewrites the step
                raise SystemExit(f"{path}, line {n}, is not JSON; delete {run_dir} to redo this run") from None
            (evals if 'val_loss' in record else train)[record['step']] = record
    return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]


def run_state(run_dir, max_steps):
    """'done' when the log has the validation loss at max_steps, 'resume' when a checkpoint exists, else 'new'."""
    _, evals = read_log(run_dir)
    if evals and evals[-1]['step'] >= max_steps:
        return 'done'
    return 'resume' if os.path.exists(os.path.join(run_dir, 'ckpt.pt')) else 'new'


def check_same_settings(run_dir, args):
    """A run folder is only ever continued with the settings it started with: sweep.json records them."""
    path = os.path.join(run_dir, 'sweep.json')
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)['train_args']
        if before != args:
            raise SystemExit(f"{run_dir} was started with other settings:\n  before: {' '.join(before)}\n"
                             f"  now:    {' '.join(args)}\nuse another --out, or delete {run_dir} to redo it")
        return
    os.makedirs(run_dir, exist_ok=True)
    atomic_write(path, json.dumps({'train_args': args}, indent=1).encode())


def train(run, args, state, max_steps):
    """Run train.py for one run, its output appended to <run>/train.log; stop the sweep if it fails."""
    if state == 'resume':
        args = args + ['--init_from=resume']
    log_path = os.path.join(run['dir'], 'train.log')
    print(f"{'resuming' if state == 'resume' else 'starting'} {os.path.basename(run['dir'])} "
          f"(output: {log_path})", flush=True)
    t0 = time.time()
    with open(log_path, 'a') as log:
        returncode = subprocess.run([sys.executable, TRAIN] + args, stdout=log, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-15:])
        raise SystemExit(f"train.py failed (exit code {returncode}) for {run['dir']}; the end of {log_path}:\n"
                         f"{tail}\nfix the cause and run the sweep again: finished runs are kept")
    if run_state(run['dir'], max_steps) != 'done':
        raise SystemExit(f"train.py stopped before step {max_steps} in {run['dir']} (see {log_path}); "
                         "run the sweep again to resume it")
    result = run_result(run['dir'])
    print(f"finished {os.path.basename(run['dir'])} in {time.time() - t0:.0f} s: val loss {result['val']:.4f}, "
          f"train loss {result['train']:.4f}", flush=True)


# -----------------------------------------------------------------------------
# 4. The numbers of the report


def run_result(run_dir):
    """A finished run's final val loss, smoothed final train loss, ms per step and val curve [(tokens, loss)]."""
    train, evals = read_log(run_dir)
    if not train or not evals:
        raise SystemExit(f"{run_dir}/log.jsonl has no training or no validation records; delete {run_dir} to redo it")
    steps = [r['dt_ms'] for r in train[1:] or train]  # the first interval also pays for warm-up and compilation
    return {'val': evals[-1]['val_loss'],
            'train': statistics.fmean(r['loss'] for r in train[-SMOOTH:]),
            'ms_per_step': statistics.median(steps),
            'curve': [(r['tokens'], r['val_loss']) for r in evals]}


def mean_curve(curves):
    """The mean, min and max over seeds of val curves evaluated at the same token counts: [(tokens, mean, lo, hi)]."""
    points = {tuple(t for t, _ in curve) for curve in curves}
    if len(points) != 1:
        raise SystemExit("runs of one activation evaluated at different token counts: they were not trained "
                         "with the same settings; delete them, or use another --out, and sweep again")
    tokens = [t for t, _ in curves[0]]
    losses = [[curve[i][1] for curve in curves] for i in range(len(tokens))]
    return [(t, statistics.fmean(ls), min(ls), max(ls)) for t, ls in zip(tokens, losses)]


def tokens_to_reach(curve, target):
    """The tokens at which a val curve [(tokens, loss, ...)] first gets down to target, linearly interpolated
    between the two evaluations around that point; None if it never does."""
    previous = None
    for tokens, loss, *_ in curve:
        if loss <= target:
            if previous is None:
                return tokens
            t0, l0 = previous
            return t0 + (l0 - target) / (l0 - loss) * (tokens - t0)
        previous = (tokens, loss)
    return None


def speedups(curves, baseline='swiglu'):
    """name -> the paper's convergence speed-up: the tokens the baseline needs to reach its own final val loss
    (on its mean curve), divided by the tokens each activation needs to reach that same loss. The value is a
    string: '1.52'; '< 0.97' when the activation never reaches the loss (it would need more tokens than it
    had); '>= 3.00' when it is there at its first evaluation (how much earlier is unknown); 'n/a' without a
    baseline in the sweep."""
    if baseline not in curves:
        return {name: 'n/a' for name in curves}
    target = curves[baseline][-1][1]
    needed = tokens_to_reach(curves[baseline], target)
    result = {}
    for name, curve in curves.items():
        tokens = tokens_to_reach(curve, target)
        if tokens is None:
            result[name] = f"< {needed / curve[-1][0]:.2f}"
        elif name != baseline and curve[0][1] <= target:  # reached by the first evaluation, maybe well before
            result[name] = f">= {needed / tokens:.2f}" if tokens > 0 else 'n/a'
        else:
            result[name] = f"{needed / tokens:.2f}"
    return result


def mean_std(values, digits=4):
    """'mean ± std' over seeds (the sample standard deviation); the mean alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def hardware():
    """The machine the sweep ran on, in words."""
    words = f"{cpu_name()}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        words += f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return words


NOTES = f"""
- **val loss**: the last evaluation's loss; mean ± sample standard deviation over the seeds.
- **train loss**: the mean of the last {SMOOTH} logged training losses (smoothed), then mean ± std over seeds.
- **speed-up vs SwiGLU**: the tokens SwiGLU needs to reach its final val loss divided by the tokens this activation
  needs to reach the same loss, on the seed-averaged val curves, interpolated linearly between evaluations (the
  paper's measure of convergence speed). `< x`: never reached, so the speed-up is below x; `>= x`: reached by the
  first evaluation already.
- **ms / step**: the median wall-clock time of a training step (the first logged interval left out), mean over
  seeds: a token-wise win is also a time-wise win only if this does not grow more than the speed-up.
- **erank**: the entropy-based effective rank of each FFN weight matrix (analyze.py), mean over layers, then mean ±
  std over seeds. **layer similarity**: the mean cosine similarity between the hidden states of different layers on
  one validation batch (analyze.py), mean ± std over seeds. The paper reports higher rank and lower similarity for
  PolyCom.
"""


def report(runs, config, overrides, device):
    """The markdown report of a finished sweep, and the mean val curves by name for the plot; the analyses
    run on device."""
    by_name = {}
    for run in runs:
        by_name.setdefault(run['name'], []).append(run)
    results = {name: [run_result(run['dir']) for run in group] for name, group in by_name.items()}
    analyses = {name: [analyze(run['dir'], device=device) for run in group] for name, group in by_name.items()}
    curves = {name: mean_curve([r['curve'] for r in rs]) for name, rs in results.items()}
    speedup = speedups(curves)

    seeds = sorted({run['keys']['seed'] for run in runs})
    flags = ' '.join(f'--{k}={v}' for k, v in overrides.items())
    lines = [f"# Activation sweep: {len(by_name)} activations x {len(seeds)} seed{'s' if len(seeds) > 1 else ''}",
             "",
             f"`python train.py {os.path.relpath(config, ROOT)}{' ' + flags if flags else ''}`, "
             f"{next(iter(curves.values()))[-1][0]:,} training tokens per run, seeds {', '.join(map(str, seeds))}; "
             f"{hardware()}.",
             ""]
    lines += table(results, analyses, speedup)
    return '\n'.join(lines) + '\n' + NOTES, curves


def table(results, analyses, speedup):
    """The report's markdown table: one row per name, each cell a mean over the name's seeds."""
    summaries = {name: [summarize(a) for a in group] for name, group in analyses.items()}
    # up and down for every activation, gate for SwiGLU only: its cell is '-' in the other rows
    roles = [role for role in ('erank_up', 'erank_down', 'erank_gate')
             if any(role in group[0] for group in summaries.values())]
    lines = ["| activation | parameters | val loss | train loss | speed-up vs SwiGLU | ms / step | "
             + " | ".join(role.replace('_', ' ') for role in roles) + " | layer similarity |",
             "|---|---|---|---|---|---|" + "---|" * len(roles) + "---|"]
    for name, rs in results.items():
        s = summaries[name]
        cells = [name, f"{analyses[name][0]['params'] / 1e6:.3f} M", mean_std([r['val'] for r in rs]),
                 mean_std([r['train'] for r in rs]), speedup[name],
                 f"{statistics.fmean(r['ms_per_step'] for r in rs):.0f}"]
        cells += [mean_std([x[role] for x in s], 1) if role in s[0] else '-' for role in roles]
        cells.append(mean_std([x['similarity'] for x in s], 3))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def plot(curves, path):
    """Validation loss vs tokens, one curve per activation (mean over seeds, min to max shaded), full run on
    the left and its second half on the right; return False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, start in zip(axes, (0.0, 0.5)):
        for name, curve in curves.items():
            part = [p for p in curve if p[0] >= start * curve[-1][0]]
            tokens, mean, lo, hi = zip(*part)
            millions = [t / 1e6 for t in tokens]
            (line,) = ax.plot(millions, mean, label=name, lw=1.5)
            ax.fill_between(millions, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_xlabel('training tokens (millions)')
        ax.set_ylabel('validation loss')
        ax.grid(alpha=0.3)
    axes[0].set_title('validation loss (mean over seeds, min-max shaded)', fontsize=10)
    axes[1].set_title('second half, zoomed', fontsize=10)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return True


# -----------------------------------------------------------------------------
# 5. The sweep


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train one model per activation and seed, then compare them.",
        epilog="Any other --key=value (e.g. --max_steps=200 --device=cuda) is passed on to every train.py run.",
        allow_abbrev=False)  # so that a train.py key is never taken for an abbreviation of a sweep flag
    parser.add_argument('--preset', default='cpu', help="cpu, gpu, or the path of a config file for train.py")
    parser.add_argument('--seeds', type=int, default=3, help="runs per activation, with seeds 0, 1, ...")
    parser.add_argument('--activations', default=','.join(ACTIVATIONS), help="comma-separated")
    parser.add_argument('--orders', help="comma-separated polynomial orders, e.g. 2,3,4: each PolyCom activation "
                                         "then runs once per order (named e.g. polynorm_r2)")
    parser.add_argument('--out', default=os.path.join('out', 'sweep'), help="folder of the runs and the report")
    parser.add_argument('--input', help="a local copy of the raw text for data/<dataset>/prepare.py, used only "
                                        "when the data is not prepared yet (by default it downloads)")
    args, rest = parser.parse_known_args(argv)

    args.activations = [a.strip() for a in args.activations.split(',') if a.strip()]
    unknown = [a for a in args.activations if a not in ACTIVATIONS]
    if unknown or not args.activations:
        parser.error(f"--activations: {unknown or 'none given'}; choose from {','.join(ACTIVATIONS)}")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.orders:
        try:
            args.orders = [int(r) for r in args.orders.split(',')]
        except ValueError:
            parser.error(f"--orders must be comma-separated integers like 2,3,4, got {args.orders!r}")
        if min(args.orders) < 1:
            parser.error(f"--orders must be at least 1, got {args.orders}")
        if not any(a.startswith('poly') for a in args.activations):
            parser.error("--orders applies to polyrelu and polynorm; add one of them to --activations")
    args.overrides = parse_overrides(rest)
    if args.orders and 'poly_order' in args.overrides:
        parser.error("give the order either with --orders or with --poly_order, not both")
    return args


def main(argv=None):
    args = parse_args(argv)
    config = preset_path(args.preset)
    runs = plan_runs(args.out, args.activations, args.orders, args.seeds)
    # train.py's own reading of the settings: bad keys or values stop the sweep here, before any run
    settings = get_config(train_args(config, args.overrides, runs[0]))
    ensure_data(settings, args.input)

    t0 = time.time()
    for run in runs:
        run_args = train_args(config, args.overrides, run)
        check_same_settings(run['dir'], run_args)
        state = run_state(run['dir'], settings['max_steps'])
        if state == 'done':
            print(f"done already: {os.path.basename(run['dir'])}", flush=True)
        else:
            train(run, run_args, state, settings['max_steps'])
    print(f"all {len(runs)} runs finished; this sweep call took {time.time() - t0:.0f} s", flush=True)

    device = settings['device'] or ('cuda' if torch.cuda.is_available() else 'cpu')  # as train.py chooses
    text, curves = report(runs, config, args.overrides, device)
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, 'report.md'), text.encode())
    print('\n' + text)
    png = os.path.join(args.out, 'val_loss.png')
    if plot(curves, png):
        print(f"report: {os.path.join(args.out, 'report.md')}, plot: {png}")
    else:
        print(f"report: {os.path.join(args.out, 'report.md')}; pip install matplotlib to also get the plot")


if __name__ == '__main__':
    main()
