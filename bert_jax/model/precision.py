"""Mixed-precision matmuls: bf16 operands, fp32 accumulation, forward *and* backward.

`x @ w` with bf16 inputs and `preferred_element_type=float32` accumulates in fp32 (as GPUs/TPUs do
natively) and, on CPUs with AVX512-BF16, runs on the fast bf16 kernels — about twice the speed of a
bf16 → bf16 dot there. JAX's own transpose of such a dot would mix an fp32 cotangent with a bf16
operand and fall back to slow fp32 matmuls, so the backward dots are written out in a custom_vjp.
Used only when the compute dtype is bfloat16; fp32 models take the plain path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """(..., I) @ (I, O) → (..., O) in x's dtype, accumulated in fp32."""
    return jnp.einsum("...i,io->...o", x, w, preferred_element_type=jnp.float32).astype(x.dtype)


def _matmul_fwd(x, w):
    return matmul(x, w), (x, w)


def _matmul_bwd(residuals, g):
    x, w = residuals
    g = g.astype(x.dtype)
    dx = jnp.einsum("...o,io->...i", g, w, preferred_element_type=jnp.float32).astype(x.dtype)
    dw = jnp.einsum("...i,...o->io", x, g, preferred_element_type=jnp.float32).astype(w.dtype)
    return dx, dw


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dot_general(
    x, w, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None
):
    """Drop-in `dot_general` for nnx.Linear: the fast mixed path for bf16 (..., I) x (I, O)."""
    (contract_x, contract_w), batch = dimension_numbers
    plain = (
        x.dtype != jnp.bfloat16
        or batch != ((), ())
        or tuple(contract_x) != (x.ndim - 1,)
        or tuple(contract_w) != (0,)
        or w.ndim != 2
        or out_sharding is not None
    )
    if plain:
        return jax.lax.dot_general(
            x,
            w,
            dimension_numbers,
            precision=precision,
            preferred_element_type=preferred_element_type,
            out_sharding=out_sharding,
        )
    return matmul(x, w.astype(x.dtype))
