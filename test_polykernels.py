"""
Tests for polykernels.py: the fused PolyNorm / PolyReLU Triton kernels against a float64 reference written here from
the paper's formulas, forward and backward. On a CPU-only machine the kernels run in Triton's interpreter.
Run: python -m pytest -q test_polykernels.py
"""

import contextlib

import numpy
import pytest
import torch

# conftest.py sets TRITON_INTERPRET=1 on machines without a GPU, before polykernels.py is imported (Triton reads it
# when a kernel is defined): the kernels then run on CPU tensors in Triton's interpreter; with a GPU, on CUDA.
triton = pytest.importorskip("triton", reason="Triton is not installed; polykernels.py is optional and the model runs "
                                              "without it")
import polykernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not polykernels.INTERPRETED:
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1: the kernels cannot run here (conftest.py sets it "
                "when it is unset)", allow_module_level=True)

EPS = 1e-6


def version(text):
    return tuple(int(part) for part in text.split('.')[:2])


# Triton's interpreter up to 3.6 reads a runtime loop bound with int() of a 1-element array, which numpy 2.4 refuses
# (fixed by triton-lang/triton#9172): a CPU-only bug that tiled PolyNorm rows meet; compiled kernels are unaffected.
old_interpreter = pytest.mark.skipif(
    polykernels.INTERPRETED and version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 4),
    reason=f"triton {triton.__version__}'s interpreter breaks on numpy {numpy.__version__} in a runtime-bounded "
           "loop (triton-lang/triton#9172); install numpy<2.4 or a newer triton")

FUSED = {"norm": lambda x, w, b: polykernels.poly_norm_fused(x, w, b, EPS), "relu": polykernels.poly_relu_fused}


@pytest.fixture
def device():
    return DEVICE

# -----------------------------------------------------------------------------
# float64 reference and the comparison


def reference(op, x, weight, bias):
    """PolyNorm or PolyReLU in float64, straight from the formulas (autograd gives the reference gradients)."""
    base = x if op == "norm" else torch.relu(x)
    powers = [base ** i for i in range(1, len(weight) + 1)]
    if op == "norm":
        powers = [p * torch.rsqrt(p.pow(2).mean(-1, keepdim=True) + EPS) for p in powers]
    return sum(w * p for w, p in zip(weight, powers)) + bias


def random_params(order, device, dtype=torch.float32):
    weight = torch.randn(order, device=device).to(dtype).requires_grad_()
    bias = torch.randn(1, device=device).to(dtype).requires_grad_()
    return weight, bias


def fused_and_grads(op, x, weight, bias, dy):
    """Kernel output and (dx, dweight, dbias) for the upstream gradient dy."""
    x = x.detach().requires_grad_()  # detach keeps x's strides, so a non-contiguous x stays one
    y = FUSED[op](x, weight, bias)
    return y, torch.autograd.grad(y, (x, weight, bias), dy)


def assert_matches_reference(op, x, order, param_dtype=torch.float32):
    weight, bias = random_params(order, x.device, param_dtype)
    dy = torch.randn(x.shape, device=x.device).to(x.dtype)
    y, grads = fused_and_grads(op, x, weight, bias, dy)
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    y_ref = reference(op, *leaves)
    grads_ref = torch.autograd.grad(y_ref, leaves, dy.double())

    assert y.shape == x.shape and y.dtype == x.dtype
    for got, leaf in zip(grads, (x, weight, bias)):
        assert got.shape == leaf.shape and got.dtype == leaf.dtype
    # every result is float32 math rounded once to its tensor's dtype (dweight, dbias: float32 sums of products)
    for got, want in zip((y, *grads), (y_ref, *grads_ref)):
        close = dict(rtol=1e-4, atol=1e-4) if got.dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(got.double(), want, **close)

# -----------------------------------------------------------------------------
# correctness


@pytest.mark.parametrize("width", [96, 100, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("op", ["norm", "relu"])
def test_matches_float64_reference(device, op, order, dtype, width):
    torch.manual_seed(0)
    assert_matches_reference(op, torch.randn(4, width, device=device).to(dtype), order)


@pytest.mark.parametrize("width", [4097, 8256])
@pytest.mark.parametrize("op", [pytest.param("norm", marks=old_interpreter), "relu"])
def test_wide_rows_are_processed_in_tiles(device, op, width):
    # past MAX_BLOCK a PolyNorm row is swept in tiles; 4097 ends in a 1-wide tail, 8256 (the dense 1B) in a 64-wide one
    torch.manual_seed(0)
    assert_matches_reference(op, torch.randn(2, width, device=device).to(torch.bfloat16), order=3)


@old_interpreter
@pytest.mark.parametrize("width", [65, 100, 192])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("order", [2, 4])
def test_tiled_norm_with_small_tiles(device, monkeypatch, order, dtype, width):
    # rows over 64 swept in 32-wide tiles: full tiles only (192), or ending in a tail of 1 (65) or 4 (100) columns
    monkeypatch.setattr(polykernels, "MAX_BLOCK", 64)
    monkeypatch.setattr(polykernels, "WIDE_BLOCK", 32)
    assert not polykernels.norm_tiles(width)["ONE_TILE"]
    torch.manual_seed(0)
    assert_matches_reference("norm", torch.randn(3, width, device=device).to(dtype), order)


def test_tiles_leave_little_padding():
    for width in [*range(1, 3 * polykernels.MAX_BLOCK, 61), 3072, 6144, 8256, 16384, 65536]:
        t = polykernels.norm_tiles(width)
        assert t["ONE_TILE"] == (width <= polykernels.MAX_BLOCK)
        if t["ONE_TILE"]:
            assert width <= t["BLOCK"] < 2 * width  # the next power of two
        else:  # full tiles, then a tail that pads by less than it holds
            assert t["BLOCK"] == polykernels.WIDE_BLOCK
            rest = width % t["BLOCK"]
            assert (t["TAIL"] == 0) == (rest == 0) and rest <= t["TAIL"] < 2 * rest + (rest == 0)
    assert polykernels.norm_tiles(8256) == dict(BLOCK=2048, TAIL=64, ONE_TILE=False, num_warps=8)
    assert polykernels.norm_tiles(4096) == dict(BLOCK=4096, TAIL=0, ONE_TILE=True, num_warps=16)


def test_kernels_launch_on_the_tensors_device():
    # Triton launches on the current CUDA device; cuda:1's tensors must not be launched on cuda:0
    guard = polykernels.launch_device(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(polykernels.launch_device(torch.device("cpu")), contextlib.nullcontext)


@pytest.mark.parametrize("layout", ["transposed", "strided"])
@pytest.mark.parametrize("op", ["norm", "relu"])
def test_non_contiguous_input(device, op, layout):
    torch.manual_seed(0)
    x = torch.randn(100, 6, device=device).t() if layout == "transposed" else torch.randn(6, 200, device=device)[:, ::2]
    assert not x.is_contiguous()
    assert_matches_reference(op, x, order=3)


@pytest.mark.parametrize("op", ["norm", "relu"])
def test_bf16_parameters(device, op):
    # FSDP mixed precision hands the activation bfloat16 weight and bias; their gradients come back in bfloat16
    torch.manual_seed(0)
    assert_matches_reference(op, torch.randn(4, 96, device=device).to(torch.bfloat16), 3, torch.bfloat16)


@pytest.mark.parametrize("op", ["norm", "relu"])
def test_3d_input(device, op):
    torch.manual_seed(0)
    assert_matches_reference(op, torch.randn(2, 3, 96, device=device), order=3)


@pytest.mark.parametrize("op", ["norm", "relu"])
def test_empty_input(device, op):
    weight, bias = random_params(3, device)
    x = torch.randn(0, 64, device=device)
    y, (dx, dw, db) = fused_and_grads(op, x, weight, bias, torch.randn(0, 64, device=device))
    assert y.shape == (0, 64) and dx.shape == (0, 64)
    assert torch.equal(dw, torch.zeros(3, device=device)) and torch.equal(db, torch.zeros(1, device=device))


@pytest.mark.parametrize("op", ["norm", "relu"])
def test_gradients_are_deterministic(device, op):
    torch.manual_seed(0)
    x = torch.randn(64, 96, device=device)  # many programs, so many partial sums to combine
    weight, bias = random_params(4, device)
    dy = torch.randn_like(x)
    _, first = fused_and_grads(op, x, weight, bias, dy)
    _, second = fused_and_grads(op, x, weight, bias, dy)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("op", ["norm", "relu"])
def test_saves_only_x_and_row_statistics(device, op):
    order, rows, width = 4, 8, 96
    x = torch.randn(rows, width, device=device, requires_grad=True)
    weight, bias = random_params(order, device)
    saved = []

    def record(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(record, lambda t: t):
        FUSED[op](x, weight, bias)
    # x, the weight and (PolyNorm only) one float per row and power; never an (r, rows, width) stack of powers
    assert x.numel() <= sum(saved) <= x.numel() + order + rows * order

# -----------------------------------------------------------------------------
# integration with torch


@pytest.mark.parametrize("op", ["norm", "relu"])
def test_torch_compile_fullgraph_matches_eager(device, op):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 96, device=device)
    weight, bias = random_params(3, device)
    dy = torch.randn_like(x)
    torch._dynamo.reset()
    # fullgraph=True raises on any graph break; aot_eager also traces the backward through the fake kernels
    compiled = torch.compile(FUSED[op], fullgraph=True, backend="aot_eager")
    y_eager, grads_eager = fused_and_grads(op, x, weight, bias, dy)
    xc = x.clone().requires_grad_()
    y_compiled = compiled(xc, weight, bias)
    grads_compiled = torch.autograd.grad(y_compiled, (xc, weight, bias), dy)
    torch.testing.assert_close(y_compiled, y_eager, rtol=0, atol=0)
    for a, b in zip(grads_compiled, grads_eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_custom_ops_pass_opcheck(device):
    # checks the schemas, fake (meta) kernels and autograd registration against the real kernels
    x = torch.randn(3, 40, device=device, requires_grad=True)
    weight, bias = random_params(3, device)
    dy = torch.randn(3, 40, device=device)
    rstd = torch.ops.polycom.poly_norm_fwd(x, weight, bias, EPS)[1].detach()
    torch.library.opcheck(torch.ops.polycom.poly_norm_fwd.default, (x, weight, bias, EPS))
    torch.library.opcheck(torch.ops.polycom.poly_norm_bwd.default, (dy, x.detach(), weight.detach(), rstd))
    torch.library.opcheck(torch.ops.polycom.poly_relu_fwd.default, (x, weight, bias))
    torch.library.opcheck(torch.ops.polycom.poly_relu_bwd.default, (dy, x.detach(), weight.detach()))

# -----------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize("change, message", [
    (dict(x=torch.ones(2, 8, dtype=torch.int64)), "x must be a float32, bfloat16 or float16 tensor"),
    (dict(x=torch.tensor(1.0)), r"x must have shape \(\.\.\., H\)"),
    (dict(weight=torch.ones(5)), "order 2, 3 or 4"),
    (dict(weight=torch.ones(3, dtype=torch.int64)), "weight must be a float tensor"),
    (dict(bias=torch.ones(2)), r"bias must be a float tensor of shape \(1,\)"),
    (dict(eps=0.0), "eps must be a positive float"),
], ids=["int-x", "scalar-x", "order-5", "int-weight", "bias-shape", "zero-eps"])
def test_bad_inputs_raise_clear_errors(device, change, message):
    args = dict(x=torch.randn(2, 8), weight=torch.ones(3), bias=torch.zeros(1), eps=EPS)
    args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in {**args, **change}.items()}
    with pytest.raises((TypeError, ValueError), match=message):
        polykernels.poly_norm_fused(**args)
