"""Tests of sweep.py: planning, its checks, where a run stands, sweeps of fake runs, and a tiny sweep end to end.

    python -m pytest test_sweep.py -q
"""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import report
import settings
import sweep
from data.shards import write_dataset
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# a run's training time


def test_training_time_is_the_cumulative_step_time():
    train = [{'step': 10, 'dt_ms': 100.0}, {'step': 20, 'dt_ms': 200.0}, {'step': 25, 'dt_ms': 100.0}]
    assert sweep.train_time_curve(train) == [(10, 1.0), (20, 3.0), (25, 3.5)]  # the ms per step times the steps
    logged = [{**r, 'train_time_s': s} for r, s in zip(train, (0.5, 2.0, 4.0))]
    assert sweep.train_time_curve(logged) == [(10, 0.5), (20, 2.0), (25, 4.0)]  # train.py's own when there
    curve = sweep.train_time_curve(train)
    assert sweep.value_at(curve, 5) == pytest.approx(0.5)
    assert sweep.value_at(curve, 15) == pytest.approx(2.0)
    assert sweep.value_at(curve, 30) == pytest.approx(3.5)


def test_lr_tag_names_folders():
    assert [sweep.lr_tag(lr) for lr in (1e-3, 2e-3, 0.0015, 0.01)] == ['1e-3', '2e-3', '1.5e-3', '1e-2']


# -----------------------------------------------------------------------------
# planning runs, command-line checks, and where a run stands


def spec(out, activations, lrs=None, seeds=2, orders=None, order_seeds=None, max_steps=20, budgets=None):
    return {'out': out, 'activations': activations, 'lrs': lrs, 'seeds': seeds, 'orders': orders,
            'order_seeds': order_seeds or seeds, 'max_steps': max_steps, 'base_order': 3, 'min_lr_ratio': 0.1,
            'budgets': budgets}


def folders(runs):
    return [os.path.basename(r['dir']) for r in runs]


def test_plan_runs_names_orders_and_seeds():
    runs = sweep.plan_runs(spec('out', ['swiglu', 'polynorm'], orders=[2, 3]), {})
    assert folders(runs) == ['swiglu_s0', 'polynorm_r2_s0', 'polynorm_r3_s0',
                             'swiglu_s1', 'polynorm_r2_s1', 'polynorm_r3_s1']  # seed 0 first
    assert runs[1]['keys'] == {'activation': 'polynorm', 'poly_order': 2, 'seed': 0,
                               'out_dir': os.path.join('out', 'polynorm_r2_s0')}


def test_plan_runs_with_an_lr_grid():
    s = spec('out', ['swiglu', 'polynorm'], lrs=[1e-3, 2e-3], orders=[2, 3, 4], order_seeds=1)
    grid = sweep.plan_runs(s, {})
    # activations interleaved lr by lr, so that the machine's changing load falls on all of them alike
    # with a seed of their own, outside the reported seeds 0 and 1
    assert folders(grid) == ['swiglu_lr1e-3_s1000', 'polynorm_lr1e-3_s1000', 'swiglu_lr2e-3_s1000',
                             'polynorm_lr2e-3_s1000']
    assert grid[2]['keys']['learning_rate'] == 2e-3 and grid[2]['keys']['min_lr'] == 2e-4
    assert 'eval_split' not in grid[2]['keys']  # the grid picks on val ...
    finals = {grid[0]['dir']: 2.0, grid[2]['dir']: 1.9, grid[1]['dir']: 1.8}
    assert folders(sweep.plan_runs(s, finals))[4:] == ['swiglu_lr2e-3_s0', 'swiglu_lr2e-3_s1']  # polynorm's grid
    finals[grid[3]['dir']] = math.inf  # diverged                                               # is not finished
    assert folders(sweep.plan_runs(s, finals))[4:] == ['swiglu_lr2e-3_s0', 'polynorm_lr1e-3_s0', 'swiglu_lr2e-3_s1',
                                                       'polynorm_lr1e-3_s1', 'polynorm_r2_lr1e-3_s0',
                                                       'polynorm_r4_lr1e-3_s0']
    assert sweep.pick_lrs(s, finals) == {'swiglu': 2e-3, 'polynorm': 1e-3}
    assert {run['keys']['eval_split'] for run in sweep.plan_runs(s, finals)[4:]} == {'test'}  # ... seeds: test


def test_plan_runs_with_a_budget_ladder():
    s = spec('out', ['swiglu', 'polynorm'], lrs=[1e-3, 2e-3], seeds=2, budgets=[0.5, 0.7, 1.0])
    grid = sweep.plan_runs(s, {})
    finals = {run['dir']: 2.0 + run['lr'] for run in grid}  # both pick 1e-3
    runs = sweep.plan_runs(s, finals)
    # the full runs of each seed first; the ladder's rungs wait for them
    assert folders(runs)[4:] == ['swiglu_lr1e-3_s0', 'polynorm_lr1e-3_s0', 'swiglu_lr1e-3_s1', 'polynorm_lr1e-3_s1']
    assert 'max_steps' not in runs[4]['keys'] and runs[4]['steps'] == 20  # a full run as before the ladder
    # then the top rung, seed by seed, for every name but the baseline (the speed-up needs its full-budget loss
    # alone) whose full runs come within 4 standard errors of the baseline's mean loss (2.01)
    finals.update(zip([run['dir'] for run in runs[4:]], [2.0, 1.95, 2.02, 1.97]))
    runs = sweep.plan_runs(s, finals)
    assert folders(runs)[8:] == ['polynorm_lr1e-3_b0.7_s0', 'polynorm_lr1e-3_b0.7_s1']
    rung = runs[-1]
    assert (rung['name'], rung['budget'], rung['steps'], rung['keys']['max_steps']) == ('polynorm', 0.7, 14, 14)
    # the 0.7 rung still within reach (2.015 - 4 x 0.018): the next rung down
    finals.update({runs[8]['dir']: 2.0, runs[9]['dir']: 2.03})
    assert folders(sweep.plan_runs(s, finals))[10:] == ['polynorm_lr1e-3_b0.5_s0', 'polynorm_lr1e-3_b0.5_s1']
    # the 0.7 rung clearly above swiglu's loss: the crossing lies above it, and no rung below it runs
    finals.update({runs[8]['dir']: 2.3, runs[9]['dir']: 2.31})
    assert len(sweep.plan_runs(s, finals)) == 10
    # a name clearly above swiglu's loss at the full budget (slower than it) runs no rung at all
    finals.update({runs[5]['dir']: 2.2, runs[7]['dir']: 2.21})
    assert len(sweep.plan_runs(s, finals)) == 8
    # the plan counts every rung, at most
    assert sweep.count_runs(s) == (4, 4, 4, 0) and sweep.full_runs(s) == 4 + 4 + 2 * (10 + 14) / 20


def test_within_reach():
    assert sweep.within_reach([2.0, 2.02], [2.0, 2.02]) and not sweep.within_reach([2.0, None], [2.0, 2.0])
    assert not sweep.within_reach([2.0, math.inf], [2.0, 2.0])  # diverged
    assert sweep.within_reach([2.05], [2.0 - 1e-12]) is False and sweep.within_reach([2.0], [2.0])  # one seed: means
    # 3.5 standard errors above: within the reach of a 95 % interval at 2 seeds a side (t about 4), so it goes on
    assert sweep.within_reach([2.05, 2.07], [2.0, 2.02]) and not sweep.within_reach([2.07, 2.09], [2.0, 2.02])


def test_size_ladder_grids_centre_on_the_size_below_and_widen_at_an_edge():
    sizes = [(4, 32), (4, 64), (4, 96)]
    base = spec('out', ['swiglu', 'polynorm'], lrs=[2e-3, 4e-3, 8e-3], budgets=[0.5, 1.0])
    smallest = sweep.size_spec(base, sizes, 0, {})
    assert smallest['out'] == os.path.join('out', '4x32') and smallest['lrs'] == [2e-3, 4e-3, 8e-3]
    assert smallest['budgets'] == [0.5, 1.0] and sweep.size_spec(base, sizes, 1, {'swiglu': 4e-3})['budgets'] is None
    s = sweep.size_spec(base, sizes, 2, {'swiglu': 4e-3, 'polynorm': 1.6e-2})  # the largest: the ladder again
    assert s['grids'] == {'swiglu': [2e-3, 4e-3, 8e-3], 'polynorm': [8e-3, 1.6e-2, 3.2e-2]} and s['budgets']
    grid = sweep.plan_runs(s, {})
    assert folders(grid) == ['swiglu_lr2e-3_s1000', 'polynorm_lr8e-3_s1000', 'swiglu_lr4e-3_s1000',
                             'polynorm_lr1.6e-2_s1000', 'swiglu_lr8e-3_s1000', 'polynorm_lr3.2e-2_s1000']
    # swiglu best in the middle: chosen; polynorm best at its top: one more lr above, then chosen inside
    finals = {run['dir']: {2e-3: 2.1, 4e-3: 2.0, 8e-3: 2.2, 1.6e-2: 1.95, 3.2e-2: 1.9}[run['lr']] for run in grid}
    assert sweep.pick_lrs(s, finals) == {'swiglu': 4e-3}
    assert 'polynorm_lr6.4e-2_s1000' in folders(sweep.plan_runs(s, finals))
    finals[os.path.join('out', '4x96', 'polynorm_lr6.4e-2_s1000')] = 2.0
    assert sweep.pick_lrs(s, finals) == {'swiglu': 4e-3, 'polynorm': 3.2e-2}
    # at the edge after WIDEN more lrs: chosen there (the report flags it as not bracketed)
    for lr, loss in ((6.4e-2, 1.8), (1.28e-1, 1.7), (2.56e-1, 1.6), (5.12e-1, 1.5)):
        finals[os.path.join('out', '4x96', f'polynorm_lr{sweep.lr_tag(lr)}_s1000')] = loss
    assert sweep.pick_lrs(s, finals)['polynorm'] == 5.12e-1 and sweep.WIDEN == 4


def test_size_ladder_widens_past_a_tie_once_the_seeds_give_their_spread():
    sizes = [(4, 32), (4, 64)]
    s = sweep.size_spec(spec('out', ['swiglu'], lrs=[2e-3, 4e-3, 8e-3], seeds=3), sizes, 1, {'swiglu': 4e-3})

    def run(lr, seed=sweep.GRID_SEED):
        return os.path.join('out', '4x64', f'swiglu_lr{sweep.lr_tag(lr)}_s{seed}')
    # 2e-3 within noise of the best, 4e-3, but how much noise is only known once the seeds have run
    finals = {run(2e-3): 2.005, run(4e-3): 2.0, run(8e-3): 2.2}
    assert sweep.grid_lrs(s, 'swiglu', None, finals) == [2e-3, 4e-3, 8e-3]
    assert folders(sweep.plan_runs(s, finals))[3:] == [f'swiglu_lr4e-3_s{k}' for k in range(3)]
    finals.update({run(4e-3, 0): 1.99, run(4e-3, 1): 2.0, run(4e-3, 2): 2.01})  # SD 0.01: the tie leads to the
    assert sweep.grid_lrs(s, 'swiglu', None, finals) == [1e-3, 2e-3, 4e-3, 8e-3]  # edge, so one lr below
    assert sweep.pick_lrs(s, finals) == {} and 'swiglu_lr1e-3_s1000' in folders(sweep.plan_runs(s, finals))
    finals[run(1e-3)] = 2.1  # clearly worse: tied downwards, inside the grid; 4e-3 stays
    assert sweep.grid_lrs(s, 'swiglu', None, finals) == [1e-3, 2e-3, 4e-3, 8e-3]
    assert sweep.pick_lrs(s, finals) == {'swiglu': 4e-3}
    finals[run(1e-3)] = 1.98  # the widened lr wins: at the edge, so one more below, then its own seeds
    assert sweep.grid_lrs(s, 'swiglu', None, finals) == [5e-4, 1e-3, 2e-3, 4e-3, 8e-3]
    finals[run(5e-4)] = 2.3
    assert sweep.pick_lrs(s, finals) == {'swiglu': 1e-3}
    assert folders(sweep.plan_runs(s, finals))[5:] == [f'swiglu_lr1e-3_s{k}' for k in range(3)]
    finals.update({run(1e-3, k): 1.98 + 0.001 * k for k in range(3)})  # SD 0.001: 2e-3 clearly worse, bracketed
    assert sweep.grid_lrs(s, 'swiglu', None, finals) == [5e-4, 1e-3, 2e-3, 4e-3, 8e-3]
    # the smallest size widens its --lrs the same way; a sweep outside the size ladder keeps its grid as given
    smallest = sweep.size_spec(spec('out', ['swiglu'], lrs=[2e-3, 4e-3, 8e-3], seeds=3), sizes, 0, {})
    at_smallest = {k.replace('4x64', '4x32'): v for k, v in finals.items()}
    assert sweep.grid_lrs(smallest, 'swiglu', None, at_smallest) == [5e-4, 1e-3, 2e-3, 4e-3, 8e-3]
    plain = spec(os.path.join('out', '4x64'), ['swiglu'], lrs=[2e-3, 4e-3, 8e-3], seeds=3)
    assert sweep.grid_lrs(plain, 'swiglu', None, finals) == [2e-3, 4e-3, 8e-3]


def test_analysis_lr_is_one_that_every_name_ran():
    s = spec('out', ['swiglu', 'polynorm'], lrs=[2e-3, 4e-3, 8e-3, 1.6e-2])
    grid = [{'name': name, 'lr': lr} for name, lrs in (('swiglu', [2e-3, 4e-3, 8e-3]),
                                                         ('polynorm', [4e-3, 8e-3, 1.6e-2])) for lr in lrs]
    # a size ladder's grids of their own: SwiGLU chose 2e-3, which PolyNorm never ran; the nearest shared lr
    assert sweep.analysis_lr(s, {'swiglu': 2e-3}, grid) == 4e-3
    assert sweep.analysis_lr(s, {'swiglu': 8e-3}, grid) == 8e-3  # shared: the baseline's own
    assert sweep.analysis_lr({**s, 'analysis_lr': 1.6e-2}, {'swiglu': 8e-3}, grid) == 1.6e-2  # the user's word
    assert sweep.analysis_lr({**s, 'lrs': None}, {'swiglu': 8e-3}, grid) is None  # no grid


def test_scale_preset_plan(capsys):
    sweep.main(['--preset', 'cpu-scale', '--plan'])
    lines = capsys.readouterr().out.splitlines()
    sizes = [line for line in lines if line.startswith('size ')]
    params = [float(line.split(': ')[1].split(' M')[0]) for line in sizes]
    # at least 4 sizes over at least 16x, the largest at least 4x the long preset's 0.197 M
    assert len(sizes) >= 4 and params[-1] / params[0] >= 16 and params[-1] >= 4 * 0.197
    assert all('(10.0 per parameter)' in line for line in sizes)
    assert 'grid 15 runs' in sizes[0] and 'budget ladder 18' in sizes[0] and 'budget ladder' in sizes[-1]
    assert all('seeds 9' in line and 'budget ladder' not in line for line in sizes[1:-1])
    hours = [float(line.split("worth, ")[1].split(' h')[0]) for line in sizes]
    total = float(lines[-1].split('time: ')[1].split(' h')[0])
    assert lines[-1].endswith('resumes where it stopped') and abs(total - sum(hours)) <= 0.05 * len(hours)
    with pytest.raises(SystemExit, match="one throughput per size"):
        sweep.main(['--preset', 'cpu-scale', '--plan', '--tok_per_s', '1000'])


@pytest.mark.parametrize("argv, message", [
    (['--activations', 'relu,tanh'], "tanh"),
    (['--seeds', '0'], "between 1 and 1000"),
    (['--seeds', '1001'], "the lr grid's own seed"),
    (['--parallel', '0'], "at least 1"),
    (['--orders', '2,x'], "comma-separated numbers"),
    (['--lrs', '1e-3,fast'], "comma-separated numbers"),
    (['--lrs', '1e-3,1e-3'], "distinct"),
    (['--activations', 'relu', '--orders', '2'], "polyrelu and polynorm"),
    (['--activations', 'polyrelu', '--orders', '2', '--lrs', '1e-3'], "add polynorm"),
    (['--order_seeds', '4'], "between 1 and"),
    (['--lrs', '1e-3,2e-3', '--analysis_lr', '4e-3'], "--analysis_lr must be one of --lrs, got 0.004"),
    (['--analysis_lr', '4e-3'], "one of --lrs"),
    (['--budgets', '0,1'], "above 0 and at most 1"),
    (['--budgets', '0.5,1.5'], "above 0 and at most 1"),
    (['--budgets', 'half'], "comma-separated numbers like 0.5,0.7,1"),
    (['--sizes', '4x32,big', '--lrs', '1e-3'], "n_layer x n_embd like 4x32,4x64"),
    (['--sizes', '4x32'], "--sizes needs --lrs"),
    (['--tok_per_s', '0'], "positive"),
    (['--out_dir=elsewhere'], "--out"),
    (['max_steps=5'], "--key=value"),
    (['--orders', '2', '--poly_order=3'], "not both"),
    (['--lrs', '1e-3', '--learning_rate=3e-3'], "not both"),
])
def test_bad_arguments_say_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.parse_args(argv)
    assert message in str(e.value) + capsys.readouterr().err


def test_presets_set_the_sweep_and_flags_win():
    assert sweep.parse_args(['--preset', 'cpu-long']).activations[-1] == 'polynorm_glu'  # the gated PolyNorm
    args = sweep.parse_args(['--preset', 'cpu-long', '--activations', 'swiglu,polynorm'])
    assert args.lrs == [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2]
    assert args.parallel == 2 and args.orders == [2, 4] and args.seeds == 5
    assert sweep.parse_args(['--preset', 'cpu-long', '--parallel', '1', '--activations', 'polynorm']).parallel == 1
    resolved = sweep.read_settings(sweep.preset_path('cpu-long'), {'max_steps': '7'})  # the flags' text
    assert resolved['max_steps'] == 7 and resolved['dataset'] == 'shakespeare_char'
    assert sweep.parse_args(['--preset', 'cpu-long']).budgets == [0.5, 0.7, 1.0]


def test_the_stdlib_preset_is_cpu_long_on_another_corpus():
    long = sweep.read_settings(sweep.preset_path('cpu-long'), {})
    stdlib = sweep.read_settings(sweep.preset_path('cpu-stdlib'), {})
    assert stdlib['dataset'] == 'stdlib' and {k: v for k, v in stdlib.items() if k != 'dataset'} == \
        {k: v for k, v in long.items() if k != 'dataset'}
    # the same protocol; the grid one lr wider
    protocol = sweep.PRESETS['cpu-long']
    assert sweep.PRESETS['cpu-stdlib'] == {**protocol, 'lrs': '1e-3,' + protocol['lrs']}
    assert os.path.isfile(os.path.join(HERE, 'data', 'stdlib', 'prepare.py'))  # the sweep can make its data


@pytest.mark.parametrize("flag, message", [
    ('--max_step=7', "--max_step=7: unknown key 'max_step'; did you mean --max_steps"),
    ('--max_steps=many', "--max_steps=many: max_steps must be int, got 'many' (str)"),
    ('--max_steps=0', "max_steps must be positive, got 0"),
])
def test_settings_for_train_py_are_checked_before_any_run(flag, message, tmp_path):
    with pytest.raises(SystemExit) as e:
        sweep.main(['--preset', 'cpu', '--out', str(tmp_path / 'out'), flag])
    assert message in str(e.value) and '\n' not in str(e.value)
    assert not (tmp_path / 'out').exists()  # nothing started


@pytest.mark.parametrize("budgets, message", [
    ('0.04,1', "--budgets 0.04: 20 steps, not more than warmup_steps=20; use larger fractions"),
    ('0.5,0.501', "--budgets: 0.5 and another fraction both make 250 steps of max_steps=500"),
])
def test_budget_ladder_rungs_are_checked_before_any_run(budgets, message, tmp_path):
    with pytest.raises(SystemExit) as e:
        sweep.main(['--preset', 'cpu', '--budgets', budgets, '--out', str(tmp_path / 'out'), '--max_steps=500'])
    assert message in str(e.value) and '\n' not in str(e.value)
    assert not (tmp_path / 'out').exists()


def test_plan_counts_the_model_train_py_builds(tmp_path):
    # the data's meta.json decides the vocabulary when the config leaves it to the data, as train.py does
    (tmp_path / 'meta.json').write_text(json.dumps({'vocab_size': 65}))
    (tmp_path / 'chars_train_000000.bin').write_bytes(b'')
    config = sweep.preset_path('cpu-long')
    facts = sweep.model_facts(sweep.read_settings(config, {'data_dir': str(tmp_path)}))
    resolved, _ = settings.resolve([config, f'--data_dir={tmp_path}'])  # as train.py reads it
    keys = settings.model_keys(resolved)
    keys['vocab_size'] = keys['vocab_size'] or settings.padded_vocab(65)
    with torch.device('meta'):  # shapes only
        model = GPT(GPTConfig(**keys))
    assert facts == (model.num_params()['non_embedding'], model.flops_per_token())


def test_gpu_preset_plans_an_lr_grid(tmp_path, capsys):
    sweep.main(['--preset', 'gpu', '--lrs', '1e-3,2e-3,4e-3', '--orders', '2,3,4', '--plan', '--tok_per_s', '4e5',
                f'--data_dir={tmp_path}'])
    out = capsys.readouterr().out
    # 6 x 3 grid runs, 6 x 3 seeds, orders 2 and 4 (3 is PolyNorm itself) x 3 seeds
    assert 'lr grid: 6 activations x 3 lrs, seed 1000: 18 runs; 6 x 3 seeds at each one\'s lr: 18 runs' in out
    assert 'order ablation: 6 runs; 42 runs in all' in out
    tokens = 1500 * 262144
    assert f"{tokens / 1e6:,.1f} M tokens" in out
    assert f"time: {42 * tokens / 4e5 / 3600:.1f} h" in out
    assert 'python data/fineweb/prepare.py' in out  # the plan says the data is missing, but plans


def test_gpu_plan_without_a_throughput_estimates_from_flops_and_says_so(tmp_path, capsys):
    sweep.main(['--preset', 'gpu', '--plan', f'--data_dir={tmp_path}'])
    out = capsys.readouterr().out
    flops = float(out.split('all runs: ')[1].split('B tokens, ')[1].split(' FLOPs')[0])
    hours = flops / (0.4 * 989e12) / 3600
    assert "at an assumed 40% MFU" in out and "(not a measurement)" in out
    assert f"{hours:.1f} h on one GPU, {hours / 8:.1f} h on 8 with --parallel 8" in out


def test_plan_counts_the_budget_ladder_in_tokens(tmp_path, capsys):
    sweep.main(['--preset', 'gpu', '--lrs', '1e-3,2e-3,4e-3', '--budgets', '0.5,0.7', '--plan', '--tok_per_s', '4e5',
                f'--data_dir={tmp_path}'])
    out = capsys.readouterr().out
    # the grid, the seeds' full runs, then the same seeds but SwiGLU's at 750 and 1,050 of the 1,500 steps
    assert 'budget ladder: the same but swiglu at 0.5, 0.7 of the steps: at most 30 runs; 66 runs in all (54.0 full ' \
           'runs\' worth)' in out
    tokens = 1500 * 262144
    assert f"all runs: {54 * tokens / 1e9:.2f} B tokens" in out
    assert f"time: {54 * tokens / 4e5 / 3600:.1f} h" in out


def test_gpu_preset_refuses_without_fineweb_shards(tmp_path):
    with pytest.raises(SystemExit, match="no fineweb shards in .*python data/fineweb/prepare.py") as e:
        sweep.main(['--preset', 'gpu', '--out', str(tmp_path / 'out'), f'--data_dir={tmp_path}'])
    assert '\n' not in str(e.value)  # one line
    assert not (tmp_path / 'out').exists()  # nothing started


def test_data_without_a_test_split_is_prepared_again_or_refused(tmp_path, monkeypatch):
    write_dataset(str(tmp_path), 'mine', np.arange(500) % 256, np.arange(300) % 256,
                  {'tokenizer': 'bytes', 'vocab_size': 256})  # prepared without a test split
    settings = {'dataset': 'mine', 'data_dir': str(tmp_path)}
    sweep.ensure_data(settings, None)  # without an lr grid none is needed
    with pytest.raises(SystemExit, match="no test split in .*: an lr grid picks each lr on val and reports on test"):
        sweep.ensure_data(settings, None, test=True)  # no prepare.py of its own: what to do, in one line
    prepared = []
    monkeypatch.setattr(sweep.subprocess, 'run', lambda command: prepared.append(command) or
                        subprocess.CompletedProcess(command, 0))
    with pytest.raises(SystemExit, match="wrote no test split"):  # the stdlib preset's data, prepared again
        sweep.ensure_data({'dataset': 'stdlib', 'data_dir': str(tmp_path)}, None, test=True)
    assert prepared and prepared[0][1].endswith(os.path.join('data', 'stdlib', 'prepare.py'))


def test_run_state_from_log_and_checkpoint(tmp_path):
    run = str(tmp_path)
    assert sweep.run_state(run, max_steps=20) == 'new'
    records = [{'step': 10, 'tokens': 100, 'loss': 2.0, 'dt_ms': 5.0},
               {'step': 10, 'tokens': 100, 'val_loss': 2.1},
               {'step': 10, 'tokens': 100, 'eval_task': 'hellaswag', 'acc': 0.25, 'acc_norm': 0.3, 'n': 40}]
    log = tmp_path / 'log.jsonl'
    log.write_text(''.join(json.dumps(r) + '\n' for r in records) + '{"step": 1')  # killed mid-line
    assert sweep.run_state(run, max_steps=20) == 'new'  # no checkpoint to resume from
    assert [len(part) for part in sweep.read_log(run)] == [1, 1, 1]  # a task record is neither train nor eval
    (tmp_path / 'ckpt.pt').write_bytes(b'')
    assert sweep.run_state(run, max_steps=20) == 'resume'
    with open(log, 'a') as f:
        f.write('\n' + json.dumps({'step': 20, 'tokens': 200, 'val_loss': 1.9}) + '\n')
    with pytest.raises(SystemExit, match=r"line 4, is not a log record; delete .* to redo this run") as e:
        sweep.run_state(run, max_steps=20)  # a bad line in the middle is corruption, not a kill
    assert '\n' not in str(e.value)
    log.write_text(''.join(json.dumps(r) + '\n' for r in records + [{'step': 20, 'tokens': 200, 'val_loss': 1.9}]))
    assert sweep.run_state(run, max_steps=20) == 'done'


def test_child_threads_share_the_cores(monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(os, 'cpu_count', lambda: 8)
    assert sweep.child_env(2, 'out/sw')['OMP_NUM_THREADS'] == '4'
    assert sweep.child_env(16, 'out/sw')['OMP_NUM_THREADS'] == '1'
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    assert sweep.child_env(2, 'out/sw')['OMP_NUM_THREADS'] == '3'  # the user's choice stays
    assert sweep.child_env(2, 'out/sw')['WANDB_RUN_GROUP'] == 'sw'  # the sweep's runs, one W&B group


# -----------------------------------------------------------------------------
# an lr-grid sweep of fake runs: a stand-in for train.py writes a log whose final val loss is lowest at
# each activation's BEST lr, so the sweep's choices are known in advance; relu diverges above 3e-3 (exit status
# settings.EXIT_DIVERGED), gelu fails

FAKE_TRAIN = '''
import json, math, os, sys
args = dict(arg[2:].split('=', 1) for arg in sys.argv[2:])
out, activation, lr = args['out_dir'], args['activation'], float(args['learning_rate'])
with open(os.path.join(os.path.dirname(out), 'calls.txt'), 'a') as f:
    f.write(os.path.basename(out) + (' resume' if args.get('init_from') == 'resume' else '') + '\\n')
with open(os.path.join(out, 'gpu.txt'), 'w') as f:
    f.write(os.environ.get('CUDA_VISIBLE_DEVICES', ''))
if activation == 'relu' and lr > 3e-3:  # diverges: train.py's message, and its own exit status
    print('step 3: loss is nan', file=sys.stderr)
    sys.exit({diverged})
if activation == 'gelu':
    sys.exit('fake failure')
if activation == 'relu2':  # a long run that saves on SIGINT, as train.py does
    import signal, time
    signal.signal(signal.SIGINT, lambda *_: (open(os.path.join(out, 'saved'), 'w').close(), sys.exit(0)))
    open(os.path.join(out, 'ready'), 'w').close()
    time.sleep(60)
best = {{'swiglu': 2e-3, 'polynorm': 4e-3, 'relu': 1e-3}}[activation]
steps = int(args.get('max_steps', 20))  # a rung of the budget ladder: 0.1 higher per e-fold fewer steps
final = 2.0 + 0.1 * abs(math.log2(lr / best)) + 0.01 * (int(args['seed']) % 10) - 0.05 * (activation == 'polynorm') \
    - 0.1 * math.log(steps / 20)
with open(os.path.join(out, 'log.jsonl'), 'w') as f:
    for step in (steps // 2, steps):
        f.write(json.dumps({{'step': step, 'tokens': 100 * step, 'loss': final, 'lm': final, 'lr': lr,
                            'dt_ms': 50.0, 'tok_per_s': 2000.0}}) + '\\n')
        f.write(json.dumps({{'step': step, 'tokens': 100 * step, 'val_loss': final + (steps - step) / 20}}) + '\\n')
'''


# the resolved settings summarize reads: the cpu preset's model, with a vocabulary of its own (no data is read)
SETTINGS = sweep.read_settings(sweep.preset_path('cpu'), {'dataset': 'no_such_data', 'vocab_size': 256,
                                                          'warmup_steps': 2})


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    path = tmp_path / 'fake_train.py'
    path.write_text(FAKE_TRAIN.format(diverged=settings.EXIT_DIVERGED))
    monkeypatch.setattr(sweep, 'TRAIN', str(path))
    out = tmp_path / 'out'

    def calls():
        text = (out / 'calls.txt').read_text() if (out / 'calls.txt').exists() else ''
        (out / 'calls.txt').unlink(missing_ok=True)
        return text.split()
    return str(out), calls


def test_lr_grid_sweep_picks_resumes_and_reports(fake_train, capsys, monkeypatch):
    out, calls = fake_train
    s = spec(out, ['swiglu', 'polynorm', 'relu'], lrs=[1e-3, 2e-3, 4e-3], orders=[2, 4], order_seeds=1)
    finals, runs = sweep.run_all(s, 'preset.py', {}, parallel=2)
    ran = calls()
    assert sorted(ran) == sorted(folders(runs)) and len(ran) == 9 + 3 * 2 + 2
    printed = capsys.readouterr().out.splitlines()
    started = [line.split()[1] for line in printed if line.startswith('starting')]
    assert started[:9] == folders(runs)[:9] and all('_s1000' in name for name in started[:9])  # the grid first
    # each finished run's loss by the split it was measured on: the grid's on val, the reported seeds' on test
    said = {line.split()[1]: line.split(': ')[1].split()[0] for line in printed if line.startswith('finished')}
    assert said['swiglu_lr2e-3_s1000'] == 'val' and said['swiglu_lr2e-3_s0'] == 'test'
    assert sweep.pick_lrs(s, finals) == {'swiglu': 2e-3, 'polynorm': 4e-3, 'relu': 1e-3}
    assert finals[os.path.join(out, 'relu_lr4e-3_s1000')] == math.inf  # diverged: a result of the grid
    with open(os.path.join(out, 'relu_lr4e-3_s1000', 'diverged.txt')) as f:
        assert 'loss is nan' in f.read()  # the end of its log, kept
    assert 'polynorm_r2_lr4e-3_s0' in ran and 'polynorm_r4_lr4e-3_s0' in ran

    # restarted: nothing runs again; an interrupted run (log cut short, a checkpoint) resumes alone
    assert sweep.run_all(s, 'preset.py', {}, parallel=2)[0] == finals and calls() == []
    cut = os.path.join(out, 'swiglu_lr2e-3_s1')
    with open(os.path.join(cut, 'log.jsonl')) as f:
        lines = f.readlines()
    with open(os.path.join(cut, 'log.jsonl'), 'w') as f:
        f.writelines(lines[:2])
    open(os.path.join(cut, 'ckpt.pt'), 'wb').close()
    sweep.run_all(s, 'preset.py', {}, parallel=1)
    assert calls() == ['swiglu_lr2e-3_s1', 'resume']

    # the summary of these runs (the fake runs have no checkpoints: no analyses), then its report
    analyzed = []
    monkeypatch.setattr(sweep, 'analyses', lambda run_dirs, out, device: analyzed.extend(run_dirs) or {})
    summary = sweep.summarize(s, runs, finals, 'preset.py', {}, SETTINGS)
    assert sorted(os.path.basename(d) for d in analyzed) == sorted(  # the runs at each name's chosen lr
        ['swiglu_lr2e-3_s0', 'swiglu_lr2e-3_s1', 'polynorm_lr4e-3_s0', 'polynorm_lr4e-3_s1', 'relu_lr1e-3_s0',
         'relu_lr1e-3_s1', 'polynorm_r2_lr4e-3_s0', 'polynorm_r4_lr4e-3_s0']
        # and the grid's runs at one lr for all, SwiGLU's
        + ['swiglu_lr2e-3_s1000', 'polynorm_lr2e-3_s1000', 'relu_lr2e-3_s1000'])
    assert summary['analysis_lr'] == 2e-3 and summary['grid_seed'] == 1000
    text = report.report(json.loads(json.dumps(summary)))  # as read back from summary.json
    section = text.split('## Learning rate grid')[1].split('##')[0]
    grid = {line.split('|')[1].strip(): line for line in section.splitlines() if line.startswith('| ')}
    assert 'not bracketed upwards' in grid['polynorm'] and 'downwards' in grid['relu']  # 4e-3, 1e-3: the edges
    assert 'not bracketed' not in grid['swiglu'] and 'diverged' in grid['relu']
    assert "Order ablation" in text and 'polynorm_r2' in text
    against = text.split('## Against swiglu')[1].split('##')[0]
    assert '| polynorm | -0.0500 |' in against and 'lower loss' in against  # 0.05 lower, seeds 0.01 apart
    assert '| relu | +0.0000 |' in against and 'not distinguishable at 2 seeds' in against


def test_budget_ladder_sweep_gives_the_compute_equivalent_speedup(fake_train, monkeypatch):
    out, calls = fake_train
    s = spec(out, ['swiglu', 'polynorm'], lrs=[2e-3, 4e-3], budgets=[0.5, 1.0])
    finals, runs = sweep.run_all(s, 'preset.py', {}, parallel=2)
    ran = calls()
    assert len(ran) == 4 + 2 * 2 + 2 and 'polynorm_lr4e-3_b0.5_s1' in ran and 'swiglu_lr2e-3_b0.5_s0' not in ran
    with open(os.path.join(out, 'polynorm_lr4e-3_b0.5_s1', 'sweep.json')) as f:
        assert '--max_steps=10' in json.load(f)['train_args']  # its own schedule, to its own end
    assert finals[os.path.join(out, 'polynorm_lr4e-3_b0.5_s1')] == pytest.approx(2.01 - 0.05 + 0.1 * math.log(2))
    assert sweep.run_all(s, 'preset.py', {}, parallel=2)[0] == finals and calls() == []  # resumes: all done
    analyzed = []
    monkeypatch.setattr(sweep, 'analyses', lambda run_dirs, out, device: analyzed.extend(run_dirs) or {})
    summary = json.loads(json.dumps(sweep.summarize(s, runs, finals, 'preset.py', {}, SETTINGS)))
    assert not any('_b0.5' in d for d in analyzed) and summary['budgets'] == [0.5, 1.0]
    assert summary['laddered'] == ['polynorm']  # the names the ladder is for, whichever rungs they needed
    assert summary['warmup_steps'] == 2
    ladder = table_rows(report.report(summary), 'Budget ladder')
    # polynorm is 0.05 lower at each budget, 0.1 lower per e-fold more steps: at SwiGLU's full-budget loss at
    # e^-0.5 of the steps
    assert ladder['polynorm'][3] == f"{math.exp(0.5):.2f}"  # lr, 0.5, 1, it
    assert ladder['swiglu'][1:4] == ['-', '2.0050 ± 0.0071', '1 (the reference)']  # the full budget alone
    # 2 seeds (t at about 2 df) and a rung at 0.5 alone: its interval reaches past the ladder, and says so
    assert ladder['polynorm'][4].endswith('to > 2.00') and ladder['polynorm'][5].startswith('its high end')


def test_runs_side_by_side_go_one_to_a_gpu(fake_train, monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,5,7')  # the GPUs the user left visible, in turn
    assert sweep.slot_gpus('cuda', 4) == ['2', '5', '7', '2']
    assert sweep.slot_gpus('cuda', 1) is None and sweep.slot_gpus('cpu', 4) is None
    out, _ = fake_train
    _, runs = sweep.run_all(spec(out, ['swiglu', 'polynorm'], lrs=[2e-3, 4e-3]), 'preset.py', {}, 2, ['3', '5'])
    gpus = [open(os.path.join(run['dir'], 'gpu.txt')).read() for run in runs]
    assert len(gpus) == 8 and set(gpus) == {'3', '5'}  # 4 grid runs and 2 x 2 seeds, on both GPUs


def test_a_failing_run_stops_the_sweep_with_its_log(fake_train):
    out, calls = fake_train
    with pytest.raises(SystemExit, match="fake failure"):
        sweep.run_all(spec(out, ['gelu', 'swiglu'], lrs=[1e-3]), 'preset.py', {}, parallel=1)
    assert calls() == ['gelu_lr1e-3_s1000']  # stopped at once, not retried
    # fixed and run again: the failed run had nothing to continue from, so it takes the new settings
    with pytest.raises(SystemExit, match="fake failure"):
        sweep.run_all(spec(out, ['gelu', 'swiglu'], lrs=[1e-3]), 'preset.py', {'n_layer': '2'}, parallel=1)
    assert calls() == ['gelu_lr1e-3_s1000']  # started anew, not refused for its other settings
    with open(os.path.join(out, 'gelu_lr1e-3_s1000', 'sweep.json')) as f:
        assert '--n_layer=2' in json.load(f)['train_args']  # the settings it now runs with, on record


def test_a_run_diverging_outside_the_grid_stops_the_sweep(fake_train):
    out, calls = fake_train
    with pytest.raises(SystemExit) as e:  # outside the grid a diverged run is no result: the sweep stops
        sweep.run_all(spec(out, ['relu'], seeds=1), 'preset.py', {'learning_rate': '4e-3'}, parallel=1)
    assert f"exit code {settings.EXIT_DIVERGED})" in str(e.value) and 'loss is nan' in str(e.value)
    assert calls() == ['relu_s0'] and not os.path.exists(os.path.join(out, 'relu_s0', 'diverged.txt'))


def test_ctrl_c_makes_the_runs_save_and_stop(fake_train):
    out, calls = fake_train
    code = (f"import sweep; sweep.TRAIN = {sweep.TRAIN!r}; "
            f"sweep.run_all({spec(out, ['relu2', 'swiglu'], lrs=[1e-3])!r}, 'preset.py', {{}}, 2)")
    sweep_process = subprocess.Popen([sys.executable, '-c', code], cwd=HERE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(out, 'relu2_lr1e-3_s1000', 'ready')) and time.time() < deadline:
        time.sleep(0.1)  # until the fake run has its SIGINT handler
    sweep_process.send_signal(signal.SIGINT)
    stdout, stderr = sweep_process.communicate(timeout=60)
    assert 'interrupted' in stderr and 'to save a checkpoint' in stdout
    assert os.path.exists(os.path.join(out, 'relu2_lr1e-3_s1000', 'saved'))  # the run got one SIGINT and saved


# -----------------------------------------------------------------------------
# a tiny sweep end to end: train.py runs as a subprocess, analyze.py reads the checkpoints

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--ffn_hidden=64', '--tokens_per_step=256',
        '--micro_batch_size=8', '--max_steps=6', '--warmup_steps=2', '--eval_interval=3', '--eval_steps=2',
        '--log_interval=2', '--ckpt_interval=3']
HERE = os.path.dirname(os.path.abspath(__file__))
# tiny models gain nothing from threads, and on a busy machine idle-spinning threads slow them down a lot
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def run_sweep(out, data_dir, *extra):
    argv = [os.path.join(HERE, 'sweep.py'), '--activations', 'swiglu,polynorm', '--seeds', '1', '--out', out,
            f'--data_dir={data_dir}', *TINY, *extra]
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope='module')
def tiny_sweep(tmp_path_factory):
    """A sweep of swiglu and polynorm, one seed each, on byte-level data made of this project's sources,
    whose swiglu run was interrupted at step 3 of 6 before the sweep was started."""
    root = tmp_path_factory.mktemp('sweep')
    data_dir, out = str(root / 'data'), str(root / 'out')
    text = [open(os.path.join(HERE, name), 'rb').read() for name in ('sweep.py', 'analyze.py')]
    write_dataset(data_dir, 'tiny', np.frombuffer(text[0], np.uint8), np.frombuffer(text[1], np.uint8),
                  {'tokenizer': 'bytes', 'vocab_size': 256})
    # the swiglu run as the sweep would start it, stopped after its checkpoint at step 3
    run = sweep.make_run(spec(out, ['swiglu']), 'swiglu', 0)
    args = sweep.train_args(sweep.preset_path('cpu'), sweep.parse_overrides([f'--data_dir={data_dir}', *TINY]), run)
    subprocess.run([sys.executable, os.path.join(HERE, 'train.py'), *args, '--stop_step=3'], env=ENV, check=True,
                   capture_output=True, timeout=300)
    return out, data_dir, run_sweep(out, data_dir)


def table_rows(text, heading='Results'):
    """The rows of the table under the heading that starts with heading: name -> cells."""
    section = text.split('## ' + heading)[1].split('\n## ')[0]
    return {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
            for line in section.splitlines() if line.startswith('| ') and not line.startswith('| activation')}


def test_tiny_sweep_resumes_and_reports(tiny_sweep):
    out, _, stdout = tiny_sweep
    assert 'resuming swiglu_s0' in stdout and 'starting polynorm_s0' in stdout
    _, evals, _ = sweep.read_log(os.path.join(out, 'swiglu_s0'))
    assert [r['step'] for r in evals] == [3, 6]  # the eval before the interruption is kept, the run completed
    text = open(os.path.join(out, 'report.md')).read()
    assert text in stdout
    rows = table_rows(text)
    assert list(rows) == ['swiglu', 'polynorm']
    for name, (lr, params, val, train, tokens, seconds, ms, *analyses) in rows.items():
        assert lr == '-' and 15_000 < int(params.replace(',', '')) < 17_000  # 2 x (4 x 32^2 + 2 x 32 x 64), norms
        assert 0 < float(val) < 10 and 0 < float(train) < 10  # one seed: a plain number, no ± part
        assert float(ms) > 0
        for speed in (tokens, seconds):  # one seed: a plain number, with a bound's note or not
            assert speed.startswith('1.00') if name == 'swiglu' else float(speed.split()[0]) > 0
        *eranks, similarity = analyses  # up, down, gate
        assert all(1 <= float(e) <= 32 for e in eranks[:2])  # at most n_embd, the smaller side of each matrix
        assert -1 <= float(similarity) <= 1
    assert 1 <= float(rows['swiglu'][9]) <= 32 and rows['polynorm'][9] == '-'  # only SwiGLU has a gate
    summary = json.load(open(os.path.join(out, 'summary.json')))
    assert [r['folder'] for r in summary['runs']] == ['swiglu_s0', 'polynorm_s0']
    assert all(r['curve'][-1][2] > 0 for r in summary['runs'])  # training seconds at the last evaluation


def test_restarted_sweep_redoes_nothing(tiny_sweep):
    out, data_dir, first = tiny_sweep
    ckpts = [os.path.join(out, run, 'ckpt.pt') for run in ('swiglu_s0', 'polynorm_s0')]
    mtimes = [os.path.getmtime(path) for path in ckpts]
    stdout = run_sweep(out, data_dir)
    assert 'done already: swiglu_s0' in stdout and 'done already: polynorm_s0' in stdout
    assert 'starting' not in stdout and 'resuming' not in stdout
    assert [os.path.getmtime(path) for path in ckpts] == mtimes
    assert table_rows(stdout) == table_rows(first)
    text = open(os.path.join(out, 'report.md')).read()
    again = subprocess.run([sys.executable, os.path.join(HERE, 'report.py'), '--out', out],
                           capture_output=True, text=True, env=ENV, timeout=300)  # from the summary alone
    assert again.returncode == 0 and open(os.path.join(out, 'report.md')).read() == text
    with pytest.raises(AssertionError, match="other settings"):  # the same folders with another model
        run_sweep(out, data_dir, '--n_embd=64')
