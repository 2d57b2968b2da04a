"""
The report of an activation sweep, from its summary.json alone (sweep.py writes it, then runs this):

    python report.py --out out/sweep          # <out>/report.md (also printed) and <out>/val_loss.png

The report: the lr grid and whether each chosen lr is bracketed, final losses with their spread over seeds,
the speed-up over the baseline (SwiGLU) in tokens and in training time, each activation's difference to it
with Welch's t and its p (scipy), the budget ladder's compute-equivalent speed-up with a bootstrap interval,
the order ablation, the tasks' accuracy when train.py logged it, and analyze.py's two analyses, at each
activation's lr and at one lr for all. The plot: loss against tokens, the last 30 % of them, against training
time, and the budget ladder.
"""

import argparse
import json
import math
import os
import random
import statistics

from common import pyplot, save_figure
from data.shards import atomic_write


ALPHA = 0.05  # the significance level of each comparison's verdict
RESAMPLES = 1000  # bootstrap resamples of the seeds, for the compute-equivalent speed-up's interval


def lr_text(lr):
    return f"{lr:g}"


# -----------------------------------------------------------------------------
# 1. The report's numbers


def mean_std(values, digits=4):
    """'mean ± std' over seeds (the sample standard deviation); the mean alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def welch(a, b):
    """Welch's t-test of mean(a) - mean(b) for samples of unequal variance: (difference, its standard error,
    t, degrees of freedom by Welch-Satterthwaite); se, t and df are None with fewer than 2 values on a side,
    t and df also when both samples have no spread."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, None, None, None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)  # squared standard errors
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0, None, None
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return diff, se, diff / se, df


def p_value(t, df):
    """The two-sided p of Welch's t at df degrees of freedom, from scipy's t distribution; None without scipy
    (an optional package: the rest of the report needs none)."""
    try:
        from scipy import stats
    except ImportError:
        return None
    return float(2 * stats.t.sf(abs(t), df))


def verdict(diff, t, p, n_a, n_b):
    """The plain words for a difference in final val loss, its Welch t and its p."""
    if t is None:
        return "one seed: no error estimate" if min(n_a, n_b) < 2 else "no spread over seeds to compare with"
    if p is None:
        return "p needs scipy"
    if p >= ALPHA:
        return f"not distinguishable at {min(n_a, n_b)} seeds"
    return "lower loss" if diff < 0 else "higher loss"


def mean_curve(curves):
    """[(mean x, mean loss, min loss, max loss)] at each evaluation of curves of (x, loss) over seeds; the runs
    of one name must evaluate at the same steps."""
    if len({len(curve) for curve in curves}) != 1:
        raise SystemExit("runs of one name evaluated a different number of times: they were not trained with "
                         "the same settings; delete them, or use another --out, and sweep again")
    points = []
    for i in range(len(curves[0])):
        xs, losses = [c[i][0] for c in curves], [c[i][1] for c in curves]
        points.append((statistics.fmean(xs), statistics.fmean(losses), min(losses), max(losses)))
    return points


def x_to_reach(curve, target):
    """The x (tokens or seconds) at which a val curve [(x, loss, ...)] first gets down to target, linearly
    interpolated between the two evaluations around that point; None if it never does."""
    previous = None
    for x, loss, *_ in curve:
        if loss <= target:
            if previous is None:
                return x
            x0, l0 = previous
            return x0 + (l0 - target) / (l0 - loss) * (x - x0)
        previous = (x, loss)
    return None


def speedup(base, curve):
    """How much sooner curve gets to the final loss of base (the baseline's mean curve) than base does: the x
    base needs / the x curve needs, as (value, bound): bound '' exact, '<' when curve never gets there (it
    would need more than it had: the speed-up is below value), '>=' when it is there at its first
    evaluation (how much earlier is unknown)."""
    target = base[-1][1]
    needed = x_to_reach(base, target)
    x = x_to_reach(curve, target)
    if x is None:
        return needed / curve[-1][0], '<'
    if curve[0][1] <= target:
        return needed / x, '>='
    return needed / x, ''


def format_speedups(pairs):
    """Per-seed speed-ups as 'mean ± std', saying how many seeds give only a bound."""
    cell = mean_std([v for v, _ in pairs], 2)
    for bound, words in (('<', 'never reach it: upper bounds'), ('>=', 'there at once: lower bounds')):
        k = sum(b == bound for _, b in pairs)
        if k:
            cell += f" ({k}/{len(pairs)} {words})"
    return cell


def budget_to_reach(ladder, target):
    """The budget (a fraction of the full run's) at which a ladder's mean final loss first gets down to target,
    interpolated linearly in log budget between the two rungs around it, as (budget, bound): bound '' inside
    the ladder, '<=' when its smallest rung is there already, '>' when no rung gets there (the budget is then
    the largest rung's). ladder: {budget: [final loss per seed]}."""
    curve = [(math.log(b), statistics.fmean(losses)) for b, losses in sorted(ladder.items())]
    x = x_to_reach(curve, target)
    if x is None:
        return max(ladder), '>'
    return math.exp(x), '<=' if curve[0][1] <= target else ''


def ladder_speedup(ladder, base, resamples=RESAMPLES):
    """The compute-equivalent speed-up over the baseline: its full budget (1) over the budget at which the
    ladder gets down to the baseline's mean full-budget loss (base: per seed). Returns (speed-up, bound,
    interval, outside): bound '>=' or '<' outside the ladder (the speed-up is then the ladder's edge); interval
    the 2.5 and 97.5 percentiles over bootstrap resamples that draw each rung's seeds and the baseline's with
    replacement, None with one seed anywhere; outside the fraction of resamples outside the ladder."""
    budget, bound = budget_to_reach(ladder, statistics.fmean(base))
    flipped = {'': '', '<=': '>=', '>': '<'}[bound]  # a budget's bound, as the speed-up's
    if min(len(losses) for losses in [base, *ladder.values()]) < 2:
        return 1 / budget, flipped, None, None
    rng = random.Random(0)  # the same interval each time the report is made
    draws = [budget_to_reach({b: rng.choices(v, k=len(v)) for b, v in ladder.items()},
                             statistics.fmean(rng.choices(base, k=len(base)))) for _ in range(resamples)]
    cuts = statistics.quantiles([1 / b for b, _ in draws], n=40, method='inclusive')  # 2.5 % steps
    return 1 / budget, flipped, (cuts[0], cuts[-1]), sum(bound != '' for _, bound in draws) / resamples


# -----------------------------------------------------------------------------
# 2. The report


def grid_seed(summary):
    """The lr grid's seed; 0 in summaries from before the grid had its own seed, when seed 0 both picked the lr
    and counted among the reported seeds."""
    return summary.get('grid_seed', 0)


def reported(summary, run):
    """Whether a run is one of its name's reported seeds at its chosen lr, finished (at any budget)."""
    own_grid = summary.get('grid_seed') is not None and run['seed'] == summary['grid_seed']
    return run['lr'] == summary['chosen_lr'].get(run['name'], run['lr']) and run['state'] == 'done' and not own_grid


def final_runs(summary):
    """name -> its reported runs of the full budget, in the order of the sweep."""
    groups = {}
    for run in summary['runs']:
        if reported(summary, run) and run.get('budget', 1) == 1:  # older summaries have no budgets
            groups.setdefault(run['name'], []).append(run)
    return groups


def ladders(summary):
    """name -> {budget: [final val loss per reported seed]}, smallest budget first, for a sweep with --budgets."""
    found = {}
    for run in summary['runs']:
        if reported(summary, run):
            found.setdefault(run['name'], {}).setdefault(run.get('budget', 1), []).append(run['val'])
    return {name: dict(sorted(ladder.items())) for name, ladder in found.items() if len(ladder) > 1}


def curves_of(runs, axis):
    """Each run's val curve as [(x, loss)], x = tokens (axis 1) or training seconds (axis 2)."""
    return [[(point[axis], point[3]) for point in run['curve']] for run in runs]


def grid_table(summary):
    """The lr grid: the grid seed's final val loss per name and lr, the chosen lr, and a flag where it is not
    bracketed."""
    lrs = summary['lrs']
    lines = ["| activation | " + " | ".join(f"lr {lr_text(lr)}" for lr in lrs) + " | chosen lr |",
             "|---|" + "---|" * len(lrs) + "---|"]
    for name, lr in summary['chosen_lr'].items():
        losses = grid_losses(summary, name)
        cells = [name] + [f"**{losses[x]:.4f}**" if x == lr else 'diverged' if losses[x] == math.inf
                          else f"{losses[x]:.4f}" for x in lrs]
        sides = unbracketed(summary, name)[0]
        cells.append(lr_text(lr) + (f" (not bracketed: extend the grid {' and '.join(sides)})" if sides else ""))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def grid_losses(summary, name):
    """lr -> the final val loss of name's grid run at that lr (inf when it diverged)."""
    return {r['lr']: r['val'] if r['state'] == 'done' else math.inf for r in summary['runs']
            if r['name'] == name and r['seed'] == grid_seed(summary) and r.get('budget', 1) == 1}


def unbracketed(summary, name):
    """(the sides, 'downwards' or 'upwards', on which name's chosen lr is not bracketed, the seed SD): it is
    bracketed when the grid's lrs within one seed SD of the best loss (the SD of the reported seeds at the
    chosen lr, 0 with one seed) have an lr beyond them on each side, which is then worse by more than that SD;
    otherwise the best lr may lie beyond the grid."""
    losses = grid_losses(summary, name)
    vals = [r['val'] for r in final_runs(summary).get(name, [])]
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    best = min(losses.values())
    near = [lr for lr, loss in losses.items() if loss <= best + sd]
    return ['downwards'] * (min(near) == min(losses)) + ['upwards'] * (max(near) == max(losses)), sd


def bracket_lines(summary):
    """One line per name whose chosen lr is not bracketed: which lrs are near its best, and where to extend."""
    lines = []
    for name in summary['chosen_lr']:
        sides, sd = unbracketed(summary, name)
        losses = grid_losses(summary, name)
        near = [lr for lr, loss in losses.items() if loss <= min(losses.values()) + sd]
        if sides:
            lines.append(f"- {name}: its grid losses within one seed SD ({sd:.4f}) of its best span lr "
                         f"{lr_text(min(near))} to {lr_text(max(near))}, at the grid's edge: extend --lrs "
                         f"{' and '.join(sides)}.")
    return lines


def results_table(groups, baseline):
    """One row per name: final losses, speed-ups over SwiGLU in tokens and in time (per seed, against
    SwiGLU's mean curve), ms per step and the analyses, each a mean over the name's seeds."""
    base = {axis: mean_curve(curves_of(groups[baseline], axis)) for axis in (1, 2)} if baseline in groups else None
    roles = analysis_roles([r for rs in groups.values() for r in rs])
    lines = ["| activation | lr | parameters | val loss | train loss | speed-up in tokens | speed-up in time | "
             "ms / step | " + " | ".join(role.replace('_', ' ') for role in roles) + " | layer similarity |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(roles) + "---|"]
    for name, rs in groups.items():
        speeds = [format_speedups([speedup(base[axis], c) for c in curves_of(rs, axis)]) if base else 'n/a'
                  for axis in (1, 2)]
        found = [r['analysis'] for r in rs if r.get('analysis')]
        params = f"{found[0]['params'] / 1e6:.3f} M" if found else '?'
        cells = [name, lr_text(rs[0]['lr']) if rs[0]['lr'] else '-', params, mean_std([r['val'] for r in rs]),
                 mean_std([r['train'] for r in rs]), *speeds, f"{statistics.fmean(r['ms_per_step'] for r in rs):.0f}"]
        lines.append('| ' + ' | '.join(cells + analysis_cells(found, roles)) + ' |')
    return lines


def analysis_roles(runs):
    """The FFN matrices (erank_up, erank_down, erank_gate) that the runs' analyses have."""
    found = [r['analysis'] for r in runs if r.get('analysis')]
    return [role for role in ('erank_up', 'erank_down', 'erank_gate') if any(role in a for a in found)]


def analysis_cells(found, roles):
    """The effective rank of each role and the layer similarity, mean ± std over the analyses found."""
    cells = [mean_std([a[role] for a in found], 1) if found and role in found[0] else '-' for role in roles]
    similarity = [a['similarity'] for a in found if a['similarity'] is not None]
    return cells + [mean_std(similarity, 3) if similarity else '-']


def common_lr_table(summary):
    """The analyses of every activation's grid run at one lr for all (summary['analysis_lr']): the activation's
    effect with the lr's held fixed; [] when the summary has none."""
    lr = summary.get('analysis_lr')
    runs = [r for r in summary['runs'] if r.get('analysis') and r['seed'] == grid_seed(summary) and r['lr'] == lr
            and r.get('budget', 1) == 1]
    if lr is None or not runs:
        return []
    roles = analysis_roles(runs)
    lines = ["| activation | val loss | " + " | ".join(role.replace('_', ' ') for role in roles)
             + " | layer similarity |", "|---|---|" + "---|" * len(roles) + "---|"]
    for run in runs:
        lines.append('| ' + ' | '.join([run['name'], f"{run['val']:.4f}"] + analysis_cells([run['analysis']], roles))
                     + ' |')
    return lines


def comparison_table(groups, reference, label):
    """Each name's final val loss against reference's: the difference, its standard error, Welch's t, its df
    and p, and what that means; then a line on how many comparisons were made."""
    ref = [r['val'] for r in groups[reference]]
    lines = [f"| activation | val loss − {label} | standard error | Welch's t | df | p | verdict |",
             "|---|---|---|---|---|---|---|"]
    tested, missing = {}, False  # name -> p, for the names with one; whether a p needed scipy
    for name, rs in groups.items():
        if name == reference:
            continue
        vals = [r['val'] for r in rs]
        diff, se, t, df = welch(vals, ref)
        p = None if t is None else p_value(t, df)
        if p is not None:
            tested[name] = p
        missing |= t is not None and p is None
        p_cell = '-' if t is None else 'needs scipy' if p is None else f'{p:.3f}'
        lines.append(f"| {name} | {diff:+.4f} | {'-' if se is None else f'{se:.4f}'} | "
                     f"{'-' if t is None else f'{t:+.2f}'} | {'-' if df is None else f'{df:.1f}'} | {p_cell} | "
                     f"{verdict(diff, t, p, len(vals), len(ref))} |")
    notes = comparisons_note(tested) + (["p needs scipy: pip install scipy"] if missing else [])
    return lines + ([""] + notes if notes else [])


def comparisons_note(tested):
    """What the number of comparisons does to the verdicts at ALPHA each (tested: name -> p)."""
    if len(tested) < 2:
        return []
    strict = ALPHA / len(tested)  # Bonferroni: every verdict at once holds at ALPHA
    holding = [name for name, p in tested.items() if p < strict]
    return [f"{len(tested)} comparisons at p < {ALPHA} each: with no real difference anywhere, about "
            f"{len(tested) * ALPHA:.2f} of them would read lower or higher by chance. At p < {strict:.4f} "
            f"(Bonferroni, {ALPHA} over all {len(tested)} together): {', '.join(holding) or 'none'}."]


def ladder_table(summary, baseline):
    """Each name's mean final val loss at each rung of the budget ladder, and its compute-equivalent speed-up
    over the baseline with its bootstrap interval; [] without a ladder or the baseline's."""
    found = ladders(summary)
    if baseline not in found:
        return []
    budgets, base = list(found[baseline]), found[baseline][1]
    lines = ["| activation | lr | " + " | ".join(f"val loss at {b:g}" for b in budgets)
             + " | compute-equivalent speed-up | 95 % interval | outside the ladder |",
             "|---|---|" + "---|" * len(budgets) + "---|---|---|"]
    for name, ladder in found.items():
        cells = [name, lr_text(summary['chosen_lr'][name]) if summary['chosen_lr'].get(name) else '-']
        cells += [mean_std(ladder[b]) if b in ladder else '-' for b in budgets]
        if name == baseline:
            cells += ['1 (the reference)', '-', '-']
        else:
            value, bound, interval, outside = ladder_speedup(ladder, base)
            spread = f"{interval[0]:.2f} to {interval[1]:.2f}" if interval else 'one seed: none'
            cells += [f"{bound + ' ' if bound else ''}{value:.2f}", '-' if outside == 1 else spread,
                      outside_words(bound, min(ladder), outside, baseline)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def outside_words(bound, smallest, outside, baseline):
    """What to do about a speed-up outside the ladder, or how often its resamples fell outside it."""
    if bound == '>=':
        return f"yes: at {smallest:g} of the steps already below {baseline}'s loss: add smaller --budgets"
    if bound == '<':
        return f"yes: not down to {baseline}'s loss even at the full budget: slower than {baseline}"
    return f"no ({outside:.0%} of resamples outside)" if outside else "no"


def tasks_table(groups):
    """Each task's final acc_norm per name (mean ± std over seeds), when train.py evaluated tasks."""
    tasks = sorted({task for rs in groups.values() for r in rs for task in r.get('tasks', {})})
    if not tasks:
        return []
    lines = ["| activation | " + " | ".join(f"{task} acc_norm" for task in tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for name, rs in groups.items():
        cells = [name]
        for task in tasks:
            values = [r['tasks'][task]['acc_norm'] for r in rs if task in r.get('tasks', {})]
            n = {r['tasks'][task]['n'] for r in rs if task in r.get('tasks', {})}
            cells.append(f"{mean_std(values, 3)} (n={'/'.join(map(str, sorted(n)))})" if values else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


LADDER_NOTE = """
- **compute-equivalent speed-up**: each rung of the budget ladder is a whole run of that fraction of max_steps,
  with the full run's warmup ({warmup} steps) and a cosine decay to its own end, at the activation's chosen lr,
  for every reported seed. The speed-up is SwiGLU's full budget over the budget at which the activation's mean
  final val loss equals SwiGLU's full-budget mean final val loss, interpolated linearly in log budget between
  the rungs around it. Budgets count training tokens, not FLOPs or time. 95 % interval: the 2.5 and 97.5
  percentiles over {resamples} bootstrap resamples of the seeds (each rung's and SwiGLU's, drawn with
  replacement). Outside the ladder the speed-up is a bound (>= 1 / the smallest rung, or < 1)."""
GRID_NOTE = """
- **lr grid**: every activation at every learning rate with the grid's seed; each activation's lr is the one of
  the lowest final val loss (bold), and its reported seeds run at that lr. The chosen lr is bracketed when the
  grid's lrs whose loss is within one seed SD of the best (the SD over the reported seeds at the chosen lr) have
  a worse lr on both sides; where they reach the grid's edge the best lr may lie beyond it: extend `--lrs`."""
NOTES = """
- **val loss**: the last evaluation's loss; mean ± sample standard deviation over the seeds at the chosen lr.
- **train loss**: the mean of the last {smooth} logged training losses (smoothed), then mean ± std over seeds.
- **speed-up in tokens / in time**: for each seed, the tokens (training seconds) SwiGLU's seed-averaged curve
  needs to reach its own final val loss, divided by the tokens (seconds) this seed's run needs to reach the same
  loss, interpolated linearly between evaluations; then mean ± std over seeds. Above 1: faster than SwiGLU. It
  is not a compute saving: every run's learning rate decays to its own end, so SwiGLU's curve tends to get to
  its final loss only at its last evaluation, and then a run that gets there within the last evaluation
  interval scores at most the last evaluation's tokens over the one before{cap}: it restates the final-loss
  gap. The budget ladder's compute-equivalent speed-up (`--budgets`) measures the saving. Training time is the
  sum of the training steps' times (train.py's train_time_s, or the logged ms per step times the steps),
  without evaluations and checkpoints; where the machine's load changed during the sweep (`--parallel`, other
  work) it measures the load as much as the activation.
- **ms / step**: the median wall-clock time of a training step (the first logged interval left out), mean over
  seeds.
- **Welch's t**: the difference of the mean final val losses divided by its standard error
  sqrt(s_a²/n_a + s_b²/n_b); df by Welch-Satterthwaite; **p**: two-sided, from the t distribution at that df
  (scipy). The verdict says lower or higher loss at p < 0.05, else not distinguishable from seed noise at this
  number of seeds; with 3 seeds a side df is about 2 to 4, where p < 0.05 needs |t| of about 2.8 to 4.3.
- **erank**: the entropy-based effective rank of each FFN weight matrix (analyze.py), mean over layers, then mean ±
  std over seeds. **layer similarity**: the mean cosine similarity between the hidden states of different layers on
  one validation batch (analyze.py), mean ± std over seeds. The paper reports higher rank and lower similarity for
  PolyCom.
"""


def report(summary):
    """The markdown report of a sweep's summary."""
    groups = final_runs(summary)
    baseline, ablated = summary.get('baseline', 'swiglu'), summary.get('ablated', 'polynorm')  # older summaries
    seeds = sorted({r['seed'] for rs in groups.values() for r in rs})
    flags = ' '.join(f'--{k}={v}' for k, v in summary['overrides'].items())
    tokens = next(iter(groups.values()))[0]['curve'][-1][1]
    activations = len({r['activation'] for rs in groups.values() for r in rs})
    lines = [f"# Activation sweep: {activations} activations x {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
             + (f", {len(groups) - activations} more orders" if len(groups) > activations else ""), "",
             f"`python train.py {summary['config']}{' ' + flags if flags else ''}`, {tokens:,} training tokens per "
             f"run, seeds {', '.join(map(str, seeds))}; {summary['hardware']}.", ""]
    if summary['lrs']:
        lines += [f"## Learning rate grid (seed {grid_seed(summary)}, final val loss)", ""] + grid_table(summary) + [""]
        if 'grid_seed' not in summary:
            lines += ["Seed 0 both picked each activation's lr and counts among its reported seeds (a sweep from "
                      "before the grid had a seed of its own): the comparisons below lean a little towards each "
                      "activation's own pick.", ""]
        if bracket_lines(summary):
            lines += ["Not bracketed, so the best lr may lie outside the grid:", ""] + bracket_lines(summary) + [""]
    lines += ["## Results at each activation's lr", ""] + results_table(groups, baseline) + [""]
    if baseline in groups and len(groups) > 1:
        lines += [f"## Against {baseline}: final val loss", ""] + comparison_table(groups, baseline, baseline) + [""]
    if ladder_table(summary, baseline):
        lines += [f"## Budget ladder: compute-equivalent speed-up over {baseline}", ""]
        lines += ladder_table(summary, baseline) + [""]
    ablation = {name: rs for name, rs in groups.items() if name.startswith(f'{ablated}_r')}
    if summary['lrs'] and ablation and ablated in groups:
        order_groups = {f"{ablated} (r={summary['base_order']})": groups[ablated], **ablation}
        lines += [f"## Order ablation: {ablated} at its lr, against order {summary['base_order']}", ""]
        lines += comparison_table(order_groups, next(iter(order_groups)), f"r={summary['base_order']}") + [""]
    if common_lr_table(summary):
        lines += [f"## Analyses at one lr for all ({lr_text(summary['analysis_lr'])}, seed {grid_seed(summary)})", "",
                  "The analyses follow the lr as well as the activation; here every activation's grid run at the "
                  "same lr, one seed each, so that a difference is the activation's.", ""]
        lines += common_lr_table(summary) + [""]
    if tasks_table(groups):
        lines += ["## Tasks (final evaluation)", ""] + tasks_table(groups) + [""]
    ladder_note = LADDER_NOTE.format(warmup=summary.get('warmup_steps'), resamples=RESAMPLES)
    return ('\n'.join(lines) + (GRID_NOTE if summary['lrs'] else '') + (ladder_note if ladders(summary) else '')
            + NOTES.format(smooth=summary.get('smooth', 10), cap=cap_words(groups, baseline)))


def cap_words(groups, baseline):
    """', here X' for the most a run can score within the baseline's last evaluation interval, where the
    baseline's mean curve gets to its final loss only at its last evaluation."""
    if baseline not in groups:
        return ''
    curve = mean_curve(curves_of(groups[baseline], 1))
    if len(curve) < 2 or x_to_reach(curve, curve[-1][1]) < curve[-1][0]:
        return ''
    return f", here {curve[-1][0] / curve[-2][0]:.2f}"


UNITS = {'char': 'nats per character', 'bytes': 'nats per byte', 'gpt2': 'nats per token'}  # by tokenizer
ZOOM = 0.3  # the zoomed panel shows the last 30 % of the tokens, where the final ordering is decided


def loss_label(tokenizer):
    """The y label of a validation loss: its unit follows the data's tokenizer (unknown in older summaries)."""
    return f"validation loss ({UNITS.get(tokenizer, 'nats per token; per character for char data')})"


def draw(summary, plt):
    """The figure: validation loss against tokens, the last 30 % of the tokens zoomed, against training time,
    and the budget ladder's final losses. A name with several seeds: their mean, min to max shaded; with one
    seed: dashed."""
    groups = final_runs(summary)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    tokens, zoom, time, ladder = axes.flat
    zoom_losses = []
    for i, (name, rs) in enumerate(groups.items()):
        style = {'color': f'C{i % 10}', 'lw': 1.5, 'ls': '-' if len(rs) > 1 else '--',
                 'label': name if len(rs) > 1 else f'{name} (1 seed)'}
        for ax, axis, scale in ((tokens, 1, 1e6), (zoom, 1, 1e6), (time, 2, 60)):
            xs, mean, lo, hi = zip(*mean_curve(curves_of(rs, axis)))
            xs = [x / scale for x in xs]
            ax.plot(xs, mean, **style)
            if len(rs) > 1:
                ax.fill_between(xs, lo, hi, color=style['color'], alpha=0.15, lw=0)
            if ax is zoom:
                start = (1 - ZOOM) * xs[-1]
                zoom_losses += [y for x, a, b in zip(xs, lo, hi) if x >= start for y in (a, b)]
                ax.set_xlim(start, xs[-1])
    if zoom_losses:
        margin = 0.05 * (max(zoom_losses) - min(zoom_losses) or 1)
        zoom.set_ylim(min(zoom_losses) - margin, max(zoom_losses) + margin)
    titles = ((tokens, 'training tokens (millions)', 'against tokens (seed mean, min to max shaded)'),
              (zoom, 'training tokens (millions)', f'the last {ZOOM:.0%} of the tokens'),
              (time, 'training time (minutes, steps only)', "against training time as measured in the sweep: "
                                                            "the machine's load shows too"))
    for ax, xlabel, title in titles:
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
    drawn = [tokens, zoom, time] + [ladder] * draw_ladder(ladder, summary, groups)
    for ax in drawn:
        ax.set_ylabel(loss_label(summary.get('tokenizer')))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw_ladder(ax, summary, groups):
    """Each name's final val loss (mean ± std over seeds) at each budget of the ladder, and the baseline's
    full-budget loss that the compute-equivalent speed-up aims at."""
    found, baseline = ladders(summary), summary.get('baseline', 'swiglu')
    if not found:
        ax.axis('off')
        ax.text(0.5, 0.5, 'no budget ladder in this sweep (sweep.py --budgets)', ha='center', va='center')
        return False
    ax.set_title('the budget ladder: final val loss at each budget', fontsize=10)
    ax.set_xlabel('budget (fraction of max_steps, log scale)')
    ax.set_xscale('log')
    colors = {name: f'C{i % 10}' for i, name in enumerate(groups)}
    for name, ladder in found.items():
        sds = [statistics.stdev(v) if len(v) > 1 else 0 for v in ladder.values()]
        ax.errorbar(list(ladder), [statistics.fmean(v) for v in ladder.values()], yerr=sds, color=colors.get(name),
                    marker='o', capsize=3, lw=1.5, label=name)
    budgets = sorted({b for ladder in found.values() for b in ladder})
    ax.minorticks_off()  # the rungs' own ticks only, not log-scale's 6 x 10^-1
    ax.set_xticks(budgets, [f'{b:g}' for b in budgets])
    if baseline in found:
        ax.axhline(statistics.fmean(found[baseline][1]), color='gray', ls=':', lw=1,
                   label=f"{baseline}'s full-budget loss")
    return True


def plot(summary, path):
    """draw's figure as a PNG at path; False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    fig = draw(summary, plt)
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return True


def write_report(summary, out):
    """report.md and val_loss.png in out, from the summary; print the report."""
    text = report(summary)
    atomic_write(os.path.join(out, 'report.md'), text.encode())
    print('\n' + text)
    png = os.path.join(out, 'val_loss.png')
    if plot(summary, png):
        print(f"report: {os.path.join(out, 'report.md')}, plot: {png}")
    else:
        print(f"report: {os.path.join(out, 'report.md')}; pip install matplotlib to also get the plot")




# -----------------------------------------------------------------------------
# 3. From the command line


def main(argv=None):
    parser = argparse.ArgumentParser(description="The report of an activation sweep, from <out>/summary.json.")
    parser.add_argument('--out', default=os.path.join('out', 'sweep'), help="the sweep's folder (default: out/sweep)")
    args = parser.parse_args(argv)
    path = os.path.join(args.out, 'summary.json')
    if not os.path.exists(path):
        raise SystemExit(f"no {path}: run the sweep (python sweep.py --out {args.out}) to make it")
    with open(path) as f:
        try:
            summary = json.load(f)
        except json.JSONDecodeError as e:  # cut short or edited by hand: say where, not a traceback
            raise SystemExit(f"{path} is not JSON ({e}); sweep again (python sweep.py --out {args.out}) to "
                             "rewrite it") from None
    write_report(summary, args.out)


if __name__ == '__main__':
    main()
