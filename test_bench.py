"""Tests of bench.py on the CPU: the suites run end to end on tiny shapes, and the cost models, the memory
counting and the timing loop are checked against values worked out by hand."""

import argparse
import builtins
import json
import os
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

import bench

ROOT = os.path.dirname(os.path.abspath(__file__))
ROWS, WIDTHS = 16, (64, 96)  # gated activations run swiglu_width: 40 and 64


@pytest.fixture(scope='module')
def cpu_run(tmp_path_factory):
    """One small activation suite, shared by the tests that read its tables."""
    out = tmp_path_factory.mktemp('bench') / 'act'
    threads = torch.get_num_threads()
    report = bench.main(['--device', 'cpu', '--rows', str(ROWS), '--widths', *map(str, WIDTHS),
                         '--impls', 'eager', 'ckpt', 'fused', 'liger', '--repeats', '2', '--ffn_embd', '64',
                         '--act_impls', 'plain', '--out', str(out)])
    assert torch.get_num_threads() == threads  # the CPU run's single thread does not leak into the caller
    return report, out


def table_rows(markdown):
    """The cells of every markdown table row, header and separator lines left out."""
    rows = [line.strip('|').split('|') for line in markdown.splitlines() if line.startswith('| ')]
    return [[cell.strip() for cell in row] for row in rows if row[0].strip() != 'activation']


def expected_rows():
    """(activation, impl, shape) of every row the fixture's run makes: the fused kernels only where they run here
    (CUDA, or Triton's interpreter, which conftest.py turns on without CUDA unless TRITON_INTERPRET is set)."""
    fused = bench.triton_runs_on(torch.device('cpu'))
    rows = []
    for width in WIDTHS:
        for act in bench.ACTIVATIONS:
            shape = f'{ROWS} x {bench.act_width(act, width)}' + (' (x2)' if act in bench.GATED else '')
            rows.append((act, 'eager', shape))
            if bench.poly(act):
                rows.append((act, 'ckpt', shape))
                if fused:
                    rows.append((act, 'fused', shape))
    return rows


def test_activation_table_has_one_row_per_combination(cpu_run):
    report, out = cpu_run
    markdown = open(f'{out}.md').read()
    first_table = markdown.split('####')[0]
    got = sorted((r[0], r[1], r[2]) for r in table_rows(first_table))
    assert got == sorted(expected_rows())
    assert ('swiglu', 'eager', f'{ROWS} x 40 (x2)') in got  # 2/3 of 64, rounded to a multiple of 8
    assert 'CPU figures' in markdown
    # the implementations that exist but cannot run here are named with the reason, not silently dropped
    notes = '\n'.join(report['activations']['notes'])
    assert 'polynorm liger: not run' in notes
    assert ('polynorm fused: not run' in notes) != bench.triton_runs_on(torch.device('cpu'))


def test_json_holds_sane_figures_and_the_environment(cpu_run):
    _, out = cpu_run
    report = json.load(open(f'{out}.json'))
    env = report['environment']
    assert env['device'].startswith('CPU') and env['torch'] == torch.__version__ and env['cpu_threads'] == 1
    assert f'--rows {ROWS}' in env['command'] and env['date']
    assert report['activations']['copy_GBps'] > 0
    rows = report['activations']['activations']
    assert len(rows) == len(expected_rows())
    for r in rows:
        assert 'error' not in r, r
        for key in ('fwd_ms', 'fwd_bwd_ms', 'fwd_GBps', 'fwd_bwd_GBps', 'saved_bytes'):
            assert r[key] > 0, (key, r)
        assert r['peak_extra_bytes'] is None  # CUDA only
        assert r['diff_vs_float64'] <= 1e-4  # float32 on a CPU
    ffn = report['activations']['ffn']
    assert {(r['activation'], r['hidden']) for r in ffn} == {(a, w) for a in bench.ACTIVATIONS for w in WIDTHS}
    for r in ffn:
        assert r['ffn_ms'] > 0 and r['act_ms'] > 0 and 0 < r['flops_share'] < 1


def test_bytes_moved_by_hand():
    # relu, 4 x 10 in bf16: forward reads x and writes y (2 * 40 * 2), backward reads x, dy, writes dx (3 * 40 * 2)
    assert bench.bytes_moved('relu', 4, 10, 2) == (160, 160 + 240)
    # SwiGLU reads gate and up: forward 3 tensors, backward gate, up, dy in and two gradients out
    assert bench.bytes_moved('swiglu', 4, 10, 2) == (240, 240 + 400)
    assert bench.bytes_moved('polynorm', 1, 1, 4) == (8, 8 + 12)


def test_bytes_column_matches_the_shape(cpu_run):
    report, _ = cpu_run
    for r in report['activations']['activations']:
        k = 2 if r['activation'] in bench.GATED else 1
        assert r['fwd_bytes'] == (k + 1) * ROWS * r['width'] * 4  # float32
        assert r['fwd_bwd_bytes'] == (3 * k + 2) * ROWS * r['width'] * 4


def test_flops_by_hand():
    # dense 1B FFN: n_embd 2048, hidden 8256. PolyNorm r=3: 6*3-1 = 17 operations per element forward
    assert bench.flops_per_token('polynorm', 2048, 8256, 3) == (12 * 2048 * 8256, 51 * 8256)
    # SwiGLU at 2/3 of the width, 5504, with three matrices: the same matmul FLOPs, 5 operations per element
    assert bench.flops_per_token('swiglu', 2048, 8256, 3) == (18 * 2048 * 5504, 15 * 5504)
    assert 18 * 5504 == 12 * 8256  # the parameter match of model.swiglu_width
    assert bench.flops_per_token('relu', 2048, 4096, 3) == (12 * 2048 * 4096, 3 * 4096)
    assert bench.flops_per_token('polyrelu', 1024, 4096, 2) == (12 * 1024 * 4096, 18 * 4096)
    matmul, act = bench.flops_per_token('polynorm', 2048, 8256, 3)
    assert act / (matmul + act) == pytest.approx(51 / (51 + 12 * 2048), rel=1e-12)  # about 0.21 %


def test_ffn_flops_share_is_the_formula(cpu_run):
    report, _ = cpu_run
    for r in report['activations']['ffn']:
        matmul, act = bench.flops_per_token(r['activation'], 64, r['hidden'], 3)
        assert r['flops_share'] == pytest.approx(act / (matmul + act))


def test_saved_bytes_counts_distinct_tensors():
    x = torch.randn(8, 16, requires_grad=True)
    assert bench.saved_bytes(lambda t: t * 2, [x], []) == 0  # multiplying by a constant keeps nothing
    assert bench.saved_bytes(lambda t: t.sin(), [x], []) == 8 * 16 * 4  # sin keeps its input
    assert bench.saved_bytes(lambda t: t.sin() + t.cos(), [x], []) == 8 * 16 * 4  # the same x, counted once
    w = torch.randn(16, requires_grad=True)
    assert bench.saved_bytes(lambda t: t * w, [x], [w]) == 8 * 16 * 4  # x kept for dw; w is a parameter


def test_saved_bytes_rank_checkpointing_first(cpu_run):
    report, _ = cpu_run
    saved = {(r['activation'], r['impl'], r['rows'], r['hidden']): r['saved_bytes']
             for r in report['activations']['activations']}
    for hidden in WIDTHS:
        ckpt, relu2, eager = (saved[a, i, ROWS, hidden] for a, i in
                              (('polynorm', 'ckpt'), ('relu2', 'eager'), ('polynorm', 'eager')))
        assert ckpt <= relu2 < eager
        assert relu2 == ROWS * hidden * 4  # relu(x), kept once by both relu and square
        assert ckpt == ROWS * hidden * 4  # checkpointing keeps x alone


def test_measure_cycles_over_buffers_after_warmup():
    calls = []
    ms = bench.measure(calls.append, 3, 5, torch.device('cpu'))
    assert ms >= 0
    assert calls == [i % 3 for i in range(bench.WARMUP + 5)]


def test_buffers_exceed_four_times_the_cache(monkeypatch):
    monkeypatch.setattr(bench, 'CPU_CACHE_BYTES', 2**20)
    buffers = bench.make_buffers(1, (256, 256), torch.float32, torch.device('cpu'))
    assert len(buffers) == 8  # 4 MiB / (x and dy, 256 KiB each)
    (x,), dy = buffers[0]
    assert x.requires_grad and not dy.requires_grad and x.shape == dy.shape == (256, 256)
    assert len(bench.make_buffers(1, (2, 2), torch.float32, torch.device('cpu'))) == bench.MAX_BUFFERS


class VirtualGPU:
    """bench.timed_group on a virtual clock: the host takes host_ms to queue a call, the GPU sleeps sleep_ms and then
    runs each call in gpu_ms. A function that synchronizes makes the host wait for the GPU, sleep included."""

    def __init__(self, host_ms, gpu_ms, synchronizes=False):
        self.host_ms, self.gpu_ms, self.synchronizes = host_ms, gpu_ms, synchronizes
        self.elapsed_ms = 0.0

    def __call__(self, run, group, device, sleep_ms):
        n = len(group)
        if self.synchronizes:
            host_ms, ahead = sleep_ms + n * (self.host_ms + self.gpu_ms), False
        else:
            host_ms = n * self.host_ms
            ahead = host_ms < sleep_ms
        gpu_ms = sleep_ms + n * self.gpu_ms if ahead else max(host_ms, sleep_ms) + self.gpu_ms
        self.elapsed_ms += max(host_ms, gpu_ms)
        return (gpu_ms - sleep_ms) / n, host_ms, ahead


@pytest.mark.parametrize('host_ms, gpu_ms', [(0.1, 0.05), (10.0, 1.0), (20.0, 0.01)])
def test_cuda_timing_on_a_virtual_clock(monkeypatch, host_ms, gpu_ms):
    gpu = VirtualGPU(host_ms, gpu_ms)
    monkeypatch.setattr(bench, 'timed_group', gpu)
    assert bench.cuda_ms_per_call(None, list(range(25)), None) == pytest.approx(gpu_ms)
    assert gpu.elapsed_ms < 25 * (host_ms + gpu_ms) + 2 * bench.GROUPS * bench.MAX_SLEEP_MS


@pytest.mark.parametrize('gpu', [VirtualGPU(0.1, 0.05, synchronizes=True), VirtualGPU(60.0, 1.0)],
                         ids=['synchronizes', 'slow-host'])
def test_cuda_timing_refuses_within_a_second(monkeypatch, gpu):
    # the sleep once doubled without a cap: a synchronizing function slept the GPU about 1,150 s before the refusal
    monkeypatch.setattr(bench, 'timed_group', gpu)
    with pytest.raises(RuntimeError, match="could not queue the calls ahead of the GPU"):
        bench.cuda_ms_per_call(None, list(range(25)), None)
    assert gpu.elapsed_ms < 1000


def test_compiled_rows_stay_compiled_past_dynamos_limit(monkeypatch):
    # ten widths: ten compiled variants of ReLU2.forward, past dynamo's default limit of 8 per code object, past
    # which the rest would run eager under a 'compile' label
    monkeypatch.setattr(bench, 'COMPILE_BACKEND', 'eager')  # dynamo's graph capture, without inductor's build
    widths = [str(8 * k) for k in range(1, 11)]
    args = bench.parse_args(['--device', 'cpu', '--rows', '8', '--widths', *widths, '--impls', 'compile',
                             '--activations', 'relu2', '--repeats', '1', '--ffn_embd', '8', '--act_impls', 'plain'])
    torch._dynamo.reset()
    before = counters['stats']['unique_graphs']
    report = {}
    bench.run_activations(args, torch.device('cpu'), report, lambda: None)
    assert all('error' not in r for r in report['activations'])
    assert counters['stats']['unique_graphs'] - before == len(widths)


class ImitationLiger(torch.nn.Module):
    """Liger's PolyNorm as its kernels compute it, in PyTorch (Liger's kernels do not run on a CPU): weight[0] goes
    with x**3, the powers stay in x's dtype, the norms in float32. Same constructor and parameters."""

    def __init__(self, eps=1e-6, in_place=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((3,), 1 / 3))
        self.bias = torch.nn.Parameter(torch.tensor(1.0))
        self.eps = eps

    def powers(self, x):
        return x * x * x, x * x, x

    def forward(self, x):
        y = self.bias + sum(w * p.float() * torch.rsqrt(p.float().pow(2).mean(-1, keepdim=True) + self.eps)
                            for w, p in zip(self.weight, self.powers(x)))
        return y.to(x.dtype)


class MisorderedLiger(ImitationLiger):
    def powers(self, x):  # weight[0] with x: model.py's order, which bench.py must not assume of Liger
        return x, x * x, x * x * x


@pytest.mark.parametrize('liger, agrees', [(ImitationLiger, True), (MisorderedLiger, False)])
def test_liger_is_checked_against_float64(monkeypatch, tmp_path, liger, agrees):
    monkeypatch.setattr(bench, 'liger_poly_norm_class', lambda: (liger, None))
    monkeypatch.setattr(bench, 'unavailable', lambda *args: None)  # the CUDA requirement, lifted
    report = bench.main(['--device', 'cpu', '--dtype', 'bfloat16', '--rows', '16', '--widths', '256', '--activations',
                         'polynorm', '--impls', 'eager', 'liger', '--repeats', '1', '--ffn_embd', '16', '--act_impls',
                         'plain', '--out', str(tmp_path / 'liger')])
    eager, row = report['activations']['activations']
    assert row['impl'] == 'liger' and eager['diff_vs_float64'] < 1e-2
    if agrees:
        assert 'error' not in row and row['diff_vs_float64'] < 2e-2 and row['fwd_bwd_ms'] > 0
    else:
        assert row['error'].startswith("output differs from the float64 definition") and 'fwd_ms' not in row
    assert 'liger (powers in bfloat16)' in open(tmp_path / 'liger.md').read()


def write_tiny_configs(folder):
    dense = folder / 'tiny_dense.py'
    dense.write_text("n_layer = 2\nn_head = 2\nn_embd = 64\nblock_size = 16\nvocab_size = 128\n"
                     "ffn_hidden = 128\nmicro_batch_size = 2\n")
    moe = folder / 'tiny_moe.py'
    moe.write_text("inherit('tiny_dense.py')\n"
                   "n_experts = 4\ntop_k = 2\nmoe_ffn_hidden = 64\nqk_norm = True\n")
    return dense, moe


def test_model_suite_dense_and_moe(tmp_path):
    dense, moe = write_tiny_configs(tmp_path)
    activations = ['relu', 'swiglu', 'polynorm']
    common = ['--device', 'cpu', '--no-compile', '--steps', '1', '--activations', *activations, '--act_impls', 'plain']

    report = bench.main([*common, '--model', str(dense), '--n_layer', '1', '--out', str(tmp_path / 'dense')])
    runs = report['model']['runs']
    assert [r['activation'] for r in runs] == activations
    for r in runs:
        assert 'error' not in r, r
        assert r['n_layer'] == 1 and r['compile'] == 'eager' and r['moe_impl'] is None
        assert r['step_ms'] > 0 and r['tokens_per_s'] > 0 and r['mfu'] is None

    report = bench.main([*common, '--model', str(moe), '--out', str(tmp_path / 'moe')])
    runs = report['model']['runs']
    assert [(r['activation'], r['moe_impl']) for r in runs] == [(a, p) for a in activations
                                                                 for p in ('grouped', 'loop')]
    assert all('error' not in r and r['step_ms'] > 0 for r in runs)
    markdown = open(tmp_path / 'moe.md').read()
    assert 'MoE experts' in markdown and len(table_rows(markdown)) == 6


def test_model_suite_times_each_variant_once_warm_and_writes_after_every_round(tmp_path, monkeypatch):
    dense, _ = write_tiny_configs(tmp_path)
    events, written = [], []
    monkeypatch.setattr(bench, 'log', lambda line: events.append(line.strip().split(':')[:2]))
    real_write = bench.write_results
    monkeypatch.setattr(bench, 'write_results', lambda prefix, markdown, report: (
        written.append(sum(len(r.get('round_ms', [])) for r in report['model']['runs'])),
        real_write(prefix, markdown, report)))
    bench.main(['--device', 'cpu', '--no-compile', '--steps', '1', '--activations', 'relu2', 'polynorm',
                '--act_impls', 'plain', '--model', str(dense), '--out', str(tmp_path / 'dense')])
    rounds = [event for event in events if len(event) == 2 and event[1] in (' built and warmed up', ' round 1',
                                                                             ' round 2', ' round 3')]
    assert rounds == [['relu2 (eager)', ' built and warmed up'], ['relu2 (eager)', ' round 1'],
                      ['polynorm plain (eager)', ' built and warmed up'], ['polynorm plain (eager)', ' round 1'],
                      ['relu2 (eager)', ' round 2'], ['polynorm plain (eager)', ' round 2'],
                      ['relu2 (eager)', ' round 3'], ['polynorm plain (eager)', ' round 3']]
    assert written == [1, 2, 3, 4, 5, 6, 6]  # after every round, then once more at the end


def test_a_model_suite_stopped_by_sigterm_keeps_what_it_measured(tmp_path):
    dense, _ = write_tiny_configs(tmp_path)
    out = tmp_path / 'dense'
    run = subprocess.Popen([sys.executable, 'bench.py', '--device', 'cpu', '--no-compile', '--steps', '1',
                            '--activations', 'relu2', 'polynorm', 'swiglu', '--act_impls', 'plain', '--model',
                            str(dense), '--out', str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for line in run.stdout:  # stopped as soon as the first variant has a figure
        if 'round 1' in line:
            run.terminate()
            break
    assert run.wait(timeout=60) == 143
    report = json.load(open(f'{out}.json'))
    first = report['model']['runs'][0]
    assert report['stopped'] == 'SIGTERM' and first['activation'] == 'relu2' and first['step_ms'] > 0
    markdown = open(f'{out}.md').read()
    assert '**Stopped by SIGTERM after' in markdown and table_rows(markdown)[0][:2] == ['relu2', '-']


def test_model_suite_quick_start_compares_act_impls(tmp_path):
    settings = bench.model_settings(argparse.Namespace(model='quickstart', n_layer=None, block_size=None))
    # config/quickstart.py, as train.py reads it
    assert settings['n_embd'] == 128 and settings['micro_batch_size'] == 16
    report = bench.main(['--device', 'cpu', '--model', 'quickstart', '--n_layer', '1', '--batch_size', '2',
                         '--steps', '1', '--activations', 'relu2', 'polynorm', '--act_impls', 'plain', 'compiled',
                         '--out', str(tmp_path / 'quick')])
    runs = report['model']['runs']
    # ReLU^2 has no PolyCom implementation to choose: one row
    assert [(r['activation'], r['act_impl']) for r in runs] == [('relu2', None), ('polynorm', 'plain'),
                                                                ('polynorm', 'compiled')]
    for r in runs:
        assert 'error' not in r, r
        assert (r['n_embd'], r['block_size'], r['vocab_size'], r['n_layer']) == (
            settings['n_embd'], settings['block_size'], settings['vocab_size'], 1)
        assert len(r['round_ms']) == bench.ROUNDS and r['step_ms'] == sorted(r['round_ms'])[1]
    table = table_rows(open(tmp_path / 'quick.md').read())
    assert [row[:2] for row in table] == [['relu2', '-'], ['polynorm', 'plain'], ['polynorm', 'compiled']]
    assert table[0][5] == '1.00x'  # the ratio column: each step against the first activation's


def test_fused_kernels_in_the_triton_interpreter(tmp_path):
    pytest.importorskip('triton', reason="polykernels.py needs Triton")
    out = tmp_path / 'fused'
    env = {**os.environ, 'TRITON_INTERPRET': '1'}  # read when polykernels.py defines its kernels: a fresh process
    done = subprocess.run([sys.executable, 'bench.py', '--device', 'cpu', '--rows', '8', '--widths', '32',
                           '--activations', 'polyrelu', 'polynorm', 'polynorm_glu', '--impls', 'eager', 'fused',
                           '--repeats', '1',
                           '--ffn_embd', '16', '--act_impls', 'plain', '--out', str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {(r['activation'], r['impl']): r for r in json.load(open(f'{out}.json'))['activations']['activations']}
    for activation in ('polyrelu', 'polynorm', 'polynorm_glu'):
        fused, eager = rows[activation, 'fused'], rows[activation, 'eager']
        assert 'error' not in fused, fused
        assert fused['diff_vs_float64'] <= 1e-4
        assert fused['saved_bytes'] < eager['saved_bytes']  # the kernels keep x (and PolyNorm's row statistics)


def test_compiles_one_graph_per_activation_and_width(monkeypatch):
    # every row count of a width reuses the activation's compiled graph: the full GPU suite compiles activations x
    # widths graphs, not one per shape
    monkeypatch.setattr(bench, 'COMPILE_BACKEND', 'eager')  # dynamo's graph capture, without inductor's build
    args = bench.parse_args(['--device', 'cpu', '--rows', '8', '16', '24', '--widths', '32', '48', '--impls', 'compile',
                             '--activations', 'relu2', 'polynorm', '--repeats', '1'])
    cpu = torch.device('cpu')
    runnable, _ = bench.runnable_impls(args, cpu)
    torch._dynamo.reset()
    before = counters['stats']['unique_graphs']
    rows = []
    bench.activation_rows(args, cpu, 1.0, runnable, rows, lambda: None)
    assert len(rows) == 3 * 2 * 2 and all('error' not in r for r in rows), rows
    assert counters['stats']['unique_graphs'] - before == 2 * 2


def test_liger_that_fails_to_import_is_reported_and_the_suite_goes_on(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):  # e.g. a liger_kernel built for another Triton
        if name.startswith('liger_kernel'):
            raise RuntimeError("built for another Triton")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', failing_import)
    assert bench.liger_poly_norm_class() == (None, "liger_kernel failed to import: RuntimeError: built for another "
                                                   "Triton")
    report = bench.main(['--device', 'cpu', '--rows', '8', '--widths', '16', '--activations', 'polynorm', '--impls',
                         'eager', 'liger', '--repeats', '1', '--ffn_embd', '16', '--act_impls', 'plain',
                         '--out', str(tmp_path / 'liger')])
    assert "polynorm liger: not run, liger_kernel failed to import: RuntimeError" in report['activations']['notes'][0]
    assert report['environment']['liger_kernel'].startswith("liger_kernel failed to import")
    assert [r['impl'] for r in report['activations']['activations']] == ['eager']


def test_liger_rows_say_their_powers_are_not_float32():
    row = {'impl': 'liger', 'dtype': 'bfloat16'}
    assert bench.impl_text(row) == 'liger (powers in bfloat16)'
    assert bench.impl_text({**row, 'dtype': 'float32'}) == 'liger'
    assert bench.impl_text({'impl': 'fused', 'dtype': 'bfloat16'}) == 'fused'


@pytest.mark.parametrize('argv, message', [
    (['--rows', '0'], 'argument --rows: must be a positive integer'),
    (['--activations', 'swish'], "invalid choice: 'swish'"),
    (['--impls', 'triton'], "invalid choice: 'triton'"),
    (['--repeats', '0'], 'argument --repeats: must be a positive integer'),
    (['--order', '9'], "invalid choice: 9"),
    (['--model', 'no/such/config.py'], 'no such file'),
    (['--n_layer', '2'], 'go with --model'),
    (['--act_impls', 'fast'], "invalid choice: 'fast'"),
])
def test_bad_arguments_say_what_to_fix(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(['--device', 'cpu', *argv])
    assert message in capsys.readouterr().err


def test_cuda_asked_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        bench.main(['--device', 'cuda'])
    assert 'run with --device cpu' in capsys.readouterr().err
