"""
The report of an activation sweep, from its summary.json alone (sweep.py writes it, then runs this):

    python report.py --out out/sweep          # <out>/report.md (also printed) and <out>/val_loss.png

The report: the lr grid and whether each chosen lr is bracketed, final losses with their spread over seeds,
the speed-up over the baseline (SwiGLU) in tokens and in training time, each activation's difference to it
with Welch's t, its p and Holm's p over all the report's comparisons (the t distribution computed here: no
scipy needed) and the seeds 80 % power would need, the budget ladder's compute-equivalent speed-up with a
delta-method interval, the order ablation, the tasks' accuracy when train.py logged it, and analyze.py's two
analyses, at each activation's lr and at one lr for all. The plot: loss against tokens, the last 30 % of them,
against training time, and the budget ladder.
"""

import argparse
import json
import math
import os
import statistics

from common import bracket, pyplot, save_figure
from data.shards import atomic_write


ALPHA = 0.05  # the significance level of each comparison's verdict


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


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Lentz's method, as in
    Numerical Recipes): what the t distribution's tail needs, without scipy."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point; the symmetry gives the rest
        return 1 - betainc(b, a, 1 - x)
    front = math.exp(a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(300):
        m = i // 2
        if i == 0:
            term = 1.0
        elif i % 2 == 0:
            term = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            term = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + term * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + term / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1 - c * d) < 1e-14:
            break
    return front * (f - 1)


def p_value(t, df):
    """The two-sided p of t at df degrees of freedom (Student's t distribution; df need not be whole)."""
    return betainc(df / 2, 0.5, df / (df + t * t))


def t_critical(p, df):
    """The t whose two-sided p at df degrees of freedom is p (p = 0.05: the 97.5 % quantile), by Newton's method
    from t = 0: p falls convexly in t, so every step lands short of the root and the steps converge to it."""
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    t = 0.0
    for _ in range(100):
        density = scale * (1 + t * t / df) ** (-(df + 1) / 2)
        step = (p_value(t, df) - p) / (2 * density)  # d p / d t = -2 density
        t += step
        if step < 1e-12 * max(t, 1):
            break
    return t


def holm(ps):
    """Holm's step-down adjustment of the p-values {name: p}: a name's adjusted p is below ALPHA exactly when
    Holm's procedure rejects it, so that all verdicts together hold at family-wise ALPHA."""
    adjusted, running = {}, 0.0
    for i, (name, p) in enumerate(sorted(ps.items(), key=lambda item: item[1])):
        running = max(running, min(1.0, (len(ps) - i) * p))  # never below the smaller p's adjusted value
        adjusted[name] = running
    return adjusted


def seeds_for_power(diff, sd_a, sd_b, power=0.8, limit=1000):
    """The seeds per side at which a two-sided t-test at ALPHA finds a true difference diff with the given power,
    if the seeds spread by sd_a and sd_b (the normal approximation with t quantiles at 2n - 2 df); None beyond
    limit or with no difference."""
    spread = sd_a ** 2 + sd_b ** 2
    if diff == 0:
        return None
    for n in range(2, limit + 1):
        df = 2 * n - 2
        if (t_critical(ALPHA, df) + t_critical(2 * (1 - power), df)) ** 2 * spread / diff ** 2 <= n:
            return n
    return None


def verdict(diff, t, p, n_a, n_b):
    """The plain words for a difference in final val loss, its Welch t and its p (Holm's, in the report)."""
    if t is None:
        return "one seed: no error estimate" if min(n_a, n_b) < 2 else "no spread over seeds to compare with"
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


def ladder_speedup(ladder, base):
    """The compute-equivalent speed-up over the baseline: its full budget (1) over the budget at which the
    ladder gets down to the baseline's mean full-budget loss (base: per seed). Returns (speed-up, bound,
    interval): bound '>=' or '<' outside the ladder (the speed-up is then the ladder's edge); interval the 95 %
    interval (speedup_interval), None outside the ladder or with one seed anywhere."""
    budget, bound = budget_to_reach(ladder, statistics.fmean(base))
    flipped = {'': '', '<=': '>=', '>': '<'}[bound]  # a budget's bound, as the speed-up's
    if bound or min(len(losses) for losses in [base, *ladder.values()]) < 2:
        return 1 / budget, flipped, None
    return 1 / budget, flipped, speedup_interval(ladder, base, math.log(budget))


def speedup_interval(ladder, base, x):
    """The speed-up's 95 % interval by the delta method in log budget, with Welch-Satterthwaite's df: x, the log
    budget where the ladder's mean loss crosses the baseline's mean, moves with the three means that place it
    (the two rungs around it and the baseline's), each by its squared standard error s^2 / n; x +- t * se is
    then mapped to speed-ups. At 3 seeds this covers the true speed-up about 95 % of the time (test_report.py
    simulates it), where a percentile bootstrap of 3 seeds covers 81-83 %. Returns ((low, low bound), (high,
    high bound)): a bound beyond the ladder is its edge, marked '<' or '>' (the interval reaches outside it)."""
    points = sorted(ladder)
    i = max(j for j in range(len(points) - 1) if math.log(points[j]) <= x) if x > math.log(points[0]) else 0
    (b0, b1), y0 = points[i:i + 2], statistics.fmean(base)
    m0, m1 = statistics.fmean(ladder[b0]), statistics.fmean(ladder[b1])
    h, u = math.log(b1) - math.log(b0), (m0 - y0) / (m0 - m1)  # the segment's width; where x lies on it, 0 to 1
    # dx/dm0, dx/dm1, dx/dy0 times each mean's variance: the three terms of x's variance, and their samples' sizes
    parts = [((1 - u) * h / (m0 - m1)) ** 2 * statistics.variance(ladder[b0]) / len(ladder[b0]),
             (u * h / (m0 - m1)) ** 2 * statistics.variance(ladder[b1]) / len(ladder[b1]),
             (h / (m0 - m1)) ** 2 * statistics.variance(base) / len(base)]
    sizes = [len(ladder[b0]), len(ladder[b1]), len(base)]
    var = sum(parts)
    if var == 0:
        return (1 / math.exp(x), ''), (1 / math.exp(x), '')
    df = var ** 2 / sum(part ** 2 / (n - 1) for part, n in zip(parts, sizes))
    reach = t_critical(1 - 0.95, df) * math.sqrt(var)
    low_x, high_x = math.log(points[0]), math.log(points[-1])  # the ladder's ends
    high = (1 / points[0], '>') if x - reach < low_x else (math.exp(reach - x), '')
    low = (1 / points[-1], '<') if x + reach > high_x else (math.exp(-x - reach), '')
    return low, high


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
    """name -> {budget: [final val loss per reported seed]}, smallest budget first, for a sweep with --budgets:
    the names the ladder is for (a name slower than the baseline at the full budget runs no rung), and the
    baseline, which runs only the full budget that the ladders aim at."""
    found = {}
    for run in summary['runs']:
        if reported(summary, run):
            found.setdefault(run['name'], {}).setdefault(run.get('budget', 1), []).append(run['val'])
    if summary.get('laddered') is not None:  # the names the ladder was for, with the rungs each needed
        names = set(summary['laddered'])
    else:  # older summaries, and sweeps without a ladder: the names with more than one budget
        names = {name for name, ladder in found.items() if len(ladder) > 1}
    names |= {summary.get('baseline', 'swiglu')} if names else set()
    return {name: dict(sorted(ladder.items())) for name, ladder in found.items() if name in names}


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

        def cell(x):  # '-' where name did not run x: a size of the ladder runs a grid of its own per name
            if x not in losses:
                return '-'
            return f"**{losses[x]:.4f}**" if x == lr else 'diverged' if losses[x] == math.inf else f"{losses[x]:.4f}"
        cells = [name] + [cell(x) for x in lrs]
        cells.append(lr_text(lr) + bracket_flag(unbracketed(summary, name)[0]))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def grid_losses(summary, name):
    """lr -> the final val loss of name's grid run at that lr (inf when it diverged)."""
    return {r['lr']: r['val'] if r['state'] == 'done' else math.inf for r in summary['runs']
            if r['name'] == name and r['seed'] == grid_seed(summary) and r.get('budget', 1) == 1}


def unbracketed(summary, name):
    """(name's sides, 'downwards' or 'upwards', on which its chosen lr is not bracketed, each 'tied' or 'open' as
    common.bracket says, the seed SD): the seed SD is that of the reported seeds at the chosen lr (0 with one)."""
    vals = [r['val'] for r in final_runs(summary).get(name, [])]
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    sides = bracket(grid_losses(summary, name), summary['chosen_lr'][name], sd)
    return {side: kind for side, kind in sides.items() if kind != 'bracketed'}, sd


def bracket_flag(sides):
    """The chosen lr's flag in a table: the sides where the best lr may lie outside the grid, and where it ties."""
    on = {kind: ' and '.join(side for side, k in sides.items() if k == kind) for kind in ('open', 'tied')}
    said = ([f"not bracketed {on['open']}: extend the grid"] if on['open'] else []) + (
        [f"tied {on['tied']}"] if on['tied'] else [])
    return f" ({'; '.join(said)})" if said else ""


def bracket_lines(summary):
    """One line per name whose chosen lr is not bracketed: why, and what would settle it."""
    lines = []
    for name, lr in summary['chosen_lr'].items():
        sides, sd = unbracketed(summary, name)
        for side, kind in sides.items():
            lines.append(f"- {name}: lr {lr_text(lr)}, {side}: " + (
                f"no lr there is worse by more than sqrt(2) seed SDs ({math.sqrt(2) * sd:.4f}), so the best lr may "
                f"lie outside the grid: extend --lrs {side}." if kind == 'open' else
                f"its neighbour is within sqrt(2) seed SDs ({math.sqrt(2) * sd:.4f}) and an lr beyond it is worse "
                "by more, so the best lr lies inside the grid, not resolved between the two (more seeds would)."))
    return lines


def split_of(summary):
    """The split the reported seeds' losses were measured on: 'test' where an lr grid picked the lrs on val (the
    grid's own losses stay on val), else 'val'."""
    return 'test' if summary.get('held_out') == 'test' else 'val'


def results_table(groups, baseline, counts=None, split='val'):
    """One row per name: its parameters, exactly (counts: name -> non-embedding parameters, from the sweep; else
    the analyses' total), final losses (held out on split), speed-ups over SwiGLU in tokens and in time (per
    seed, against SwiGLU's mean curve), ms per step and the analyses, each a mean over the name's seeds."""
    base = {axis: mean_curve(curves_of(groups[baseline], axis)) for axis in (1, 2)} if baseline in groups else None
    roles = analysis_roles([r for rs in groups.values() for r in rs])
    lines = [f"| activation | lr | {'non-embedding' if counts else 'total'} parameters | {split} loss | train loss | "
             "speed-up in tokens | speed-up in time | ms / step | "
             + " | ".join(role.replace('_', ' ') for role in roles) + " | layer similarity |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(roles) + "---|"]
    for name, rs in groups.items():
        speeds = [format_speedups([speedup(base[axis], c) for c in curves_of(rs, axis)]) if base else 'n/a'
                  for axis in (1, 2)]
        found = [r['analysis'] for r in rs if r.get('analysis')]
        params = f"{counts[name]:,}" if counts and name in counts else f"{found[0]['params']:,}" if found else '?'
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


def number(value, spec):
    """value formatted by spec, or '-' for None."""
    return '-' if value is None else format(value, spec)


def compare(groups, reference):
    """name -> Welch's test of its final val losses against reference's: {'diff', 'se', 't', 'df', 'p' (None
    without a t), 'need' (seeds per side for 80 % power at the observed difference and spreads), 'n', 'n_ref'}."""
    ref = [r['val'] for r in groups[reference]]
    found = {}
    for name, rs in groups.items():
        if name == reference:
            continue
        vals = [r['val'] for r in rs]
        diff, se, t, df = welch(vals, ref)
        found[name] = {'diff': diff, 'se': se, 't': t, 'df': df, 'p': None if t is None else p_value(t, df),
                       'need': None if t is None else seeds_for_power(diff, statistics.stdev(vals),
                                                                      statistics.stdev(ref)),
                       'n': len(vals), 'n_ref': len(ref)}
    return found


def comparison_table(tests, adjusted, label, split='val'):
    """The table of compare's tests against label: the difference, its standard error, Welch's t, its df, p and
    Holm's p (adjusted: over every comparison of the report), the seeds that 80 % power would need, and the
    verdict, which Holm's p decides."""
    lines = [f"| activation | {split} loss − {label} | standard error | Welch's t | df | p | Holm's p | "
             "seeds for 80 % power | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for name, c in tests.items():
        q = adjusted.get((label, name))
        need = '-' if c['t'] is None else f"{c['need']}" if c['need'] else "> 1000"
        cells = [f"{c['diff']:+.4f}", number(c['se'], '.4f'), number(c['t'], '+.2f'), number(c['df'], '.1f'),
                 number(c['p'], '.3f'), number(q, '.3f'), need, verdict(c['diff'], c['t'], q, c['n'], c['n_ref'])]
        lines.append(f"| {name} | " + ' | '.join(cells) + ' |')
    return lines


def ladder_table(summary, baseline):
    """Each name's mean final held-out loss at each rung of the budget ladder, and its compute-equivalent
    speed-up over the baseline with its 95 % interval; [] without a ladder or the baseline's."""
    found = ladders(summary)
    if baseline not in found:
        return []
    # the baseline runs the full budget alone (sweeps before it ran its whole ladder too): every name's rungs
    budgets, base = sorted({b for ladder in found.values() for b in ladder}), found[baseline][1]
    lines = ["| activation | lr | " + " | ".join(f"{split_of(summary)} loss at {b:g}" for b in budgets)
             + " | compute-equivalent speed-up | 95 % interval | outside the ladder |",
             "|---|---|" + "---|" * len(budgets) + "---|---|---|"]
    for name, ladder in found.items():
        cells = [name, lr_text(summary['chosen_lr'][name]) if summary['chosen_lr'].get(name) else '-']
        cells += [mean_std(ladder[b]) if b in ladder else '-' for b in budgets]
        if name == baseline:
            cells += ['1 (the reference)', '-', '-']
        else:
            value, bound, interval = ladder_speedup(ladder, base)
            spread = ' to '.join(f"{b + ' ' if b else ''}{v:.2f}" for v, b in interval) if interval else \
                '-' if bound else 'one seed: none'
            cells += [f"{bound + ' ' if bound else ''}{value:.2f}", spread,
                      outside_words(bound, interval, min(ladder), baseline)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def outside_words(bound, interval, smallest, baseline):
    """What to do about a speed-up, or an end of its interval, outside the ladder."""
    if bound == '>=':
        return f"yes: at {smallest:g} of the steps already below {baseline}'s loss: add smaller --budgets"
    if bound == '<':
        return f"yes: not down to {baseline}'s loss even at the full budget: slower than {baseline}"
    ends = [words for (_, b), words in zip(interval or [], (f"its low end: it may be slower than {baseline}",
                                                            "its high end: add smaller --budgets")) if b]
    return f"{' and '.join(ends)}" if ends else "no"


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
  final {split} loss equals SwiGLU's full-budget mean final {split} loss, interpolated linearly in log budget
  between the rungs around it. Budgets count training tokens, not FLOPs or time. 95 % interval: the delta
  method in log budget (the crossing moves with the two rungs' mean losses around it and SwiGLU's, each by its
  s² / n), with t at Welch-Satterthwaite's df, which covers the true speed-up about 95 % of the time at 3
  seeds. Outside the ladder the speed-up, or an end of its interval, is a bound: `>=` 1 / the smallest rung, or
  `<` 1."""
RUNG_NOTE = """
  The rungs run from the top down: an activation's next rung runs only while the rung above it (at first its
  full runs) comes within 4 standard errors of SwiGLU's full-budget loss, since a rung below one clearly above
  that loss cannot move the crossing; '-' marks a rung that was not needed."""
GRID_NOTE = """
- **lr grid**: every activation at every learning rate with the grid's seed; each activation's lr is the one of
  the lowest final val loss (bold), and its reported seeds run at that lr. The chosen lr is bracketed when both
  its immediate neighbours in the grid are worse by more than sqrt(2) seed SDs (the SD of the difference of two
  one-seed runs, from the reported seeds at the chosen lr). On a side where it is not: 'tied' when an lr beyond
  the neighbour is worse by more, so the best lr lies inside the grid, unresolved; 'open' when none is, so the
  best lr may lie outside the grid: extend `--lrs` (the size ladder does so itself)."""
# what the held-out loss was measured on, by the summary's 'held_out' (None: a sweep from before it was recorded)
HELD_OUT = {None: "Measured on the first eval_steps x tokens_per_step tokens of the val split, as train.py then\n"
                  "  evaluated (now: windows spread evenly over the whole split).",
            'val': "Measured on windows spread evenly over the whole val split.",
            'test': "Measured on windows spread evenly over the whole test split; the lr grid's losses, which\n"
                    "  picked the lrs, on the val split: the text that picks an lr is not the text that reports it."}
NOTES = """
- **{split} loss**: the last evaluation's held-out loss; mean ± sample standard deviation over the seeds at the
  chosen lr. {held_out}
- **train loss**: the mean of the last {smooth} logged training losses (smoothed), then mean ± std over seeds.
- **speed-up in tokens / in time**: for each seed, the tokens (training seconds) SwiGLU's seed-averaged curve
  needs to reach its own final {split} loss, divided by the tokens (seconds) this seed's run needs to reach the
  same loss, interpolated linearly between evaluations; then mean ± std over seeds. Above 1: faster than
  SwiGLU. It is not a compute saving: every run's learning rate decays to its own end, so SwiGLU's curve tends
  to get to its final loss only at its last evaluation, and then a run that gets there within the last
  evaluation interval scores at most the last evaluation's tokens over the one before{cap}: it restates the
  final-loss gap. The budget ladder's compute-equivalent speed-up (`--budgets`) measures the saving. Training
  time is the sum of the training steps' times (train.py's train_time_s, or the logged ms per step times the
  steps), without evaluations and checkpoints; where the machine's load changed during the sweep
  (`--parallel`, other work) it measures the load as much as the activation.
- **ms / step**: the median wall-clock time of a training step (the first logged interval left out), mean over
  seeds.
- **Welch's t**: the difference of the mean final {split} losses divided by its standard error
  sqrt(s_a²/n_a + s_b²/n_b); df by Welch-Satterthwaite; **p**: two-sided, from the t distribution at that df.
  **Holm's p**: p adjusted by Holm's step-down procedure over all {tests} comparisons of this report together,
  so that all its verdicts hold at once at 0.05. The verdict says lower or higher loss at Holm's p < 0.05, else
  not distinguishable from seed noise at this number of seeds; with 3 seeds a side df is about 2 to 4, where p <
  0.05 needs |t| of about 2.8 to 4.3. **seeds for 80 % power**: the seeds per side at which a two-sided t-test
  at 0.05 finds the observed difference 4 times in 5, if it and the seeds' spreads are the true ones (normal
  approximation with t quantiles at 2n - 2 df); a rough guide, as noisy as the difference it starts from.
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
        unbracketed_lines = bracket_lines(summary)
        if unbracketed_lines:
            lines += ["Not bracketed:", ""] + unbracketed_lines + [""]
    split = split_of(summary)
    lines += ["## Results at each activation's lr", ""] + results_table(groups, baseline, summary.get('params'),
                                                                         split) + [""]
    # every Welch comparison of the report, then Holm's correction over all of them together
    tests = {baseline: compare(groups, baseline)} if baseline in groups and len(groups) > 1 else {}
    ablation = {name: rs for name, rs in groups.items() if name.startswith(f'{ablated}_r')}
    if summary['lrs'] and ablation and ablated in groups:
        order_groups = {f"{ablated} (r={summary['base_order']})": groups[ablated], **ablation}
        tests[f"r={summary['base_order']}"] = compare(order_groups, next(iter(order_groups)))
    adjusted = holm({(label, name): c['p'] for label, found in tests.items() for name, c in found.items()
                     if c['p'] is not None})
    if baseline in tests:
        lines += [f"## Against {baseline}: final {split} loss", ""] + comparison_table(tests[baseline], adjusted,
                                                                                        baseline, split) + [""]
    if ladder_table(summary, baseline):
        lines += [f"## Budget ladder: compute-equivalent speed-up over {baseline}", ""]
        lines += ladder_table(summary, baseline) + [""]
    if len(tests) > 1:
        label = f"r={summary['base_order']}"
        lines += [f"## Order ablation: {ablated} at its lr, against order {summary['base_order']}", ""]
        lines += comparison_table(tests[label], adjusted, label, split) + [""]
    if common_lr_table(summary):
        lines += [f"## Analyses at one lr for all ({lr_text(summary['analysis_lr'])}, seed {grid_seed(summary)})", "",
                  "The analyses follow the lr as well as the activation; here every activation's grid run at the "
                  "same lr, one seed each, so that a difference is the activation's.", ""]
        lines += common_lr_table(summary) + [""]
    if tasks_table(groups):
        lines += ["## Tasks (final evaluation)", ""] + tasks_table(groups) + [""]
    ladder_note = LADDER_NOTE.format(warmup=summary.get('warmup_steps'), split=split) + (
        RUNG_NOTE if summary.get('laddered') is not None else '')
    return ('\n'.join(lines) + (GRID_NOTE if summary['lrs'] else '') + (ladder_note if ladders(summary) else '')
            + NOTES.format(smooth=summary.get('smooth', 10), cap=cap_words(groups, baseline), tests=len(adjusted),
                           held_out=HELD_OUT[summary.get('held_out')], split=split))


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


def loss_label(summary):
    """The y label of the reported held-out loss: its split and its unit, which follows the data's tokenizer
    (unknown in older summaries)."""
    split = 'validation' if split_of(summary) == 'val' else 'test'
    return f"{split} loss ({UNITS.get(summary.get('tokenizer'), 'nats per token; per character for char data')})"


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
        ax.set_ylabel(loss_label(summary))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw_ladder(ax, summary, groups):
    """Each name's final held-out loss (mean ± std over seeds) at each budget of the ladder, and the baseline's
    full-budget loss that the compute-equivalent speed-up aims at."""
    found, baseline = ladders(summary), summary.get('baseline', 'swiglu')
    if not found:
        ax.axis('off')
        ax.text(0.5, 0.5, 'no budget ladder in this sweep (sweep.py --budgets)', ha='center', va='center')
        return False
    ax.set_title(f'the budget ladder: final {split_of(summary)} loss at each budget', fontsize=10)
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


def plot(summary, path, drawing=draw):
    """drawing's figure (draw's, or scale_draw's) as a PNG at path; False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    fig = drawing(summary, plt)
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return True


def write_report(summary, out):
    """report.md and its plot in out (val_loss.png; scale.png for a size ladder), from the summary; print the
    report."""
    scale = 'scale' in summary
    text = scale_report(summary) if scale else report(summary)
    atomic_write(os.path.join(out, 'report.md'), text.encode())
    print('\n' + text)
    png = os.path.join(out, 'scale.png' if scale else 'val_loss.png')
    if plot(summary, png, scale_draw if scale else draw):
        print(f"report: {os.path.join(out, 'report.md')}, plot: {png}")
    else:
        print(f"report: {os.path.join(out, 'report.md')}; pip install matplotlib to also get the plot")


# -----------------------------------------------------------------------------
# 3. The size ladder: the paper's table of final loss by model size, in miniature


def size_rows(summary):
    """[(size's summary, its non-embedding parameters (the baseline's), name -> final losses over seeds)], the
    smallest size first."""
    rows = []
    for size in summary['scale']:
        groups = final_runs(size)
        rows.append((size, size['params'][summary['baseline']], {name: [r['val'] for r in rs]
                                                                 for name, rs in groups.items()}))
    return rows


def gaps(summary):
    """name -> [(parameters, gap to the baseline, its standard error, Welch's df, its 95 % interval)] per size:
    the gap is the name's mean final loss less the baseline's (negative: lower loss than the baseline)."""
    found = {}
    for _, params, losses in size_rows(summary):
        base = losses[summary['baseline']]
        for name, vals in losses.items():
            if name != summary['baseline']:
                diff, se, _, df = welch(vals, base)
                reach = None if df is None else t_critical(ALPHA, df) * se
                interval = None if reach is None else (diff - reach, diff + reach)
                found.setdefault(name, []).append((params, diff, se, df, interval))
    return found


def weighted_line(points):
    """The weighted least-squares line of gap against log10(parameters) over the sizes with an error estimate
    (each weighted by 1 / its gap's squared standard error): (x mean, gap mean, slope, spread = the weighted sum
    of squares of x, the smallest Welch df, scatter = the residuals' chi-square per degree of freedom); None with
    fewer than 3 such sizes."""
    usable = [(math.log10(n), gap, se, df) for n, gap, se, df, _ in points if se]
    if len(usable) < 3:
        return None
    weights = [1 / se ** 2 for _, _, se, _ in usable]
    x_mean = sum(w * x for w, (x, *_) in zip(weights, usable)) / sum(weights)
    y_mean = sum(w * gap for w, (_, gap, *_) in zip(weights, usable)) / sum(weights)
    spread = sum(w * (x - x_mean) ** 2 for w, (x, *_) in zip(weights, usable))
    slope = sum(w * (x - x_mean) * gap for w, (x, gap, *_) in zip(weights, usable)) / spread
    scatter = sum(w * (gap - y_mean - slope * (x - x_mean)) ** 2
                  for w, (x, gap, *_) in zip(weights, usable)) / (len(usable) - 2)
    return x_mean, y_mean, slope, spread, min(df for *_, df in usable), scatter


def gap_trend(points):
    """The gap's trend with size: the slope of weighted_line, per 10x parameters, with its 95 % interval (t at
    the smallest Welch df among the sizes, a cautious choice); None with fewer than 3 sizes or no spread. When
    the gaps scatter about the line more than their standard errors allow (chi-square per degree of freedom
    above 1), the interval widens by its square root: the line is then not all there is to explain."""
    line = weighted_line(points)
    if line is None:
        return None
    _, _, slope, spread, df, scatter = line
    reach = t_critical(ALPHA, df) * math.sqrt(max(1.0, scatter) / spread)
    return slope, (slope - reach, slope + reach)


def trend_words(name, baseline, trend):
    """The trend of name's gap to the baseline in words, no stronger than its interval."""
    slope, (low, high) = trend
    interval = f"{slope:+.4f} per 10x parameters (95 % interval {low:+.4f} to {high:+.4f})"
    if high < 0:
        return f"{name}'s lead over {baseline} **grows** with size: its gap falls by {interval}"
    if low > 0:
        return f"{name}'s gap to {baseline} **shrinks** (rises) with size: {interval}"
    return (f"{name}'s gap to {baseline}: no trend these sizes resolve, {interval}; it may grow, hold or shrink "
            "within that")


def scale_report(summary):
    """The markdown report of a size ladder: final loss by size and activation, each gap to the baseline with its
    interval and Holm's p, the gap's trend with size, the compute-equivalent speed-up where a size has a budget
    ladder, and each size's chosen lrs."""
    baseline, rows = summary['baseline'], size_rows(summary)
    names = list(rows[0][2])
    seeds = sorted({len(v) for _, _, losses in rows for v in losses.values()})
    lines = [f"# Size ladder: {len(names)} activations at {len(rows)} sizes, "
             f"{' or '.join(map(str, seeds))} seeds each", ""]
    planned = summary.get('sizes', [])  # older scale summaries were written only once every size had finished
    if len(planned) > len(rows):
        lines += [f"**Partial: {len(rows)} of the {len(planned)} sizes are finished** (still to run: "
                  f"{', '.join(planned[len(rows):])}; the same sweep command resumes it).", ""]
    lines += [f"`{summary['config']}` at each size, {summary['tokens_per_param']} training tokens per non-embedding "
              f"parameter; each size's lr grid centred on the size below's choice; {summary['hardware']}. Each "
              "size's own report: `<size>/report.md`.", "",
              "## Final held-out loss by size (the paper's table in miniature)", "",
              "| size | non-embedding parameters | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for size, params, losses in rows:
        lines.append(f"| {size['size']} | {params / 1e6:.3f} M | "
                     + " | ".join(mean_std(losses[name]) if name in losses else '-' for name in names) + " |")
    found = gaps(summary)
    tests = {(name, i): p_value(gap / se, df) for name, points in found.items()
             for i, (_, gap, se, df, _) in enumerate(points) if df}
    adjusted = holm(tests)
    lines += ["", f"## Gap to {baseline} at each size", "",
              "| activation | size | parameters | gap (loss − " + baseline + ") | 95 % interval | p | Holm's p | "
              "verdict |", "|---|---|---|---|---|---|---|---|"]
    for name, points in found.items():
        for i, ((size, _, losses), (params, gap, se, df, interval)) in enumerate(zip(rows, points)):
            q = adjusted.get((name, i))
            words = verdict(gap, gap / se, q, len(losses[name]), len(losses[baseline])) if q is not None else \
                "no error estimate"
            lines.append(f"| {name} | {size['size']} | {params / 1e6:.3f} M | {gap:+.4f} | "
                         + (f"{interval[0]:+.4f} to {interval[1]:+.4f}" if interval else '-')
                         + f" | {number(tests.get((name, i)), '.3f')} | {number(q, '.3f')} | {words} |")
    lines += ["", "## The gap's trend with size", ""]
    for name, points in found.items():
        trend = gap_trend(points)
        lines.append(f"- {trend_words(name, baseline, trend)}." if trend else f"- {name}: fewer than 3 sizes with "
                     "an error estimate: no trend.")
    speedups = [(size, ladder_table(size, baseline)) for size, _, _ in rows]
    lines += ["", f"## Compute-equivalent speed-up over {baseline} (budget ladder)", ""]
    for size, table in speedups:
        if table:
            lines += [f"At size {size['size']}:", ""] + table + [""]
    if not any(table for _, table in speedups):
        lines += ["No size of this sweep has a budget ladder.", ""]
    lines += ["## Chosen lr at each size", "", "| activation | " + " | ".join(s['size'] for s, _, _ in rows) + " |",
              "|---|" + "---|" * len(rows)]
    for name in names:
        cells = []
        for size, _, _ in rows:
            lr = size['chosen_lr'].get(name)
            cells.append('-' if lr is None else lr_text(lr) + bracket_flag(unbracketed(size, name)[0]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return '\n'.join(lines + [""]) + SCALE_NOTES.format(tests=len(adjusted))


SCALE_NOTES = """
- **held-out loss**: each size's reported seeds at its chosen lr, measured on the test split; the lrs picked on
  val. **gap**: the activation's mean final loss less the baseline's at the same size; 95 % interval: Welch's t
  at its df; Holm's p over all {tests} gaps of this report; the verdict from Holm's p.
- **trend**: the gap against log10(parameters), weighted least squares (each size by 1 / its gap's squared
  standard error); the slope is the change of the gap per 10x parameters, with a 95 % interval from t at the
  smallest df among the sizes, widened by the square root of the residuals' chi-square per degree of freedom
  when that is above 1 (gaps that scatter about the line more than their errors allow). It says grows or
  shrinks only when the interval excludes 0.
- **compute-equivalent speed-up**: as in a single sweep's report, at each size with a budget ladder.
"""


def scale_draw(summary, plt):
    """The size ladder's figure: final loss against non-embedding parameters (log axis), seed mean ± SD per
    activation; and each gap to the baseline with its 95 % interval and its fitted trend."""
    fig, (loss_ax, gap_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    rows = size_rows(summary)
    for i, name in enumerate(rows[0][2]):
        xs = [params for _, params, losses in rows if name in losses]
        vals = [losses[name] for _, _, losses in rows if name in losses]
        loss_ax.errorbar(xs, [statistics.fmean(v) for v in vals], yerr=[statistics.stdev(v) if len(v) > 1 else 0
                                                                       for v in vals],
                         marker='o', capsize=3, color=f'C{i % 10}', label=name)
    for i, (name, points) in enumerate(gaps(summary).items()):
        color = f'C{(i + 1) % 10}'
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        errors = [[y - p[4][0] if p[4] else 0 for y, p in zip(ys, points)],
                  [p[4][1] - y if p[4] else 0 for y, p in zip(ys, points)]]
        gap_ax.errorbar(xs, ys, yerr=errors, marker='o', capsize=3, color=color, label=f'{name} (95 % interval)')
        line = weighted_line(points)
        if line:  # the fitted line, through the weighted means
            x_mean, y_mean, slope, *_ = line
            gap_ax.plot(xs, [y_mean + slope * (math.log10(x) - x_mean) for x in xs], ls=':', color=color,
                        label=f'{name} trend: {slope:+.4f} per 10x')
    gap_ax.axhline(0, color='gray', lw=1)
    for ax, title in ((loss_ax, 'final held-out loss by size (seed mean ± SD)'),
                      (gap_ax, f"gap to {summary['baseline']} (negative: lower loss)")):
        ax.set_xscale('log')
        ax.set_xlabel('non-embedding parameters (log scale)')
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    loss_ax.set_ylabel(loss_label(summary['scale'][0]))
    gap_ax.set_ylabel('loss difference')
    fig.tight_layout()
    return fig


# -----------------------------------------------------------------------------
# 4. From the command line


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
