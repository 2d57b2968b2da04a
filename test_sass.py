"""Tests of sass.py: the occupancy arithmetic by hand, one kernel compiled for sm_90 without a GPU, the table's
layout, and the refusal under Triton's interpreter."""

import ast
import os
import subprocess
import sys

import pytest

import sass

ROOT = os.path.dirname(os.path.abspath(__file__))


def test_occupancy_by_hand():
    assert sass.occupancy(54, 256, 16) == 0.5  # 56 registers a thread, 1792 a warp: 36 warps fit, 2 programs
    assert sass.occupancy(32, 256, 32) == 1.0
    assert sass.occupancy(72, 512, 4) == 28 / 64  # 2304 registers a warp: 28 warps, 7 programs of 4
    assert sass.occupancy(16, 100 * 1024, 4) == 8 / 64  # shared memory: 2 programs of 101 KiB


def test_kernels_compile_for_sm90_without_a_gpu():
    pytest.importorskip('triton', reason="polykernels.py needs Triton")
    # a fresh process without the interpreter, which would replace the kernels Triton compiles
    code = ("import sass, polykernels; print(sass.sass_usage(polykernels._poly_norm_bwd_kernel, "
            "dict(ORDER=3, R=4, BLOCK=2048, TAIL=64, ONE_TILE=False), 8))")
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env={**os.environ, 'TRITON_INTERPRET': '0'},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    usage = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert 0 < usage['registers'] <= 255 and usage['spill_bytes'] == 0 and usage['shared_bytes'] >= 0


def test_wide_rows_are_also_compiled_in_max_block_tiles():
    polykernels = pytest.importorskip('polykernels', reason="polykernels.py needs Triton")
    chosen, wide = sass.tilings(polykernels, 8256)
    assert chosen == polykernels.norm_tiles(8256)
    assert (wide['BLOCK'], wide['TAIL']) == (polykernels.MAX_BLOCK, 64)  # 8256 = 2 x 4096 + 64
    assert sass.tilings(polykernels, 4096) == [polykernels.norm_tiles(4096)]  # one tile: nothing else to show


def test_table_marks_what_kernels_launch():
    row = dict(width=4096, BLOCK=4096, TAIL=0, ONE_TILE=True, kernel='forward', registers=54, spill_bytes=0,
               occupancy=0.5)
    rows = [{**row, 'num_warps': w, 'used': w == 16} for w in sass.WARPS]
    text = sass.markdown(rows, 3, '3.9.0', 'python sass.py')
    assert '| 4096 | one tile | forward | 54 / 0 B / 50 % | 54 / 0 B / 50 % | **54 / 0 B / 50 %** |' in text


def test_refuses_the_interpreter():
    pytest.importorskip('triton', reason="polykernels.py needs Triton")
    done = subprocess.run([sys.executable, 'sass.py'], cwd=ROOT, env={**os.environ, 'TRITON_INTERPRET': '1'},
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().endswith("run it without TRITON_INTERPRET")
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_order_says_what_to_fix(capsys):
    with pytest.raises(SystemExit):
        sass.main(['--order', '5'])
    assert "invalid choice: 5" in capsys.readouterr().err
