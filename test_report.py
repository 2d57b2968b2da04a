"""Tests of report.py: the report's numbers on hand-made curves, its words and tables on hand-made summaries,
and `python report.py` end to end from a summary.json.

    python -m pytest test_report.py -q
"""
import json
import re
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import report
from common import bracket

HERE = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------
# the report's numbers on hand-made curves


def test_x_to_reach_interpolates_between_evaluations():
    curve = [(0, 4.0), (100, 3.0), (200, 2.0)]
    assert report.x_to_reach(curve, 2.0) == pytest.approx(200)
    assert report.x_to_reach(curve, 2.5) == pytest.approx(150)
    assert report.x_to_reach(curve, 4.5) == 0
    assert report.x_to_reach(curve, 1.9) is None


def test_speedup_against_the_baseline_curve():
    base = [(100, 3.0), (200, 2.0)]
    assert report.speedup(base, base) == (pytest.approx(1.0), '')
    assert report.speedup(base, [(100, 2.5), (200, 1.5)]) == (pytest.approx(200 / 150), '')  # 2.0 at 150
    assert report.speedup(base, [(100, 3.5), (200, 2.5)]) == (pytest.approx(1.0), '<')  # never gets to 2.0
    assert report.speedup(base, [(50, 1.9), (200, 1.0)]) == (pytest.approx(200 / 50), '>=')  # there at once
    cell = report.format_speedups([(1.2, ''), (1.0, ''), (0.9, '<')])
    assert cell.startswith(f"{(1.2 + 1.0 + 0.9) / 3:.2f} ± ") and '1/3 never reach it' in cell


def test_budget_to_reach_interpolates_in_log_budget():
    ladder = {b: [1.8 - 0.1 * math.log(b)] for b in (0.5, 0.7, 1.0)}  # loss linear in log budget
    budget, bound = report.budget_to_reach(ladder, 1.85)  # 1.8 - 0.1 ln b = 1.85 at ln b = -0.5, between 0.5 and 0.7
    assert budget == pytest.approx(math.exp(-0.5)) and bound == ''
    assert report.budget_to_reach(ladder, 1.95) == (0.5, '<=')  # there at the smallest rung already
    assert report.budget_to_reach(ladder, 1.7) == (1.0, '>')  # not even at the full budget
    assert report.budget_to_reach(ladder, 1.8) == (pytest.approx(1.0), '')


def test_ladder_speedup_and_its_delta_method_interval():
    ladder = {b: [1.8 - 0.1 * math.log(b)] * 3 for b in (0.5, 0.7, 1.0)}
    value, bound, interval = report.ladder_speedup(ladder, [1.85] * 3)
    assert value == pytest.approx(math.exp(0.5)) and bound == ''  # SwiGLU's full budget over e^-0.5 of it
    assert interval == ((pytest.approx(math.exp(0.5)), ''), (pytest.approx(math.exp(0.5)), ''))  # no spread
    spread = {b: [loss - 0.005, loss, loss + 0.005] for b, (loss, *_) in ladder.items()}
    value, bound, ((low, _), (high, _)) = report.ladder_speedup(spread, [1.845, 1.85, 1.855])
    # by hand: the crossing at ln b = -0.5 lies on the 0.5-0.7 segment (ln 0.5 = -0.693, ln 0.7 = -0.357), u of
    # the way along, where the mean loss falls by 0.1 h over h = ln 1.4: x moves by 1 / 0.1 times the rungs' mean
    # losses ((1 - u) and u of them) and SwiGLU's; each mean's variance 0.005^2 / 3
    u = (-0.5 - math.log(0.5)) / math.log(1.4)
    each = 0.005 ** 2 / 3 / 0.1 ** 2
    var = each * ((1 - u) ** 2 + u ** 2 + 1)
    df = var ** 2 / (each ** 2 * ((1 - u) ** 4 + u ** 4 + 1) / 2)  # Welch-Satterthwaite, n - 1 = 2 each
    reach = report.t_critical(0.05, df) * math.sqrt(var)
    assert (low, high) == (pytest.approx(math.exp(0.5 - reach)), pytest.approx(math.exp(0.5 + reach)))
    # SwiGLU's mean loss 1.87 is just above the 0.5 rung's 1.8693: the speed-up is a bound, with no interval
    assert report.ladder_speedup(ladder, [1.86, 1.87, 1.88]) == (2.0, '>=', None)
    assert report.ladder_speedup(ladder, [1.7] * 3) == (1.0, '<', None)
    # inside, but the interval reaches past both ends of the ladder: each end is the ladder's, marked
    wide = {b: [loss - 0.05, loss, loss + 0.05] for b, (loss, *_) in ladder.items()}
    assert report.ladder_speedup(wide, [1.82, 1.86, 1.90])[1:] == ('', ((1.0, '<'), (2.0, '>')))
    assert report.ladder_speedup({b: v[:1] for b, v in ladder.items()}, [1.85])[2] is None  # one seed


def simulated_coverage(speedup, slope, sd_rungs, sd_base, sims, seeds=3):
    """How often ladder_speedup's 95 % interval holds the true speed-up, over simulated sweeps: a ladder
    0.5 / 0.7 / 1 whose true mean loss is 1.7 - slope ln b, the baseline's true mean where it crosses at
    1 / speedup, each seed's loss normal around its mean (sd_rungs per rung, sd_base for the baseline)."""
    rng = np.random.default_rng(0)
    budgets = (0.5, 0.7, 1.0)
    rungs = {b: 1.7 - slope * math.log(b) + rng.normal(0, sd, (sims, seeds)) for b, sd in zip(budgets, sd_rungs)}
    base = 1.7 + slope * math.log(speedup) + rng.normal(0, sd_base, (sims, seeds))
    hits = 0
    for i in range(sims):
        _, _, interval = report.ladder_speedup({b: list(r[i]) for b, r in rungs.items()}, list(base[i]))
        if interval:  # a point outside the ladder has none: counted as a miss
            (low, low_bound), (high, high_bound) = interval
            hits += (low_bound == '<' or low <= speedup) and (high_bound == '>' or speedup <= high)
    return hits / sims


def test_the_speedup_interval_covers_at_3_seeds():
    # the kept Shakespeare sweep's PolyNorm: speed-up 1.23, its rungs' SDs and SwiGLU's as measured; then a
    # noisier one (the stdlib sweep's spreads); the percentile bootstrap report.py used before covered 81 and
    # 83 % (300 sweeps each)
    assert simulated_coverage(1.23, 0.32, (0.011, 0.008, 0.0064), 0.0081, sims=800) >= 0.93
    assert simulated_coverage(1.21, 0.45, (0.03, 0.03, 0.02), 0.02, sims=800) >= 0.93


def test_mean_curve_over_seeds():
    curve = report.mean_curve([[(10, 3.0), (20, 2.0)], [(12, 1.0), (22, 1.0)]])
    assert curve == [(11, 2.0, 1.0, 3.0), (21, 1.5, 1.0, 2.0)]
    with pytest.raises(SystemExit, match="different number"):
        report.mean_curve([[(10, 3.0)], [(10, 3.0), (20, 2.0)]])


def test_mean_std_over_seeds():
    assert report.mean_std([1.5]) == '1.5000'  # one seed: the number alone
    assert report.mean_std([1.0, 2.0, 3.0], 2) == '2.00 ± 1.00'  # the sample standard deviation


def test_welch_t_on_known_samples():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    # by hand: means 2.5 and 4, variances 5/3 and 4, squared standard errors 5/12 and 4/3
    diff, se, t, df = report.welch(a, b)
    assert diff == pytest.approx(-1.5)
    assert se == pytest.approx(math.sqrt(5 / 12 + 4 / 3))
    assert t == pytest.approx(-1.5 / math.sqrt(1.75))
    assert df == pytest.approx(1.75 ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2))
    assert report.welch([1.0], b)[1:] == (None, None, None)  # one seed: no standard error
    assert report.welch([2.0, 2.0], [1.0, 1.0]) == (1.0, 0.0, None, None)  # no spread: no t


def test_welch_t_matches_scipy():
    stats = pytest.importorskip('scipy.stats')
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    expected = stats.ttest_ind(a, b, equal_var=False)
    _, _, t, df = report.welch(a, b)
    assert t == pytest.approx(expected.statistic)
    assert df == pytest.approx(expected.df)


def test_p_value_matches_scipys_welch_test():
    stats = pytest.importorskip('scipy.stats')
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    _, _, t, df = report.welch(a, b)
    assert report.p_value(t, df) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    for t, df in ((0.3, 2.2), (4.75, 3.2), (10.8, 3.8), (50.0, 2.1), (1.0, 60.0)):
        assert report.p_value(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9)
        assert report.t_critical(2 * stats.t.sf(t, df), df) == pytest.approx(t, rel=1e-9)


def test_p_value_without_scipy_in_closed_form():
    # the t distribution's two-sided tail in closed form at 1 df (Cauchy) and 2 df; the critical t at 4 df
    for t in (0.1, 1.0, 3.0, 30.0):
        assert report.p_value(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-10)
        assert report.p_value(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)
    assert report.p_value(2.776445, 4) == pytest.approx(0.05, abs=1e-6)
    assert report.t_critical(0.05, 4) == pytest.approx(2.776445, abs=1e-6)
    assert report.t_critical(0.05, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)


def test_holm_adjusts_step_down():
    # sorted 0.01, 0.03, 0.04: x3, x2, x1, never below the one before
    assert report.holm({'a': 0.01, 'b': 0.04, 'c': 0.03}) == pytest.approx({'a': 0.03, 'c': 0.06, 'b': 0.06})
    assert report.holm({'a': 0.6, 'b': 0.5}) == pytest.approx({'b': 1.0, 'a': 1.0})  # capped at 1
    assert report.holm({}) == {}


def test_seeds_for_power():
    # a difference of one SD per side needs about 2 (1.96 + 0.84)^2 = 16 seeds (the t quantiles add one or two)
    assert report.seeds_for_power(0.01, 0.01, 0.01) in (17, 18)
    assert report.seeds_for_power(0.1, 0.01, 0.01) <= 3  # ten SDs: the fewest a t-test can use
    assert report.seeds_for_power(0.0, 0.01, 0.01) is None
    assert report.seeds_for_power(1e-5, 0.01, 0.01) is None  # beyond 1000


def test_verdict_words():
    assert report.verdict(-0.01, -2.4, 0.084, 3, 3) == "not distinguishable at 3 seeds"  # |t| > 2 is not enough
    assert report.verdict(-0.01, -4.0, 0.01, 3, 3) == "lower loss"
    assert report.verdict(0.01, 4.0, 0.049, 3, 2) == "higher loss"
    assert report.verdict(0.01, None, None, 1, 3) == "one seed: no error estimate"
    assert report.verdict(0.01, None, None, 3, 3) == "no spread over seeds to compare with"


# -----------------------------------------------------------------------------
# the report's words and tables on hand-made summaries


def fake_summary(vals, tasks=None, analyses=None):
    """A summary of runs with the given final val losses {name: [per seed]}, curves ending there; tasks and
    analyses {name: [per seed]} where given."""
    runs = []
    for name, losses in vals.items():
        for seed, loss in enumerate(losses):
            acc = (tasks or {}).get(name, [None] * len(losses))[seed]
            runs.append({'name': name, 'activation': name, 'order': None, 'lr': None, 'seed': seed,
                         'folder': f'{name}_s{seed}', 'state': 'done', 'val': loss, 'train': loss,
                         'ms_per_step': 10.0, 'train_time_s': 2.0,
                         'analysis': (analyses or {}).get(name, [None] * len(losses))[seed],
                         'curve': [[10, 1000, 1.0, loss + 1], [20, 2000, 2.0, loss]],
                         'tasks': {} if acc is None else {'hellaswag': {'step': 20, 'acc': 0.3, 'acc_norm': acc,
                                                                        'n': 100}}})
    return {'config': 'preset.py', 'overrides': {}, 'hardware': 'test', 'baseline': 'swiglu', 'ablated': 'polynorm',
            'smooth': 10, 'lrs': None, 'seeds': 3, 'orders': None, 'base_order': 3,
            'chosen_lr': {name: None for name in vals}, 'runs': runs}


def grid_summary(grid_seed=None):
    """An lr grid over 1e-3, 2e-3, 4e-3 (relu diverged at 4e-3) with seed 0 (older sweeps) or with its own
    grid_seed; then seed 1 at each chosen lr (and seed 0 too with a grid_seed, 0.01 below the grid's run there),
    and PolyNorm's order 2 at its lr."""
    grid = {'swiglu': [2.1, 2.0, 2.2], 'polynorm': [2.2, 2.1, 1.9], 'relu': [2.3, 2.4, None]}
    chosen = {'swiglu': 2e-3, 'polynorm': 4e-3, 'relu': 1e-3}
    runs = []

    def add(name, lr, seed, val):
        done = val is not None
        runs.append({'name': name, 'activation': name.split('_r')[0], 'order': None, 'lr': lr, 'seed': seed,
                     'folder': f'{name}_lr{lr}_s{seed}', 'state': 'done' if done else 'diverged', 'analysis': None,
                     **({'val': val, 'train': val, 'ms_per_step': 10.0, 'train_time_s': 2.0, 'tasks': {},
                         'curve': [[10, 1000, 1.0, val + 1], [20, 2000, 2.0, val]]} if done else {})})
    for i, lr in enumerate((1e-3, 2e-3, 4e-3)):
        for name, vals in grid.items():
            add(name, lr, 0 if grid_seed is None else grid_seed, vals[i])
    for seed in (1,) if grid_seed is None else (0, 1):
        for name, lr in chosen.items():
            add(name, lr, seed, grid[name][[1e-3, 2e-3, 4e-3].index(lr)] + 0.01 * (seed or -1))
    add('polynorm_r2', 4e-3, 0, 1.95)
    return {**fake_summary({}), 'lrs': [1e-3, 2e-3, 4e-3], 'orders': [2, 3], 'seeds': 2,
            'chosen_lr': chosen, 'runs': runs, **({} if grid_seed is None else {'grid_seed': grid_seed})}


def ladder_summary():
    """A budget ladder 0.5, 0.7, 1 of seeds 0, 1, 2 (±0.01 around each rung's mean): swiglu's loss 1.9 - 0.1 ln b,
    polynorm's 1.85 - 0.1 ln b (it gets to 1.9 at e^-0.5 of the steps), relu's 1.95 - 0.1 ln b (never)."""
    runs = []
    for budget in (1.0, 0.5, 0.7):
        for seed in range(3):
            for name, full in (('swiglu', 1.9), ('polynorm', 1.85), ('relu', 1.95)):
                val = full - 0.1 * math.log(budget) + 0.01 * (seed - 1)
                runs.append({'name': name, 'activation': name, 'order': None, 'lr': None, 'seed': seed,
                             'budget': budget, 'folder': f'{name}_b{budget:g}_s{seed}', 'state': 'done', 'val': val,
                             'train': val, 'ms_per_step': 10.0, 'train_time_s': 2.0, 'analysis': None, 'tasks': {},
                             'curve': [[10, 1000 * budget, 1.0, val + 1], [20, 2000 * budget, 2.0, val]]})
    return {**fake_summary({}), 'budgets': [0.5, 0.7, 1.0], 'warmup_steps': 2,
            'chosen_lr': {'swiglu': None, 'polynorm': None, 'relu': None}, 'runs': runs}


def section(text, heading):
    """The lines of the report's section whose heading starts with heading."""
    return text.split('## ' + heading)[1].split('\n## ')[0]


def rows(text, heading):
    """The table rows of a section: first cell -> the other cells."""
    return table_rows(section(text, heading))


def table_rows(text):
    """The rows of the tables in text: first cell -> the other cells (header rows left out)."""
    return {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
            for line in text.splitlines() if line.startswith('| ') and not line.startswith('| activation')}


def ladder_at(text, size):
    """A scale report's budget ladder rows at one size: the table under 'At size <size>:'."""
    return table_rows(section(text, 'Compute-equivalent speed-up').split(f'At size {size}:')[1].split('At size')[0])


def test_report_words_follow_welch_and_tasks_show():
    summary = fake_summary({'swiglu': [2.00, 2.01, 1.99], 'polynorm': [1.90, 1.91, 1.89], 'relu': [2.00, 2.02, 1.97]},
                           tasks={'swiglu': [0.30, 0.32, 0.31], 'polynorm': [0.35, 0.36, 0.37]})
    text = report.report(summary)
    against = rows(text, 'Against swiglu')
    assert against['polynorm'][0] == '-0.1000' and against['polynorm'][-1] == 'lower loss'
    assert against['relu'][-1] == 'not distinguishable at 3 seeds'
    assert 'swiglu' not in against  # the baseline is not compared with itself
    # Holm over the 2 comparisons: the smaller p doubled, the larger kept (not below the first's)
    p = {name: float(against[name][4]) for name in ('polynorm', 'relu')}
    assert float(against['polynorm'][5]) == pytest.approx(min(1, 2 * p['polynorm']), abs=1e-3)
    assert float(against['relu'][5]) == pytest.approx(max(p['relu'], 2 * p['polynorm']), abs=1e-3)
    assert "all 2 comparisons of this report together" in text
    tasks = rows(text, 'Tasks')
    assert tasks['polynorm'] == ['0.360 ± 0.010 (n=100)'] and tasks['relu'] == ['-']


def test_report_without_scipy_gives_the_same_verdict(monkeypatch):
    summary = fake_summary({'swiglu': [2.00, 2.01, 1.99], 'polynorm': [1.96, 1.97, 1.98]})
    text = report.report(summary)
    monkeypatch.setitem(sys.modules, 'scipy', None)  # import scipy now raises ImportError
    assert report.report(summary) == text and 'scipy' not in text
    assert rows(text, 'Against swiglu')['polynorm'][4:] == ['0.021', '0.021', '4', 'lower loss']  # scipy: p 0.0213


def test_grid_table_marks_the_choice_the_edges_and_divergence():
    text = report.report(grid_summary())
    grid = rows(text, 'Learning rate grid')
    assert grid['swiglu'] == ['2.1000', '**2.0000**', '2.2000', '0.002']  # the chosen lr in bold, inside the grid
    assert grid['polynorm'][-1] == '0.004 (not bracketed upwards: extend the grid)'
    assert grid['relu'] == ['**2.3000**', '2.4000', 'diverged', '0.001 (not bracketed downwards: extend the grid)']
    assert ("- polynorm: lr 0.004, upwards: no lr there is worse by more than sqrt(2) seed SDs (0.0100), so the best "
            "lr may lie outside the grid: extend --lrs upwards.") in text
    assert "Seed 0 both picked each activation's lr" in text  # an older summary: no grid seed of its own
    results = rows(text, 'Results')
    assert list(results) == ['relu', 'swiglu', 'polynorm', 'polynorm_r2']  # in the order of their first run
    assert results['polynorm'][:1] + results['polynorm'][2:3] == ['0.004', '1.9050 ± 0.0071']  # seeds 0 and 1
    ablation = rows(text, 'Order ablation')
    assert list(ablation) == ['polynorm_r2'] and ablation['polynorm_r2'][0] == '+0.0450'  # 1.95 - 1.905


def test_grid_table_of_grids_of_their_own():
    # a size of the ladder above the smallest runs each name's own grid (the size below's lr, its half and
    # double): the table's columns are every lr run, with '-' where a name did not run one
    summary = grid_summary()
    summary['runs'] = [r for r in summary['runs'] if not (r['name'] == 'swiglu' and r['lr'] == 4e-3)]
    grid = rows(report.report(summary), 'Learning rate grid')
    assert grid['swiglu'] == ['2.1000', '**2.0000**', '-', '0.002 (not bracketed upwards: extend the grid)']
    assert grid['polynorm'][:3] == ['2.2000', '2.1000', '**1.9000**']


def test_the_grid_seed_is_not_reported_and_analyses_come_at_one_lr_too():
    summary = grid_summary(grid_seed=1000)
    for run in summary['runs']:
        if run['state'] == 'done':  # a rank that follows the lr
            run['analysis'] = {'params': 1e6, 'erank_up': 1e4 * run['lr'], 'erank_down': 5.0, 'similarity': 0.5}
    summary['analysis_lr'] = 2e-3
    text = report.report(summary)
    assert 'Learning rate grid (seed 1000' in text and 'Seed 0 both picked' not in text
    assert rows(text, 'Learning rate grid')['polynorm'][2] == '**1.9000**'  # the grid's own run
    results = rows(text, 'Results')
    assert results['polynorm'][2] == '1.9000 ± 0.0141'  # seeds 0 and 1 (1.89, 1.91), not the grid's run
    assert results['polynorm'][-3] == '40.0 ± 0.0' and results['swiglu'][-3] == '20.0 ± 0.0'  # each at its lr
    common = rows(text, 'Analyses at one lr for all (0.002, seed 1000)')
    assert common == {'swiglu': ['2.0000', '20.0', '5.0', '0.500'], 'polynorm': ['2.1000', '20.0', '5.0', '0.500'],
                      'relu': ['2.4000', '20.0', '5.0', '0.500']}
    assert 'Analyses at one lr' not in report.report(grid_summary())  # an older summary has none


def test_budget_ladder_table():
    text = report.report(ladder_summary())
    header = section(text, 'Budget ladder').splitlines()[2]
    assert '| compute-equivalent speed-up |' in header and '| val loss at 0.5 |' in header
    ladder = rows(text, 'Budget ladder: compute-equivalent speed-up over swiglu')
    assert ladder['swiglu'][:4] == ['-', '1.9693 ± 0.0100', '1.9357 ± 0.0100', '1.9000 ± 0.0100']
    assert ladder['swiglu'][4] == '1 (the reference)'
    assert ladder['polynorm'][4] == f"{math.exp(0.5):.2f}"
    low, high = ladder['polynorm'][5].split(' to ')
    assert float(low) < math.exp(0.5) and high == '> 2.00'  # 3 seeds of SD 0.01: the interval reaches past 0.5
    assert ladder['polynorm'][6] == 'its high end: add smaller --budgets'
    assert ladder['relu'][4:6] == ['< 1.00', '-']  # never down to SwiGLU's loss, in any resample
    assert ladder['relu'][6].startswith('yes: not down to swiglu')
    assert rows(text, 'Results')['polynorm'][2] == '1.8500 ± 0.0100'  # the full runs only
    assert 'with the full run\'s warmup (2 steps)' in text
    assert 'Budget ladder' not in report.report(fake_summary({'swiglu': [2.0, 2.1], 'polynorm': [1.9, 2.0]}))


def test_tables_name_the_split_the_seeds_were_measured_on():
    # an lr grid's sweep reports its seeds on the test split (the grid picked on val): every table of the seeds
    # and every note about them says test loss
    text = report.report({**ladder_summary(), 'held_out': 'test'})
    headers = {part: section(text, part).splitlines()[2] for part in ('Results', 'Against', 'Budget ladder')}
    assert '| test loss |' in headers['Results'] and '| test loss − swiglu |' in headers['Against']
    assert '| test loss at 0.5 |' in headers['Budget ladder'] and '## Against swiglu: final test loss' in text
    assert '- **test loss**:' in text and 'val loss' not in text.replace('\n  ', ' ')
    assert "mean final test loss equals SwiGLU's full-budget mean final test loss" in text.replace('\n  ', ' ')


def test_budget_ladder_table_of_a_sweep_that_ran_only_the_rungs_it_needed():
    # as sweep.py now runs it: swiglu at the full budget alone; relu, clearly above swiglu's loss at the full
    # budget, no rung at all; polynorm its rungs
    summary = ladder_summary()
    summary['runs'] = [r for r in summary['runs'] if r['budget'] == 1 or r['name'] == 'polynorm']
    summary['laddered'] = ['polynorm', 'relu']
    text = report.report(summary)
    ladder = rows(text, 'Budget ladder: compute-equivalent speed-up over swiglu')
    assert ladder['swiglu'][:5] == ['-', '-', '-', '1.9000 ± 0.0100', '1 (the reference)']
    assert ladder['polynorm'][4] == f"{math.exp(0.5):.2f}"
    assert ladder['relu'][:6] == ['-', '-', '-', '1.9500 ± 0.0100', '< 1.00', '-']
    assert ladder['relu'][6].startswith('yes: not down to swiglu') and "'-' marks a rung that was not needed" in text
    summary['runs'] = [r for r in summary['runs'] if r['budget'] == 1]  # no name needed a rung: still said
    assert rows(report.report(summary), 'Budget ladder')['relu'][1:3] == ['1.9500 ± 0.0100', '< 1.00']
    assert "a rung that was not needed" not in report.report(ladder_summary())  # older summaries: as they were


def test_an_lr_is_bracketed_by_its_neighbours_worse_by_sqrt2_seed_sds():
    summary = grid_summary()  # swiglu's seeds at 2e-3: 2.00 and 2.01, SD 0.0071, sqrt(2) SD 0.0100
    grid = {r['lr']: r for r in summary['runs'] if r['name'] == 'swiglu' and r['seed'] == 0}
    assert report.unbracketed(summary, 'swiglu') == ({}, pytest.approx(0.0071, abs=1e-4))
    grid[4e-3]['val'] = 2.009  # within sqrt(2) SD of the best (one SD is 0.0071), the grid's last: may lie above
    assert report.unbracketed(summary, 'swiglu')[0] == {'upwards': 'open'}
    grid[1e-3]['val'] = 2.0  # a tie below
    assert report.unbracketed(summary, 'swiglu')[0] == {'downwards': 'open', 'upwards': 'open'}
    grid[4e-3]['val'] = 2.011  # worse by more than sqrt(2) SD
    assert report.unbracketed(summary, 'swiglu')[0] == {'downwards': 'open'}
    summary['chosen_lr']['swiglu'], grid[4e-3]['val'] = 4e-3, 1.9  # at the grid's edge: never bracketed there
    assert report.unbracketed(summary, 'swiglu')[0] == {'upwards': 'open'}
    # only the immediate neighbour brackets: a tied neighbour with a clearly worse lr beyond it is 'tied', the best
    # lr inside the grid but not resolved, whereas ties out to the grid's edge leave it open
    summary['chosen_lr']['swiglu'], grid[1e-3]['val'], grid[4e-3]['val'] = 2e-3, 2.005, 3.0
    assert report.unbracketed(summary, 'swiglu')[0] == {'downwards': 'open'}
    summary['runs'].append({**grid[1e-3], 'lr': 5e-4, 'val': 2.008})  # the grid gains 5e-4, tied too
    summary['lrs'] = [5e-4] + summary['lrs']
    assert report.unbracketed(summary, 'swiglu')[0] == {'downwards': 'open'}
    summary['runs'][-1]['val'] = 2.011  # clearly worse
    assert report.unbracketed(summary, 'swiglu')[0] == {'downwards': 'tied'}
    grid[4e-3]['val'] = 2.0  # a tie above, at the grid's edge
    grid_rows = rows(report.report(summary), 'Learning rate grid')
    assert grid_rows['swiglu'] == ['2.0110', '2.0050', '**2.0000**', '2.0000',
                                   '0.002 (not bracketed upwards: extend the grid; tied downwards)']


def test_bracket_walks_out_through_ties_to_the_first_clearly_worse_lr():
    losses = {1e-3: 1.30, 2e-3: 1.21, 4e-3: 1.20, 8e-3: 1.205, 1.6e-2: 1.208, 3.2e-2: 1.5}
    assert bracket(losses, 4e-3, 0.01) == {'downwards': 'tied', 'upwards': 'tied'}  # sqrt(2) SD 0.0141
    assert bracket(losses, 4e-3, 0.005) == {'downwards': 'bracketed', 'upwards': 'tied'}  # 0.0071: 2e-3 is worse
    assert bracket(losses, 4e-3, 0.001) == {'downwards': 'bracketed', 'upwards': 'bracketed'}
    assert bracket(losses, 4e-3, 0.1) == {'downwards': 'open', 'upwards': 'tied'}  # 0.1414: only 3.2e-2 is worse
    assert bracket({**losses, 3.2e-2: math.inf}, 4e-3, 0.5) == {'downwards': 'open', 'upwards': 'tied'}  # diverged
    assert bracket({4e-3: 1.2}, 4e-3, 0.0) == {'downwards': 'open', 'upwards': 'open'}


def test_the_kept_sweeps_brackets():
    # the Shakespeare grid from 2e-3 to 6.4e-2: three chosen lrs have a neighbour within sqrt(2) seed SDs, each
    # with a clearly worse lr beyond it
    with open(os.path.join(HERE, 'assets', 'sweep_cpu_long', 'summary.json')) as f:
        summary = json.load(f)
    assert summary['chosen_lr'] == {'relu2': 4e-3, 'swiglu': 4e-3, 'polyrelu': 8e-3, 'polynorm': 1.6e-2,
                                    'polynorm_glu': 1.6e-2}
    assert {name: report.unbracketed(summary, name)[0] for name in summary['chosen_lr']} == {
        'relu2': {}, 'swiglu': {'upwards': 'tied'}, 'polyrelu': {'upwards': 'tied'}, 'polynorm': {},
        'polynorm_glu': {'downwards': 'tied'}}


def test_results_table_columns():
    analysis = {'params': 2_000_000, 'erank_up': 20.0, 'erank_down': 10.0, 'similarity': 0.5}
    summary = fake_summary({'swiglu': [2.0, 2.0], 'polynorm': [1.9, 1.9]},
                           analyses={'swiglu': [{**analysis, 'erank_gate': 30.0}] * 2, 'polynorm': [analysis, None]})
    results = rows(report.report(summary), 'Results')
    # lr, parameters, val, train, speed-up in tokens and in time, ms / step, erank up, down, gate, similarity
    assert results['swiglu'] == ['-', '2,000,000', '2.0000 ± 0.0000', '2.0000 ± 0.0000', '1.00 ± 0.00',
                                 '1.00 ± 0.00', '10', '20.0 ± 0.0', '10.0 ± 0.0', '30.0 ± 0.0', '0.500 ± 0.000']
    assert results['polynorm'][-4:] == ['20.0', '10.0', '-', '0.500']  # one seed analyzed; no gate
    assert float(results['polynorm'][4].split()[0]) > 1  # gets to SwiGLU's final loss before SwiGLU does


def test_report_of_an_older_summary_takes_the_defaults():
    summary = fake_summary({'swiglu': [2.0, 2.1], 'polynorm': [1.9, 2.0]})
    older = {k: v for k, v in summary.items() if k not in ('baseline', 'ablated', 'smooth')}
    assert report.report(older) == report.report(summary)


def kept_report(sweep):
    """The report that report.py makes now from a kept sweep's summary.json, checked against the kept one."""
    folder = os.path.join(HERE, 'assets', sweep)
    with open(os.path.join(folder, 'summary.json')) as f:
        summary = json.load(f)
    text = report.report(summary)
    with open(os.path.join(folder, 'report.md')) as f:
        assert f.read() == text
    return summary, text


def test_kept_summary_gives_the_kept_report_and_the_docs_numbers():
    # assets/sweep_cpu_long holds a measured sweep's summary.json and the report made from it: the same report
    # comes out now, with the figures docs/science.md quotes
    _, text = kept_report('sweep_cpu_long')
    ladder, against = rows(text, 'Budget ladder'), rows(text, 'Against swiglu')
    assert ladder['polynorm'][4:7] == ['1.23', '1.17 to 1.30', 'no']  # inside the ladder
    assert ladder['polynorm_glu'][4:6] == ['1.21', '1.10 to 1.34']
    assert against['polynorm'][4:] == ['0.001', '0.002', '2', 'lower loss']
    assert against['polyrelu'][4:] == ['0.015', '0.046', '3', 'lower loss']
    assert against['relu2'][4:] == ['0.097', '0.158', '5', 'not distinguishable at 3 seeds']


def test_kept_stdlib_sweep_gives_its_report_and_the_docs_numbers():
    summary, text = kept_report('sweep_cpu_stdlib')
    ladder, against = rows(text, 'Budget ladder'), rows(text, 'Against swiglu')
    assert ladder['polynorm'][4:7] == ['1.21', '1.10 to 1.32', 'no']
    assert ladder['relu2'][4:7] == ['1.01', '< 1.00 to 1.30', 'its low end: it may be slower than swiglu']
    assert against['polynorm'][4:] == ['0.006', '0.023', '3', 'lower loss']
    assert against['polynorm_glu'][4:] == ['0.028', '0.083', '4', 'not distinguishable at 3 seeds']
    assert against['polyrelu'][4:] == ['0.114', '0.227', '6', 'not distinguishable at 3 seeds']
    assert against['polynorm_r4'][0] == '-0.1079'
    assert {name: report.unbracketed(summary, name)[0] for name in summary['chosen_lr']} == {
        'relu2': {'downwards': 'tied', 'upwards': 'tied'}, 'swiglu': {}, 'polyrelu': {}, 'polynorm': {},
        'polynorm_glu': {'upwards': 'tied'}}


def test_plot_has_a_legend_and_a_unit_on_every_panel():
    pytest.importorskip('matplotlib')
    from common import pyplot
    plt = pyplot()
    fig = report.draw({**ladder_summary(), 'tokenizer': 'char'}, plt)
    tokens, zoom, time, ladder = fig.axes
    assert all(ax.get_legend() is not None and ax.get_ylabel() == 'validation loss (nats per character)'
               for ax in fig.axes)
    plt.close(fig)
    fig = report.draw({**ladder_summary(), 'tokenizer': 'char', 'held_out': 'test'}, plt)  # an lr grid's seeds
    assert fig.axes[0].get_ylabel() == 'test loss (nats per character)'
    assert zoom.get_xlim() == (pytest.approx(0.7 * 2000 / 1e6), pytest.approx(2000 / 1e6))  # the last 30 %
    assert 'load' in time.get_title() and ladder.get_xscale() == 'log'
    plt.close(fig)
    fig = report.draw(fake_summary({'swiglu': [2.0, 2.1], 'relu': [2.0]}), plt)  # no tokenizer, no ladder
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert styles == {'swiglu': '-', 'relu (1 seed)': '--'}  # a seed mean, and a single run
    assert 'per character for char data' in fig.axes[0].get_ylabel() and not fig.axes[3].axison
    plt.close(fig)


# -----------------------------------------------------------------------------
# python report.py, from a summary.json


def run_report(out):
    return subprocess.run([sys.executable, os.path.join(HERE, 'report.py'), '--out', str(out)],
                          capture_output=True, text=True, timeout=300)


def test_report_py_rebuilds_the_report_from_summary_json(tmp_path):
    summary = fake_summary({'swiglu': [2.00, 2.01, 1.99], 'polynorm': [1.90, 1.91, 1.89]})
    (tmp_path / 'summary.json').write_text(json.dumps(summary))
    done = run_report(tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / 'report.md').read_text()
    assert text == report.report(summary) and text in done.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert 'pip install matplotlib' in done.stdout
    else:
        assert (tmp_path / 'val_loss.png').stat().st_size > 0


def test_report_py_without_a_summary_says_so(tmp_path):
    done = run_report(tmp_path)
    assert done.returncode == 1 and not (tmp_path / 'report.md').exists()
    assert done.stderr == (f"no {tmp_path / 'summary.json'}: run the sweep (python sweep.py --out {tmp_path}) "
                           "to make it\n")


def test_report_py_with_a_broken_summary_says_so(tmp_path):
    (tmp_path / 'summary.json').write_text('{"runs": [')  # cut short
    done = run_report(tmp_path)
    assert done.returncode == 1 and not (tmp_path / 'report.md').exists()
    assert done.stderr.startswith(f"{tmp_path / 'summary.json'} is not JSON (") and done.stderr.count('\n') == 1


# -----------------------------------------------------------------------------
# the size ladder's report, on a made-up ladder (no training)


def scale_summary():
    """A size ladder of 4 sizes (0.05 M to 0.8 M parameters, 16x): swiglu's loss 3 - 0.3 log10(N / 5e4);
    polynorm's lead 0.02 + 0.02 per 10x parameters (it grows); polynorm_glu's 0.03 at every size (it holds);
    3 seeds at -0.002, 0, +0.002 around each mean; a budget ladder at the smallest and the largest size."""
    sizes = []
    for k, params in enumerate((50_000, 200_000, 400_000, 800_000)):
        decades = math.log10(params / 5e4)
        means = {'swiglu': 3 - 0.3 * decades, 'polynorm': 3 - 0.3 * decades - 0.02 - 0.02 * decades,
                 'polynorm_glu': 3 - 0.3 * decades - 0.03}
        summary = fake_summary({name: [mean - 0.002, mean, mean + 0.002] for name, mean in means.items()})
        if k in (0, 3):  # rungs 0.5 and 0.7, each 0.1 higher per e-fold fewer tokens; swiglu's full runs alone
            for run in [run for run in summary['runs'] if run['name'] != 'swiglu']:
                summary['runs'] += [{**run, 'budget': b, 'val': run['val'] - 0.1 * math.log(b)} for b in (0.5, 0.7)]
        sizes.append({**summary, 'size': f"4x{32 * (k + 1)}", 'lrs': None,
                      'params': {name: params for name in means}, 'tokenizer': 'bytes'})
    return {'scale': sizes, 'baseline': 'swiglu', 'tokens_per_param': 10, 'hardware': 'test', 'config': 'c.py'}


def test_scale_report_tables_gaps_and_trend():
    text = report.scale_report(scale_summary())
    table = rows(text, 'Final held-out loss by size')
    del table['size']  # the header
    assert list(table) == ['4x32', '4x64', '4x96', '4x128'] and table['4x32'][0] == '0.050 M'
    assert table['4x32'][1:] == ['3.0000 ± 0.0020', '2.9800 ± 0.0020', '2.9700 ± 0.0020']
    gap_lines = [line for line in section(text, 'Gap to swiglu').splitlines() if line.startswith('| polynorm |')]
    gaps = {cells[0]: cells for cells in ([c.strip() for c in line.split('|')[2:-1]] for line in gap_lines)}
    assert gaps['4x32'][2] == '-0.0200' and gaps['4x128'][2] == f"{-0.02 - 0.02 * math.log10(16):+.4f}"
    low, high = map(float, gaps['4x32'][3].split(' to '))
    assert low < -0.02 < high and gaps['4x32'][-1] == 'lower loss'
    trend = section(text, "The gap's trend")
    assert "polynorm's lead over swiglu **grows** with size: its gap falls by -0.0200 per 10x" in trend
    assert "polynorm_glu's gap to swiglu: no trend these sizes resolve, +0.0000 per 10x" in trend
    speedups = section(text, 'Compute-equivalent speed-up')
    assert 'At size 4x32:' in speedups and 'At size 4x128:' in speedups and 'At size 4x64:' not in speedups
    # at the smallest size polynorm is 0.02 lower: it reaches swiglu's loss at e^-0.2 of the budget
    smallest = ladder_at(text, '4x32')
    assert smallest['polynorm'][4] == f"{math.exp(0.2):.2f}"


def test_scale_report_of_a_ladder_in_parts_says_which_sizes_are_missing():
    summary = scale_summary()
    summary['sizes'] = [size['size'] for size in summary['scale']] + ['4x160']
    text = report.scale_report(summary)
    assert '**Partial: 4 of the 5 sizes are finished** (still to run: 4x160;' in text
    summary['scale'] = summary['scale'][:2]  # two sizes: no trend yet, and said so
    text = report.scale_report(summary)
    assert 'Partial: 2 of the 5 sizes' in text and 'still to run: 4x96, 4x128, 4x160;' in text
    assert '- polynorm: fewer than 3 sizes with an error estimate: no trend.' in text
    del summary['sizes']  # a summary written once at the end: no such line
    assert 'Partial' not in report.scale_report(summary)


def test_gap_trend_slope_and_interval():
    # exact gaps on a line: the slope comes back, and the interval is 2 * t * se wide around it
    points = [(n, 0.01 * math.log10(n), 0.005, 4.0, None) for n in (1e4, 1e5, 1e6)]
    slope, (low, high) = report.gap_trend(points)
    spread = sum((math.log10(n) - 5) ** 2 for n, *_ in points) / 0.005 ** 2
    assert slope == pytest.approx(0.01) and high - slope == pytest.approx(report.t_critical(0.05, 4) / spread ** 0.5)
    assert report.gap_trend(points[:2]) is None  # two sizes: no trend with an interval
    assert report.trend_words('p', 's', (0.01, (0.004, 0.016))).startswith("p's gap to s **shrinks**")
    # gaps of 0, 0.05, 0 (flat on average) scatter far more than their 0.005 errors allow: chi-square 66.7 on
    # 1 df, so the interval is sqrt(66.7) times wider than the errors alone would make it
    slope, (low, high) = report.gap_trend([(n, gap, 0.005, 4.0, None) for n, gap in zip((1e4, 1e5, 1e6),
                                                                                          (0, 0.05, 0))])
    chi2 = (0.05 / 3) ** 2 * 6 / 0.005 ** 2
    assert slope == pytest.approx(0) and high == pytest.approx(report.t_critical(0.05, 4) * (chi2 / spread) ** 0.5)


def test_gap_trend_interval_covers_the_true_slope():
    # 4 sizes 18x apart, 3 seeds a side with the seed SDs the size ladder sees (its smallest size noisiest), the
    # gap falling 0.02 per 10x, and each size's gap also off the line by N(0, 0.02) (its lr choice, its data):
    # the interval covers the true slope at least 93 % of the time (errors alone, without the widening: 88 %)
    rng = random.Random(0)
    covered = 0
    for _ in range(600):
        points = []
        for n, sd in zip((5e4, 2e5, 4.4e5, 8.9e5), (0.1, 0.02, 0.015, 0.012)):
            gap = -0.07 - 0.02 * math.log10(n / 5e4) + rng.gauss(0, 0.02)
            diff, se, _, df = report.welch([gap + rng.gauss(0, sd) for _ in range(3)],
                                           [rng.gauss(0, sd) for _ in range(3)])
            points.append((n, diff, se, df, None))
        _, (low, high) = report.gap_trend(points)
        covered += low <= -0.02 <= high
    assert covered / 600 >= 0.93


def test_scale_plot_has_log_axes_and_a_legend():
    pytest.importorskip('matplotlib')
    from common import pyplot
    plt = pyplot()
    fig = report.scale_draw(scale_summary(), plt)
    assert [ax.get_xscale() for ax in fig.axes] == ['log', 'log'] and all(ax.get_legend() for ax in fig.axes)
    assert fig.axes[0].get_ylabel() == 'validation loss (nats per byte)'
    plt.close(fig)
    summary = scale_summary()
    summary['scale'][0]['held_out'] = 'test'  # as the size ladder's sizes report: lrs picked on val
    fig = report.scale_draw(summary, plt)
    assert fig.axes[0].get_ylabel() == 'test loss (nats per byte)'
    plt.close(fig)


def test_report_py_makes_the_scale_report_and_its_plot(tmp_path, capsys):
    summary = scale_summary()
    (tmp_path / 'summary.json').write_text(json.dumps(summary))
    report.main(['--out', str(tmp_path)])
    assert (tmp_path / 'report.md').read_text() == report.scale_report(summary)
    assert "the paper's table in miniature" in capsys.readouterr().out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / 'scale.png').stat().st_size > 0 and not (tmp_path / 'val_loss.png').exists()


# -----------------------------------------------------------------------------
# the figures the docs quote, held to the kept reports

NUMBER = r'-?\d+(?:\.\d+)?(?:e-?\d+)?'


def docs_table(path, heading):
    """{activation: the row's cells after the first} of the first table under a heading of a markdown file."""
    with open(os.path.join(HERE, path), encoding='utf-8') as f:
        part = f.read().split(heading)[1].split('\n#')[0]
    return {line.split('|')[1].strip(): ' '.join(line.split('|')[2:-1])
            for line in part.splitlines() if line.startswith('| ') and not line.startswith('| activation')}


def report_numbers(text, name):
    """Every number in the report's table rows for one run name, as floats."""
    cells = [line for line in text.splitlines() if line.startswith(f'| {name} |')]
    return [float(x) for line in cells for x in re.findall(NUMBER, line.split('|', 2)[2])]


def quoted_in(number, numbers):
    """Whether a number as the docs print it (its own decimals) is one of the report's, rounded alike."""
    decimals = len(number.split('.')[1]) if '.' in number and 'e' not in number else None
    value = float(number)
    if decimals is None:  # an integer or an lr such as 1.6e-2: exact
        return any(math.isclose(value, x, rel_tol=1e-9) for x in numbers)
    return any(round(x, decimals) == round(value, decimals) for x in numbers)


@pytest.mark.parametrize('sweep, heading', [('sweep_cpu_long', '### Measured: the long CPU preset'),
                                            ('sweep_cpu_stdlib', '### Measured: the second corpus')])
def test_every_figure_in_the_docs_tables_is_the_kept_reports(sweep, heading):
    with open(os.path.join(HERE, 'assets', sweep, 'report.md'), encoding='utf-8') as f:
        text = f.read()
    table = docs_table('docs/science.md', heading)
    assert {'swiglu', 'polynorm', 'polynorm, r = 4'} <= set(table)
    for label, cells in table.items():
        name = label.replace(', r = ', '_r')  # 'polynorm, r = 4' is the report's polynorm_r4
        numbers = report_numbers(text, name)
        # the lr grid's header, the seed and order counts are not figures of a row
        figures = [x for x in re.findall(NUMBER, cells.replace('1 seed', '').replace('3 seeds', ''))
                   if x not in ('1',)]
        wrong = [x for x in figures if not quoted_in(x, numbers)]
        assert not wrong, f"docs/science.md, {sweep}, row {label!r}: {wrong} are not in {sweep}/report.md"


def test_kept_scale_report_and_the_docs_scale_table():
    # assets/sweep_cpu_scale: the size ladder's summary and the scale report made from it; every figure of the
    # docs' table of it is in the report's rows of that size
    folder = os.path.join(HERE, 'assets', 'sweep_cpu_scale')
    with open(os.path.join(folder, 'summary.json')) as f:
        summary = json.load(f)
    text = report.scale_report(summary)
    with open(os.path.join(folder, 'report.md')) as f:
        assert f.read() == text
    table = docs_table('docs/science.md', '### Measured: the size ladder')
    sizes = [label for label in table if label != 'size']
    assert sizes and set(sizes) <= {size['size'] for size in summary['scale']}
    for size in sizes:
        numbers = [float(x) for line in text.splitlines() if f'| {size} |' in line
                   for x in re.findall(NUMBER, line.replace(f'| {size} |', '|'))]
        wrong = [x for x in re.findall(NUMBER, table[size]) if not quoted_in(x, numbers)]
        assert not wrong, f"docs/science.md, the size ladder, row {size}: {wrong} are not in its report"
    # the README's row: PolyNorm's lead over SwiGLU at every size, smallest first, and each trend with its interval
    with open(os.path.join(HERE, 'README.md'), encoding='utf-8') as f:
        row = next(line for line in f if line.startswith('| Does the lead grow'))
    gaps = [float(line.split('|')[4]) for line in section(text, 'Gap to').splitlines()
            if line.startswith('| polynorm |')]
    leads = re.search(rf'lead, smallest size to largest: ((?:{NUMBER}, )+{NUMBER}) nats per byte', row)
    leads = leads.group(1).split(', ')
    assert len(leads) == len(gaps) == len(summary['scale'])
    assert all(quoted_in(lead, [-gap]) for lead, gap in zip(leads, gaps)), (leads, gaps)
    trends = re.findall(rf'\(({NUMBER[2:]}|[+-]{NUMBER[2:]}) per 10x[^,]*, (?:95 % interval )?([+-]?{NUMBER[2:]}) to '
                        rf'([+-]?{NUMBER[2:]})\)', row)
    said = {line.split("'")[0].lstrip('- '): re.findall(r'[+-]\d\.\d+', line)
            for line in section(text, "The gap's trend").splitlines() if 'per 10x' in line}
    assert len(trends) == 2
    for (slope, low, high), name in zip(trends, ('polynorm', 'polynorm_glu')):
        assert all(quoted_in(x, [float(v) for v in said[name]]) for x in (slope, low, high)), name
    # and the speed-ups at the largest size, as its budget ladder's rows give them
    largest = sizes[-1]
    params = re.search(rf'\| {largest} \| (\d\.\d+ M) \|', text).group(1)
    ladder = ladder_at(text, largest)
    value = r'([<>] \d\.\d\d|\d\.\d\d)'
    speedups = re.search(rf'speed-up at {params}: PolyNorm {value} \(([^)]+)\), gated PolyNorm {value}', row).groups()
    assert list(speedups) == ladder['polynorm'][-3:-1] + ladder['polynorm_glu'][-3:-2], (speedups, ladder)


def test_readmes_headline_figures_are_the_kept_reports():
    with open(os.path.join(HERE, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    speedups = re.findall(r'\*\*(\d\.\d\d)x\*\*[^(]*\((?:95 % interval )?(\d\.\d\d) to (\d\.\d\d)\)', readme)
    losses = re.findall(r'(-0\.\d{3}) \((?:Holm\'s p = )?(0\.\d{3})\)', readme)
    assert len(speedups) == 2 and len(losses) == 2
    for sweep, (value, low, high), (difference, holm) in zip(('sweep_cpu_long', 'sweep_cpu_stdlib'), speedups,
                                                           losses):
        _, text = kept_report(sweep)
        ladder, against = rows(text, 'Budget ladder'), rows(text, 'Against swiglu')
        assert ladder['polynorm'][4:6] == [value, f'{low} to {high}'], sweep
        assert f"{float(against['polynorm'][0]):.3f}" == difference and against['polynorm'][5] == holm, sweep
