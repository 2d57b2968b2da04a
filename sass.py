"""
Registers, spills and occupancy of the PolyNorm kernels (polykernels.py) on sm_90 (H100, H200), without a GPU.

    python sass.py                      order 3: writes out/sass.md (docs/gpu.md's register table) and out/sass.json
    python sass.py --order 4 --out out/sass_order4

Triton compiles each kernel for sm_90 in bf16 (`triton.compile(ASTSource(...), target=GPUTarget('cuda', 90, 32))`),
then the ptxas that Triton itself calls reports registers and spills on its PTX. Each width is compiled with the
tiling polykernels.py chooses, and wide rows also with MAX_BLOCK-wide tiles, to show why they are not chosen; each at
4 to 32 warps. That is how polykernels.py's tile widths and warps were sized before a GPU was lent. About a minute.
"""

import argparse
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone

from common import write_results

WIDTHS = (4096, 8256, 16384, 65536)  # the paper's FFN widths, and a wide one
WARPS = (4, 8, 16, 32)
# sm_90 (H100, H200): per SM 65536 registers, allocated per warp in units of 256; at most 64 warps and 32
# programs; 228 KiB of shared memory, of which each program also reserves 1 KiB
SM90 = dict(registers=65536, register_unit=256, warps=64, programs=32, shared=228 * 1024, reserved_shared=1024)


def kernel_signature(kernel, io_type):
    """ASTSource's signature for a polykernels.py kernel: x, y, dy and dx in io_type, other pointers float32."""
    signature = {}
    for name in kernel.arg_names:
        if name.isupper():
            signature[name] = 'constexpr'
        elif name in ('x_ptr', 'y_ptr', 'dy_ptr', 'dx_ptr'):
            signature[name] = '*' + io_type
        elif name.endswith('_ptr'):
            signature[name] = '*fp32'
        else:
            signature[name] = 'fp32' if name == 'eps' else 'i32'
    return signature


def sass_usage(kernel, constants, num_warps):
    """Registers and spills per thread, and shared memory per program, of a kernel compiled for sm_90 in bf16."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource
    source = ASTSource(fn=kernel, signature=kernel_signature(kernel, 'bf16'), constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget('cuda', 90, 32), options={'num_warps': num_warps})
    with tempfile.TemporaryDirectory() as folder:
        ptx = os.path.join(folder, 'kernel.ptx')
        with open(ptx, 'w') as f:
            f.write(compiled.asm['ptx'])
        done = subprocess.run([get_ptxas(90).path, '-v', '--regAllocOptLevel=2', '--gpu-name=sm_90a', ptx,
                               '-o', os.path.join(folder, 'kernel.cubin')], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ptxas failed: {done.stderr.strip()[-500:]}")
    registers = int(re.search(r'Used (\d+) registers', done.stderr).group(1))
    spills = sum(int(n) for n in re.findall(r'(\d+) bytes spill (?:stores|loads)', done.stderr))
    return dict(registers=registers, spill_bytes=spills, shared_bytes=compiled.metadata.shared)


def occupancy(registers, shared_bytes, num_warps):
    """Warps resident per SM on sm_90, over its 64: the fewest that registers, shared memory and the program and
    warp limits allow, for one-program-per-row kernels."""
    per_warp = math.ceil(registers * 32 / SM90['register_unit']) * SM90['register_unit']
    programs = min(SM90['registers'] // per_warp // num_warps, SM90['warps'] // num_warps, SM90['programs'],
                   SM90['shared'] // (shared_bytes + SM90['reserved_shared']))
    return programs * num_warps / SM90['warps']


def tilings(polykernels, width):
    """The tiling polykernels.py launches for the width, and for a row swept in tiles, MAX_BLOCK-wide tiles as well."""
    chosen = polykernels.norm_tiles(width)
    if chosen['ONE_TILE']:
        return [chosen]
    rest = width % polykernels.MAX_BLOCK
    return [chosen, dict(BLOCK=polykernels.MAX_BLOCK, TAIL=1 << (rest - 1).bit_length() if rest else 0, ONE_TILE=False)]


def report_rows(polykernels, order):
    """Every (width, tiling, kernel, warps) compiled for sm_90, with its registers, spills and occupancy."""
    rows = []
    for width in WIDTHS:
        options = tilings(polykernels, width)
        for tiles in options:
            for name, kernel in (('forward', polykernels._poly_norm_fwd_kernel),
                                 ('backward', polykernels._poly_norm_bwd_kernel)):
                constants = dict(ORDER=order, R=1 << (order - 1).bit_length(),
                                 **{k: v for k, v in tiles.items() if k != 'num_warps'})
                for warps in WARPS:
                    usage = sass_usage(kernel, constants, warps)
                    row = dict(width=width, kernel=name, BLOCK=tiles['BLOCK'], TAIL=tiles['TAIL'],
                               ONE_TILE=tiles['ONE_TILE'], num_warps=warps,
                               used=tiles is options[0] and warps == tiles['num_warps'], **usage,
                               occupancy=occupancy(usage['registers'], usage['shared_bytes'], warps))
                    rows.append(row)
                    print(f"  {width} {name} BLOCK {row['BLOCK']} TAIL {row['TAIL']} warps {warps}: "
                          f"{row['registers']} registers, {row['spill_bytes']} B spilled, "
                          f"occupancy {100 * row['occupancy']:.0f} %", flush=True)
    return rows


def markdown(rows, order, triton_version, command):
    lines = [f"### PolyNorm kernels on sm_90 (H100/H200), order {order}, bf16", '',
             f"Compiled without a GPU: triton {triton_version}, `triton.compile(ASTSource(...), "
             f"target=GPUTarget('cuda', 90, 32))`, then Triton's own ptxas -v. `{command}`", '',
             "Each cell: registers per thread / spilled bytes / occupancy (resident warps per SM out of 64, one "
             "program per row). **Bold**: what polykernels.py launches.", '',
             f"| width | tiling | kernel | {' | '.join(f'{w} warps' for w in WARPS)} |",
             f"|{'---|' * (3 + len(WARPS))}"]
    cells = {}
    for r in rows:
        text = f"{r['registers']} / {r['spill_bytes']} B / {100 * r['occupancy']:.0f} %"
        cells.setdefault((r['width'], r['BLOCK'], r['TAIL'], r['ONE_TILE'], r['kernel']), {})[r['num_warps']] = (
            f"**{text}**" if r['used'] else text)
    for (width, block, tail, one_tile, kernel), by_warps in cells.items():
        tiles = 'one tile' if one_tile else f"{block}-wide tiles" + (f" + {tail}" if tail else '')
        lines.append(f"| {width} | {tiles} | {kernel} | {' | '.join(by_warps[w] for w in WARPS)} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(prog='sass.py', description="Registers, spills and occupancy of the PolyNorm "
                                                            "kernels on sm_90, compiled without a GPU.")
    p.add_argument('--order', type=int, default=3, choices=[2, 3, 4], help="the PolyNorm order r")
    p.add_argument('--out', default=os.path.join('out', 'sass'), help="prefix of the .md and .json written")
    args = p.parse_args(argv)
    try:
        import polykernels
    except ImportError:
        raise SystemExit("sass.py needs Triton (pip install triton)") from None
    if polykernels.INTERPRETED:
        raise SystemExit("sass.py compiles the kernels, which TRITON_INTERPRET=1 replaces with the interpreter; "
                         "run it without TRITON_INTERPRET")
    import triton
    command = ' '.join(['python', 'sass.py', *(sys.argv[1:] if argv is None else argv)])
    rows = report_rows(polykernels, args.order)
    text = markdown(rows, args.order, triton.__version__, command)
    print('\n' + text)
    report = {'triton': triton.__version__, 'python': platform.python_version(), 'command': command,
              'date': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'order': args.order, 'rows': rows}
    write_results(args.out, text, report)
    print(f"wrote {args.out}.md and {args.out}.json")
    return report


if __name__ == '__main__':
    main()
