"""
Hand-written mutants: each breaks the code the way a real bug would, and the tests named beside it must then
fail. A mutant they survive is a test that cannot catch what it is named for (docs/testing.md).

    python .ci/mutants.py           # every mutant, one at a time, on a copy of the repository (about 5 minutes)
    python .ci/mutants.py 1 4       # only these (numbers as --list prints them)
    python .ci/mutants.py --list
    python .ci/mutants.py --mutmut settings.py test_settings.py   # mutmut 3's own mutants of one file instead
    python .ci/mutants.py --mutmut report.py test_report.py -k 'not report_py'   # then pytest's arguments

Each mutant replaces one piece of text (found exactly once) in one file of the copy, runs its tests with
pytest -x, and restores the file: 'killed' when a test fails, 'survived' when all pass, 'error' when pytest could
not run them. Exit status 0 when every mutant was killed, else 1. The working tree is never changed.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

# (file, the text, its mutant, the tests that must fail: pytest arguments, what the mutant breaks)
MUTANTS = [
    ('train.py', "(losses['loss'] / len(batches)).backward()",
     "(losses['loss'] / len(batches) * (dist.get_world_size() if ddp else 1)).backward()",
     ['test_train.py', '-k', 'two_process_ddp_matches'], "DDP sums the gradients over processes, not averages"),
    ('train.py', "sync = not ddp or micro == len(batches) - 1", "sync = not ddp or micro == 0",
     ['test_train.py', '-k', 'gradient_accumulation'], "DDP syncs on the first micro-step, not the last"),
    ('train.py', "checkpoint.trim_log(cfg.out_dir, progress['step'])", "pass",
     ['test_train.py', '-k', 'drops_log or unparsable'], "a resume never trims the log"),
    ('checkpoint.py', "elif record['step'] <= step:", "else:",
     ['test_train.py', '-k', 'drops_log or unparsable'], "trim_log keeps every record"),
    ('checkpoint.py', "        return\n    kept = []", "        pass\n    return\n    kept = []",
     ['test_train.py', '-k', 'drops_log or unparsable'], "trim_log does nothing"),
    ('checkpoint.py', "        with atomic_file(path) as f:\n            torch.save(obj, f)",
     "        torch.save(obj, path + '.tmp')\n        os.replace(path + '.tmp', path)",
     ['test_train.py', '-k', 'fsync_before_renaming'], "the checkpoint is renamed without an fsync"),
    ('checkpoint.py', "    random.setstate(state['python'])\n    torch.set_rng_state(state['torch'])", "    pass",
     ['test_train.py', '-k', 'random_number_generators'], "a resume does not restore the RNGs"),
    ('checkpoint.py', "state.update({key: value.clone() for key, value in state.items() if torch.is_tensor(value)})",
     "pass", ['test_train.py', '-k', 'random_number_generators'],
     "a resumed optimizer's state stays in the checkpoint's memory map"),
    ('model.py', "        return self.weight[expert].t().unsqueeze(-1), self.bias[expert]",
     "        expert = expert * 0 if torch.compiler.is_compiling() else expert\n"
     "        return self.weight[expert].t().unsqueeze(-1), self.bias[expert]",
     ['test_model.py', '-k', 'compile_fullgraph and polynorm_glu'],
     "compiled, every token takes expert 0's coefficients"),
    ('model.py', "        return self.weight[expert].t().unsqueeze(-1), self.bias[expert]",
     "        expert = (expert + 1) % len(self.weight) if torch.compiler.is_compiling() else expert\n"
     "        return self.weight[expert].t().unsqueeze(-1), self.bias[expert]",
     ['test_model.py', '-k', 'compile_fullgraph and polynorm_glu'],
     "compiled, each token takes the next expert's coefficients"),
    ('model.py', "        return self.weight[expert].t().unsqueeze(-1), self.bias[expert]",
     "        return self.weight[expert * 0].t().unsqueeze(-1), self.bias[expert * 0]",
     ['test_model.py', '-k', 'per_expert or moe_paths_agree'], "the grouped path collapses per-expert coefficients"),
    ('model.py', "    if impl == 'triton':\n        return fused(x, *args)",
     "    if impl == 'triton_':\n        return fused(x, *args)",
     ['test_model.py', '-k', 'triton_impl'], "act_impl='triton' runs the plain code"),
    ('model.py', "matmul_params = self.num_params()['active']", "matmul_params = self.num_params()['total']",
     ['test_model.py', '-k', 'flops'], "flops_per_token counts idle experts"),
    ('model.py', "return 6 * matmul_params + 12 * cfg.n_layer * cfg.n_embd * seq_len", "return 6 * matmul_params",
     ['test_model.py', '-k', 'flops'], "flops_per_token leaves out attention"),
    ('model.py', "if not all(d % 8 == 0 for d in self.w_up.shape[1:]):", "if False:",
     ['test_model.py', '-k', 'odd_shapes'], "the grouped GEMM is picked for widths it cannot take"),
    ('analyze.py', "by_role = {'up': ffn.up, 'down': ffn.down, 'gate': ffn.gate}",
     "by_role = {'up': ffn.down, 'down': ffn.up, 'gate': ffn.gate}",
     ['test_analyze.py', '-k', 'tiny_checkpoint'], "analyze swaps the up and down labels"),
    ('sweep.py', "    os.makedirs(run_dir, exist_ok=True)\n    atomic_write(",
     "    os.makedirs(run_dir, exist_ok=True)\n    if not os.path.exists(path):\n        atomic_write(",
     ['test_sweep.py', '-k', 'failing_run_stops'], "a rerun of a failed run keeps its old settings on record"),
    ('report.py', "final {split} loss equals SwiGLU's full-budget mean final {split} loss",
     "final val loss equals SwiGLU's full-budget mean final val loss",
     ['test_report.py', '-k', 'split_the_seeds'], "the budget ladder's note says val loss of seeds measured on test"),
    ('common.py', "'bracketed' if worse[:1] == [True] else 'tied' if any(worse) else 'open'",
     "'bracketed' if any(worse) else 'open'",
     ['test_report.py', '-k', 'bracket'], "an lr beyond a tied neighbour brackets the chosen lr"),
    ('sweep.py', "side = next((side for side, kind in sides.items() if kind == 'open'), None)", "side = None",
     ['test_sweep.py', '-k', 'widens_past_a_tie'], "the size ladder widens a grid only at its edge, never past a tie"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def copy_repository():
    """The tracked and untracked (not ignored) files, copied into a new temporary folder."""
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split('\0')
    copy = tempfile.mkdtemp(prefix='mutants_')
    for name in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.join(copy, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(copy, name))
    return copy


def run_mutant(copy, mutant):
    """'killed', 'survived' or 'error', and the seconds its tests took."""
    name, text, mutated, tests, _ = mutant
    path = os.path.join(copy, name)
    with open(path) as f:
        original = f.read()
    if original.count(text) != 1:
        raise SystemExit(f"{name}: the text to mutate is found {original.count(text)} times, not once: {text!r}")
    with open(path, 'w') as f:
        f.write(original.replace(text, mutated))
    try:
        started = time.time()
        done = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *tests],
                              cwd=copy, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True)
        # pytest's exit status: 0 all passed, 1 some failed, anything else it could not run them
        return {0: 'survived', 1: 'killed'}.get(done.returncode, 'error'), time.time() - started
    finally:
        with open(path, 'w') as f:
            f.write(original)


def run_mutmut(source, tests, *pytest_args):
    """mutmut 3 (pip install mutmut) on one file with one test file (and pytest's arguments, e.g. -k to leave out
    the tests that run the file as a subprocess, whose output mutmut's own instrumentation changes), in a copy of
    the repository (mutmut reads its settings from setup.cfg, written there); prints mutmut's results: the
    mutants that survived, by name (`mutmut show NAME` in the copy's folder shows one)."""
    copy = copy_repository()
    others = sorted(name for name in os.listdir(copy) if name.endswith('.py') and name not in (source, tests))
    lines = lambda values: ''.join(f"    {value}\n" for value in values)  # a list in setup.cfg: one per line
    with open(os.path.join(copy, 'setup.cfg'), 'w') as f:
        f.write(f"[mutmut]\npaths_to_mutate = {source}\npytest_add_cli_args_test_selection =\n"
                + lines([tests, *pytest_args]) + "also_copy =\n"
                + lines(others + ['config/', 'data/', 'hf/', 'assets/']))
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    subprocess.run([sys.executable, '-m', 'mutmut', 'run'], cwd=copy, env=env)
    subprocess.run([sys.executable, '-m', 'mutmut', 'results'], cwd=copy, env=env)
    print(f"(the copy, with mutmut's files: {copy})")
    return 0


def main(argv):
    if argv[:1] == ['--mutmut'] and len(argv) >= 3:
        return run_mutmut(*argv[1:])
    if argv == ['--list']:
        for n, (name, *_, what) in enumerate(MUTANTS, 1):
            print(f"{n:3d}  {name}: {what}")
        return 0
    chosen = [int(a) for a in argv] or range(1, len(MUTANTS) + 1)
    copy = copy_repository()
    try:
        results = []
        for n in chosen:
            mutant = MUTANTS[n - 1]
            result, seconds = run_mutant(copy, mutant)
            results.append(result)
            print(f"{n:3d}  {result:8s} {seconds:5.0f} s  {mutant[0]}: {mutant[4]}  ({' '.join(mutant[3])})",
                  flush=True)
    finally:
        shutil.rmtree(copy)
    print(f"killed {results.count('killed')} of {len(results)} mutants")
    return 0 if results.count('killed') == len(results) else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
