"""
Fused Triton kernels for the PolyCom activations, PolyNorm and PolyReLU.

    PolyNorm(x) = sum_{i=1..r} w_i * norm(x**i) + b      norm(u) = u * rsqrt(mean(u**2, last dim) + eps)
    PolyReLU(x) = sum_{i=1..r} w_i * relu(x)**i + b

model.py holds the readable PyTorch definition; this file computes the same thing in one pass over memory.
The plain version keeps r powers of x (and r normalized copies) alive for backward, so a model has to recompute
it under activation checkpointing; these kernels save only x (plus r float32 numbers per row for PolyNorm) and
redo the cheap arithmetic in the backward, so memory stays at the level of a plain ReLU.

    y = poly_norm_fused(x, weight, bias, eps)   # x: (..., H), weight: (r,) with r in 2..4, bias: (1,)
    y = poly_relu_fused(x, weight, bias)        # both autograd-aware: gradients for x, weight and bias

Tensors may be float32, bfloat16 or float16 (float32 parameters, or bfloat16 ones under FSDP mixed precision);
all math runs in float32, y has x's dtype and each gradient its tensor's dtype. The forward and backward are
custom ops in the `polycom` namespace, so `torch.compile(model, fullgraph=True)` traces through them without a
graph break. Weight and bias gradients are summed without atomics (per-program partial sums, then a torch sum), so
they are deterministic. Inputs of any layout are accepted: a non-contiguous x is copied to a contiguous one first.
A PolyNorm row is one program: held in registers up to MAX_BLOCK columns, swept in tiles beyond (norm_tiles).

Importing this module raises ImportError when Triton is missing. The kernels need CUDA tensors, or CPU tensors
when TRITON_INTERPRET=1 is set before this module is imported (Triton reads it when a kernel is defined). That is
how test_polykernels.py checks them against a float64 reference on a CPU-only machine.
"""

import contextlib

import torch
import triton
import triton.language as tl

# PolyNorm rows up to MAX_BLOCK wide are held in registers as one tile; wider rows are swept twice in WIDE_BLOCK-wide
# tiles, narrower than MAX_BLOCK because the tiled backward holds more live values: on sm_90 it needs 76 registers
# a thread in 4096-wide tiles (one 16-warp program per SM) and 48 in 2048-wide ones (five 8-warp programs)
MAX_BLOCK = 4096
WIDE_BLOCK = 2048
RELU_BLOCK = 1024  # elements per program for PolyReLU, which needs no row statistics
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the kernels load; all math is float32

# -----------------------------------------------------------------------------
# Triton kernels


@triton.jit
def _powers(x, ORDER: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr):
    """x**i and its derivative i * x**(i-1) for i = 1..ORDER, as (R, BLOCK) tiles with row i-1 for power i."""
    row = tl.arange(0, R)[:, None]  # (R, 1); R is ORDER rounded up to a power of two, the extra rows stay 0
    p = tl.zeros((R, BLOCK), tl.float32)
    dp = tl.zeros((R, BLOCK), tl.float32)
    x_prev = tl.full((BLOCK,), 1.0, tl.float32)  # x**(i-1)
    for i in tl.static_range(1, ORDER + 1):
        dp = tl.where(row == i - 1, i * x_prev[None, :], dp)
        x_prev = x_prev * x
        p = tl.where(row == i - 1, x_prev[None, :], p)
    return p, dp


@triton.jit
def _load_tile(row_ptr, start, n_cols, BLOCK: tl.constexpr):
    """Elements start..start+BLOCK of a row (or of a flattened tensor) as float32, zero past its end."""
    cols = start + tl.arange(0, BLOCK)
    mask = cols < n_cols
    return tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32), cols, mask


# A PolyNorm row that fits one tile is read once and reduced in registers. A wider row is swept twice, first for
# its row sums, then to write the result (the second read mostly hits the cache), in BLOCK-wide tiles followed by
# one TAIL-wide tile for the remaining n_cols % BLOCK columns. Triton's tiles have power-of-two widths, so a row
# of 8256 (the dense 1B FFN) in 4096-wide tiles alone would end in a tile of 64 useful columns out of 4096; a
# 64-wide tail does that work with no idle lanes.
@triton.jit
def _norm_sums(x_row, start, n_cols, ORDER: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr):
    """Sum of p_i**2 over one tile, for each power i: (R,)."""
    x, _, _ = _load_tile(x_row, start, n_cols, BLOCK)
    p, _ = _powers(x, ORDER, R, BLOCK)
    return tl.sum(p * p, axis=1)


@triton.jit
def _norm_store(x_row, y_row, start, n_cols, scale, b, ORDER: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr):
    """y = sum_i scale_i * p_i + b over one tile, with scale = w * rstd (R,)."""
    x, cols, mask = _load_tile(x_row, start, n_cols, BLOCK)
    p, _ = _powers(x, ORDER, R, BLOCK)
    tl.store(y_row + cols, tl.sum(scale[:, None] * p, axis=0) + b, mask=mask)


@triton.jit
def _poly_norm_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, rstd_ptr, n_cols, eps, ORDER: tl.constexpr, R: tl.constexpr,
                          BLOCK: tl.constexpr, TAIL: tl.constexpr, ONE_TILE: tl.constexpr):
    # one program per row; int64 offsets because rows * n_cols can pass 2**31
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n_cols
    y_row = y_ptr + row * n_cols
    k = tl.arange(0, R)
    w = tl.load(w_ptr + k, mask=k < ORDER, other=0.0).to(tl.float32)  # (R,)
    b = tl.load(b_ptr).to(tl.float32)
    # a Python eps may arrive as float64 (e.g. under torch.compile); float64 math is several times slower
    eps = tl.cast(eps, tl.float32)
    if ONE_TILE:
        x, cols, mask = _load_tile(x_row, 0, n_cols, BLOCK)
        p, _ = _powers(x, ORDER, R, BLOCK)  # (R, BLOCK)
        rstd = tl.rsqrt(tl.sum(p * p, axis=1) / n_cols + eps)  # (R,)
        y = tl.sum((w * rstd)[:, None] * p, axis=0) + b  # (BLOCK,)
        tl.store(y_row + cols, y, mask=mask)
    else:
        n_body = n_cols - n_cols % BLOCK  # the columns the full tiles cover
        sum_sq = tl.zeros((R,), tl.float32)
        for start in range(0, n_body, BLOCK):
            sum_sq += _norm_sums(x_row, start, n_cols, ORDER, R, BLOCK)
        if TAIL > 0:
            sum_sq += _norm_sums(x_row, n_body, n_cols, ORDER, R, TAIL)
        rstd = tl.rsqrt(sum_sq / n_cols + eps)
        for start in range(0, n_body, BLOCK):
            _norm_store(x_row, y_row, start, n_cols, w * rstd, b, ORDER, R, BLOCK)
        if TAIL > 0:
            _norm_store(x_row, y_row, n_body, n_cols, w * rstd, b, ORDER, R, TAIL)
    tl.store(rstd_ptr + row * ORDER + k, rstd, mask=k < ORDER)


# Backward of PolyNorm, derived by hand. Per row, with p_i = x**i, s_i = rsqrt(mean(p_i**2) + eps) (the saved
# rstd), n_i = p_i * s_i and y = sum_i w_i n_i + b, an upstream gradient dy gives
#     dL/dw_i = sum(dy * n_i) = s_i * a_i      with a_i = sum_j dy_j * p_ij  (a row sum)
#     dL/db   = sum(dy)
# The RMS norm n = p * s has ds/dp_j = -s**3 p_j / H, so with g_i = w_i * dy
#     dL/dp_i = s_i * (g_i - n_i * mean(g_i * n_i)) = w_i s_i * (dy - p_i * s_i**2 * a_i / H)
# and the chain rule through p_i = x**i gives
#     dL/dx = sum_i dL/dp_i * i * x**(i-1)
# So one sweep finds the row sums a_i and sum(dy), and a second writes dx; a row that fits one tile does both
# from registers. dw and db go to this row's slot in a partial-sum buffer that torch sums afterwards.
@triton.jit
def _norm_grad_sums(x_row, dy_row, start, n_cols, ORDER: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr):
    """a_i = sum(dy * p_i) (R,) and sum(dy) over one tile."""
    x, _, _ = _load_tile(x_row, start, n_cols, BLOCK)
    dy, _, _ = _load_tile(dy_row, start, n_cols, BLOCK)
    p, _ = _powers(x, ORDER, R, BLOCK)
    return tl.sum(dy[None, :] * p, axis=1), tl.sum(dy)


@triton.jit
def _norm_grad_store(x_row, dy_row, dx_row, start, n_cols, scale, c, ORDER: tl.constexpr, R: tl.constexpr,
                     BLOCK: tl.constexpr):
    """dx = sum_i scale_i * (dy - p_i * c_i) * i x**(i-1) over one tile, with scale = w * rstd and c = rstd**2 a / H."""
    x, cols, mask = _load_tile(x_row, start, n_cols, BLOCK)
    dy, _, _ = _load_tile(dy_row, start, n_cols, BLOCK)
    p, dp = _powers(x, ORDER, R, BLOCK)
    tl.store(dx_row + cols, tl.sum(scale[:, None] * (dy[None, :] - p * c[:, None]) * dp, axis=0), mask=mask)


@triton.jit
def _poly_norm_bwd_kernel(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, partial_ptr, n_cols, ORDER: tl.constexpr,
                          R: tl.constexpr, BLOCK: tl.constexpr, TAIL: tl.constexpr, ONE_TILE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n_cols
    dy_row = dy_ptr + row * n_cols
    dx_row = dx_ptr + row * n_cols
    k = tl.arange(0, R)
    w = tl.load(w_ptr + k, mask=k < ORDER, other=0.0).to(tl.float32)  # (R,)
    rstd = tl.load(rstd_ptr + row * ORDER + k, mask=k < ORDER, other=0.0)  # (R,)
    if ONE_TILE:
        x, cols, mask = _load_tile(x_row, 0, n_cols, BLOCK)
        dy, cols, mask = _load_tile(dy_row, 0, n_cols, BLOCK)
        p, dp = _powers(x, ORDER, R, BLOCK)  # (R, BLOCK) each
        a = tl.sum(dy[None, :] * p, axis=1)  # (R,)
        dy_sum = tl.sum(dy)
        c = rstd * rstd * a / n_cols  # (R,)
        dx = tl.sum((w * rstd)[:, None] * (dy[None, :] - p * c[:, None]) * dp, axis=0)  # (BLOCK,)
        tl.store(dx_row + cols, dx, mask=mask)
    else:
        n_body = n_cols - n_cols % BLOCK
        a = tl.zeros((R,), tl.float32)
        dy_sum = 0.0
        for start in range(0, n_body, BLOCK):
            a_tile, dy_tile = _norm_grad_sums(x_row, dy_row, start, n_cols, ORDER, R, BLOCK)
            a += a_tile
            dy_sum += dy_tile
        if TAIL > 0:
            a_tile, dy_tile = _norm_grad_sums(x_row, dy_row, n_body, n_cols, ORDER, R, TAIL)
            a += a_tile
            dy_sum += dy_tile
        c = rstd * rstd * a / n_cols
        for start in range(0, n_body, BLOCK):
            _norm_grad_store(x_row, dy_row, dx_row, start, n_cols, w * rstd, c, ORDER, R, BLOCK)
        if TAIL > 0:
            _norm_grad_store(x_row, dy_row, dx_row, n_body, n_cols, w * rstd, c, ORDER, R, TAIL)
    partial_row = partial_ptr + row * (ORDER + 1)  # this row's [dw_1 .. dw_r, db]
    tl.store(partial_row + k, rstd * a, mask=k < ORDER)
    tl.store(partial_row + ORDER, dy_sum)


# PolyReLU is elementwise, so its kernels run over the flattened tensor. With r = relu(x):
#     dL/dw_i = sum(dy * r**i),  dL/db = sum(dy),  dL/dx = dy * [x > 0] * sum_i w_i * i * r**(i-1)
@triton.jit
def _poly_relu_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, n_elements,
                          ORDER: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    x, offs, mask = _load_tile(x_ptr, start, n_elements, BLOCK)
    k = tl.arange(0, R)
    w = tl.load(w_ptr + k, mask=k < ORDER, other=0.0).to(tl.float32)  # (R,)
    p, _ = _powers(tl.maximum(x, 0.0), ORDER, R, BLOCK)  # (R, BLOCK)
    y = tl.sum(w[:, None] * p, axis=0) + tl.load(b_ptr).to(tl.float32)
    tl.store(y_ptr + offs, y, mask=mask)


@triton.jit
def _poly_relu_bwd_kernel(dy_ptr, x_ptr, w_ptr, dx_ptr, partial_ptr, n_elements,
                          ORDER: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    x, offs, mask = _load_tile(x_ptr, pid * BLOCK, n_elements, BLOCK)
    dy, offs, mask = _load_tile(dy_ptr, pid * BLOCK, n_elements, BLOCK)
    k = tl.arange(0, R)
    w = tl.load(w_ptr + k, mask=k < ORDER, other=0.0).to(tl.float32)
    p, dp = _powers(tl.maximum(x, 0.0), ORDER, R, BLOCK)
    dx = tl.where(x > 0.0, dy * tl.sum(w[:, None] * dp, axis=0), 0.0)  # relu passes no gradient at x <= 0
    tl.store(dx_ptr + offs, dx, mask=mask)
    partial_row = partial_ptr + pid * (ORDER + 1)
    tl.store(partial_row + k, tl.sum(dy[None, :] * p, axis=1), mask=k < ORDER)
    tl.store(partial_row + ORDER, tl.sum(dy))


# True when the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1 was set before this import)
INTERPRETED = not isinstance(_poly_norm_fwd_kernel, triton.runtime.JITFunction)

# -----------------------------------------------------------------------------
# Launchers, registered as custom ops so torch.compile sees them as single opaque nodes


def _as_rows(x):
    """(..., H) -> (rows, H), contiguous: the kernels index rows as row * H."""
    return x.reshape(-1, x.shape[-1]).contiguous()


def norm_tiles(n_cols):
    """The PolyNorm kernels' launch settings for rows of n_cols columns: the tile width BLOCK, the width TAIL of the
    last tile of a row swept in tiles (0 when BLOCK divides the row), whether one tile holds the row, and the warps
    per row. The register table in docs/gpu.md (sass.py) is how these were chosen."""
    if n_cols <= MAX_BLOCK:
        block, tail = triton.next_power_of_2(n_cols), 0
    else:
        block, rest = WIDE_BLOCK, n_cols % WIDE_BLOCK
        tail = triton.next_power_of_2(rest) if rest else 0
    # 8 elements per thread, so that each thread loads 16 bytes of bf16 at a time
    return dict(BLOCK=block, TAIL=tail, ONE_TILE=n_cols <= MAX_BLOCK, num_warps=max(4, min(16, block // 256)))


def launch_device(device):
    """The context a kernel launches in: Triton launches on the current CUDA device, which need not be the one
    that holds the tensors (cuda:1 while cuda:0 is current), so make it theirs."""
    return torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()


def _split_partials(partial, order):
    """(programs, r+1) float32 partial sums -> weight grad (r,) and bias grad (1,), summed in a fixed order."""
    return partial[:, :order].sum(0), partial[:, order:].sum(0)


@torch.library.custom_op("polycom::poly_norm_fwd", mutates_args=())
def _poly_norm_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    order, n_cols = weight.shape[0], x.shape[-1]
    xr = _as_rows(x)  # (M, H)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rstd = torch.empty(*x.shape[:-1], order, dtype=torch.float32, device=x.device)  # (..., r)
    if xr.shape[0] > 0:
        with launch_device(x.device):
            _poly_norm_fwd_kernel[(xr.shape[0],)](
                xr, weight.contiguous(), bias, y, rstd, n_cols, eps,
                ORDER=order, R=triton.next_power_of_2(order), **norm_tiles(n_cols))
    return y, rstd


@_poly_norm_fwd.register_fake
def _(x, weight, bias, eps):
    rstd = x.new_empty(*x.shape[:-1], weight.shape[0], dtype=torch.float32)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), rstd


@torch.library.custom_op("polycom::poly_norm_bwd", mutates_args=())
def _poly_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                   rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    order, n_cols = weight.shape[0], x.shape[-1]
    xr, dyr = _as_rows(x), _as_rows(dy)  # (M, H); dy is often a broadcast view, hence the copy
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    partial = torch.empty(xr.shape[0], order + 1, dtype=torch.float32, device=x.device)  # (M, r+1)
    if xr.shape[0] > 0:
        with launch_device(x.device):
            _poly_norm_bwd_kernel[(xr.shape[0],)](
                dyr, xr, weight.contiguous(), rstd.contiguous(), dx, partial, n_cols,
                ORDER=order, R=triton.next_power_of_2(order), **norm_tiles(n_cols))
    dw, db = _split_partials(partial, order)
    return dx, dw, db


@_poly_norm_bwd.register_fake
def _(dy, x, weight, rstd):
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return dx, weight.new_empty(weight.shape, dtype=torch.float32), weight.new_empty(1, dtype=torch.float32)


def _poly_norm_setup(ctx, inputs, output):
    x, weight, bias, _ = inputs
    _, rstd = output
    ctx.save_for_backward(x, weight, rstd)  # x and (rows, r) statistics: no (r, ..., H) intermediates
    ctx.bias_dtype = bias.dtype


def _poly_norm_backward(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dw, db = _poly_norm_bwd(dy, x, weight, rstd)
    return dx, dw.to(weight.dtype), db.to(ctx.bias_dtype), None


_poly_norm_fwd.register_autograd(_poly_norm_backward, setup_context=_poly_norm_setup)


@torch.library.custom_op("polycom::poly_relu_fwd", mutates_args=())
def _poly_relu_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    order = weight.shape[0]
    xc = x.contiguous()
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() > 0:
        with launch_device(x.device):
            _poly_relu_fwd_kernel[(triton.cdiv(x.numel(), RELU_BLOCK),)](
                xc, weight.contiguous(), bias, y, x.numel(),
                ORDER=order, R=triton.next_power_of_2(order), BLOCK=RELU_BLOCK, num_warps=4)
    return y


@_poly_relu_fwd.register_fake
def _(x, weight, bias):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@torch.library.custom_op("polycom::poly_relu_bwd", mutates_args=())
def _poly_relu_bwd(dy: torch.Tensor, x: torch.Tensor,
                   weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    order = weight.shape[0]
    programs = triton.cdiv(x.numel(), RELU_BLOCK)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    partial = torch.empty(programs, order + 1, dtype=torch.float32, device=x.device)  # (programs, r+1)
    if programs > 0:
        with launch_device(x.device):
            _poly_relu_bwd_kernel[(programs,)](
                dy.contiguous(), x.contiguous(), weight.contiguous(), dx, partial, x.numel(),
                ORDER=order, R=triton.next_power_of_2(order), BLOCK=RELU_BLOCK, num_warps=4)
    dw, db = _split_partials(partial, order)
    return dx, dw, db


@_poly_relu_bwd.register_fake
def _(dy, x, weight):
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return dx, weight.new_empty(weight.shape, dtype=torch.float32), weight.new_empty(1, dtype=torch.float32)


def _poly_relu_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.bias_dtype = bias.dtype


def _poly_relu_backward(ctx, dy):
    x, weight = ctx.saved_tensors
    dx, dw, db = _poly_relu_bwd(dy, x, weight)
    return dx, dw.to(weight.dtype), db.to(ctx.bias_dtype)


_poly_relu_fwd.register_autograd(_poly_relu_backward, setup_context=_poly_relu_setup)

# -----------------------------------------------------------------------------
# Public API



def _check_inputs(name, x, weight, bias):
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name}: x must be a float32, bfloat16 or float16 tensor, got {got}; cast it, e.g. x.float()")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name}: x must have shape (..., H) with H >= 1, got {tuple(x.shape)}")
    if not isinstance(weight, torch.Tensor) or weight.dtype not in FLOAT_DTYPES or weight.dim() != 1 \
            or not 2 <= weight.shape[0] <= 4:
        got = f"{weight.dtype} {tuple(weight.shape)}" if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{name}: weight must be a float tensor of shape (order,) with order 2, 3 or 4, got {got}")
    if not isinstance(bias, torch.Tensor) or bias.dtype not in FLOAT_DTYPES or tuple(bias.shape) != (1,):
        got = f"{bias.dtype} {tuple(bias.shape)}" if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"{name}: bias must be a float tensor of shape (1,), got {got}")
    if weight.device != x.device or bias.device != x.device:
        raise ValueError(f"{name}: x, weight and bias must be on one device, got {x.device}, {weight.device} and "
                         f"{bias.device}; move them with .to(x.device)")
    if x.device.type == "cpu" and not INTERPRETED:
        raise ValueError(f"{name}: x is a CPU tensor; the Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set "
                         f"before polykernels.py is imported to run them (slowly) on the CPU")


def poly_norm_fused(x, weight, bias, eps=1e-6):
    """PolyNorm: sum_i weight[i-1] * norm(x**i) + bias over the last dim of x (..., H); returns x's shape and dtype."""
    _check_inputs("poly_norm_fused", x, weight, bias)
    if not eps > 0:
        raise ValueError(f"poly_norm_fused: eps must be a positive float, got {eps}")
    y, _ = _poly_norm_fwd(x, weight, bias, float(eps))
    return y


def poly_relu_fused(x, weight, bias):
    """PolyReLU: sum_i weight[i-1] * relu(x)**i + bias, elementwise; returns x's shape and dtype."""
    _check_inputs("poly_relu_fused", x, weight, bias)
    return _poly_relu_fwd(x, weight, bias)
