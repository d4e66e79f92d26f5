"""What the Triton kernels of every loss share: how a launch says which slots are real, and two device helpers.

Kept in one place so that the argument for the fast division (its error bound) is made once, and so that the
three launchers cannot disagree about the codes their kernels branch on.
"""

import triton
import triton.language as tl
from triton.language.extra import libdevice

# Passed to every launch (and to the compiles that count the kernels' instructions): fused multiply-adds, one
# rounding for a * b + c. The kernels' error bounds and instruction counts are argued and measured with them;
# Triton 3.9 warns at a launch that leaves the choice to its default, and 3.10 turns that default off.
COMPILE_OPTIONS = {"enable_fp_fusion": True}

# Which slots of a row hold real documents: every slot, those a (B, L) bool mask marks, or the first lengths[b]
REAL_ALL, REAL_MASK, REAL_LENGTHS = 0, 1, 2


def real_kind(mask, lengths) -> int:
    """The REAL_* code of a launch with this mask or these lengths (never both)."""
    return REAL_MASK if mask is not None else REAL_LENGTHS if lengths is not None else REAL_ALL


@triton.jit
def finite_or_zero(m):
    """A max to subtract: m, or 0 where m is -inf (nothing real to sum), so x - m is never -inf - -inf = NaN."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def fast_divide(x, y, FAST_MATH: tl.constexpr):
    """x / y. FAST_MATH (float32 on CUDA): `__fdividef` (`div.approx.ftz.f32`, x times the hardware reciprocal of
    y): at most 2 ulp error for |y| in [2^-126, 2^126] (PTX ISA), the bound of the `div.full.f32` that `/`
    compiles to, whose further instructions only rescale operands outside that range. Subnormal operands and
    results flush to 0. Each caller argues that its denominators lie in that range. The interpreter and float64
    take `/`."""
    if FAST_MATH:
        return libdevice.fast_dividef(x, y)
    else:
        return x / y
