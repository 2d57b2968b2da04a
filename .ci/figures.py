"""
The key figures of a .ci/gpu run, as markdown on stdout, read from its logs folder: the questions the run is for,
answered in a few lines at the top of summary.md (bench's full tables follow them there). Any file may be missing
or cut short: .ci/gpu writes the summary after every stage, and a stage may have been stopped at its limit.
Usage: python .ci/figures.py LOGS
"""
import json
import os
import sys

LIGER_HOW = ("bring it with `pip download --no-deps liger-kernel==0.8.5 -d wheels/` and send `wheels` with the "
             "call (docs/gpu.md, \"Proving the GPU paths\")")


def load(logs, name):
    """bench.py's report of the stage `name`, or None when it wrote none (yet)."""
    try:
        with open(os.path.join(logs, f'{name}.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def gbps(v):
    return 'n/a' if v is None else f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def percent(part, whole):
    return f"{100 * part / whole:.0f} %" if part and whole else 'n/a'


def polynorm(logs):
    """Each PolyNorm row's forward+backward against the copy bandwidth measured in the same call and the GPU's
    datasheet bandwidth, and against the fused kernel at the same shape; a line when Liger's rows are missing."""
    report = load(logs, 'bench_polynorm')
    if report is None:
        return ["PolyNorm: no figures (bench_polynorm wrote none)."]
    act = report['activations']
    copy, sheet = act.get('copy_GBps'), act.get('datasheet_GBps')
    lines = [f"PolyNorm forward+backward, {report['environment']['device']}, {report['args']['dtype']}: GB/s as a "
             f"share of the copy bandwidth measured in this call ({gbps(copy)} GB/s) and of the "
             f"datasheet's ({gbps(sheet)} GB/s); time against the fused kernel's at the same shape.", '',
             "| impl | tokens x width | fwd+bwd ms | GB/s | of copy | of datasheet | time / fused |",
             "|---|---|---|---|---|---|---|"]
    rows = [r for r in act['activations'] if r['activation'] == 'polynorm']
    fused = {(r['rows'], r['width']): r['fwd_bwd_ms'] for r in rows if r['impl'] == 'fused' and 'error' not in r}
    for r in rows:
        shape = f"{r['rows']} x {r['width']}"
        if 'error' in r:
            lines.append(f"| {r['impl']} | {shape} | failed: {r['error'][:200]} | | | | |")
            continue
        base = fused.get((r['rows'], r['width']))
        vs_fused = f"{r['fwd_bwd_ms'] / base:.2f}x" if base else 'n/a'
        lines.append(f"| {r['impl']} | {shape} | {r['fwd_bwd_ms']:.3f} | {gbps(r['fwd_bwd_GBps'])} | "
                     f"{percent(r['fwd_bwd_GBps'], copy)} | {percent(r['fwd_bwd_GBps'], sheet)} | {vs_fused} |")
    if not any(r['impl'] == 'liger' for r in rows):
        why = next((n.split(', ', 1)[-1] for n in act.get('notes', []) if n.startswith('polynorm liger')),
                   'not asked for')
        lines += ['', f"**Liger's column is missing**: {why}. To get it, {LIGER_HOW}."]
    if report.get('stopped'):
        lines += ['', f"bench_polynorm was stopped by {report['stopped']}: the rows above are what it measured."]
    return lines


def steps(logs, name):
    """A model stage's step time, tokens/s and MFU per variant, each against the first activation's step."""
    report = load(logs, name)
    if report is None:
        return [f"{name}: no figures (it wrote none)."]
    runs = report['model']['runs']
    timed = [r for r in runs if 'step_ms' in r]
    if not timed:
        return [f"{name}: no variant was timed."]
    first = runs[0]
    lines = [f"{name}: {first['n_layer']} layers x {first['n_embd']}, batch {first['batch_size']} x "
             f"{first['block_size']}; the output layer is {100 * timed[0]['output_flops_share']:.0f} % of the FLOPs.",
             '', f"| variant | step ms | rounds | tokens/s | MFU | vs {first['activation']} |",
             "|---|---|---|---|---|---|"]
    base = {}
    for r in runs:
        if 'step_ms' in r:
            base.setdefault((r['moe_impl'], r['compile']), r['step_ms'])
    for r in runs:
        if 'step_ms' not in r:
            lines.append(f"| {r['label']} | {('failed: ' + r['error'][:200]) if 'error' in r else 'not timed'} "
                         "| | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f} %" if r.get('mfu') is not None else 'n/a'
        b = base[(r['moe_impl'], r['compile'])]
        lines.append(f"| {r['label']} | {r['step_ms']:.1f} | {len(r['round_ms'])} | {r['tokens_per_s']:,.0f} | "
                     f"{mfu} | {r['step_ms'] / b:.3f}x |")
    if report.get('stopped'):
        lines += ['', f"{name} was stopped by {report['stopped']}: the rows above are what it measured."]
    return lines


def training(logs):
    """The training stages' losses, tokens/s and MFU, from the line each stage's check printed."""
    lines = []
    for name in ('train_dense', 'train_fsdp', 'train_ddp', 'train_moe'):
        try:
            with open(os.path.join(logs, f'{name}.log')) as f:
                found = [line.strip() for line in f if line.startswith('logged train losses')]
        except OSError:
            continue
        lines.append(f"- {name}: {found[-1] if found else 'no figures (see its log)'}")
    return lines


def main(logs):
    sections = [polynorm(logs), steps(logs, 'bench_dense'), steps(logs, 'bench_moe'), training(logs)]
    print('\n\n'.join('\n'.join(s) for s in sections if s))


if __name__ == '__main__':
    main(sys.argv[1])
