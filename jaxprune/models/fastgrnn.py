"""FastGRNN (Kusupati et al. 2018), the tiny gated RNN that Gupta et al. prune on HAR-2.

For inputs ``x`` of shape ``(batch, time, features)`` and ``h_0 = 0``, every step computes::

    pre_t = x_t W + h_{t-1} U
    z_t   = gate_nl(pre_t + bias_gate)                  # sigmoid by default
    c_t   = update_nl(pre_t + bias_update)              # tanh by default
    h_t   = z_t * h_{t-1} + (sigmoid(zeta) * (1 - z_t) + sigmoid(nu)) * c_t

and the logits are ``Dense(num_classes)(h_T)``. This is the cell of the EdgeML library
(``edgeml_pytorch.graph.rnn.FastGRNNCell``) with its initialisation: ``W``, ``U`` (and low-rank
factors) ``0.1 * N(0, 1)``, both biases ones, ``zeta = 1.0`` and ``nu = -4.0`` *before* the
sigmoid. The classifier is a plain Flax ``Dense`` (LeCun-normal kernel, zero bias); EdgeML's
trainer draws its classifier from ``N(0, 1)``.

Low rank (``w_rank`` / ``u_rank``, EdgeML's ``wRank`` / ``uRank``): ``W = W1 @ W2`` with ``W1``
``(features, w_rank)`` and ``W2`` ``(w_rank, hidden)``, ``U = U1 @ U2`` likewise; the product is
never formed (``x W1`` then ``W2``), so each factor is its own prunable leaf.

Parameters (``params``; ``H`` hidden units, ``D`` features, ``C`` classes)::

    W/kernel (D, H)  or  W1/kernel (D, w_rank), W2/kernel (w_rank, H)
    U/kernel (H, H)  or  U1/kernel (H, u_rank), U2/kernel (u_rank, H)
    bias_gate (H,), bias_update (H,), zeta (1,), nu (1,)
    Dense_0/kernel (H, C), Dense_0/bias (C,)

so the default prunable rule (leaves named ``kernel`` with ``ndim >= 2``) takes exactly the
recurrent matrices (or their factors) and the classifier kernel; biases, ``zeta`` and ``nu`` are
never pruned. ``D * H + H * H + 2 H + 2 + H * C + C`` parameters at full rank (HAR-2, ``H = 80``,
``D = 9``, ``C = 2``: 7,444, the ~29 KB FastGRNN-LSQ of the paper's Table 3).

``x_t W`` is computed for all steps at once before the recurrence; the recurrence is a
``jax.lax.scan`` over time whose body uses ``U`` (or ``U1``, ``U2``) as a closed-over constant,
so ``jp.effective_mask`` (scan rule) and ``jp.flops_report`` (a scan constant counts once per
step) work on the model as it is. MACs per example:
``T * (D * H + H * H) + H * C`` at full rank.

Defaults follow the paper's HAR-2 setting: 80 hidden units (its Table 11, which also gives the
compressed model's ranks ``w_rank=5``, ``u_rank=40``), gate ``sigmoid``, update ``tanh``.
``width`` scales ``hidden_size`` (the zoo's width multiplier). There is no structured-pruning
topology for this model (``models.channels`` refuses it).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models import layers

HIDDEN_SIZE = 80  # FastGRNN on HAR-2 (Kusupati et al. 2018, Table 11)
WEIGHT_STD = 0.1  # EdgeML: 0.1 * randn for W, U and their low-rank factors


def _quant_tanh(x: jax.Array) -> jax.Array:
    return jnp.clip(x, -1.0, 1.0)


def _quant_sigmoid(x: jax.Array) -> jax.Array:
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


# The nonlinearities EdgeML's FastGRNNCell offers (quantTanh / quantSigm: piecewise linear).
NONLINEARITIES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "quant_tanh": _quant_tanh,
    "quant_sigmoid": _quant_sigmoid,
}


def _nonlinearity(field: str, name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in NONLINEARITIES:
        raise ValueError(f"{field} must be one of {sorted(NONLINEARITIES)}, got {name!r}")
    return NONLINEARITIES[name]


def _check_rank(field: str, rank: int | None) -> None:
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"{field} must be None (full rank) or a positive int, got {rank!r}")


class _Kernel(nn.Module):
    """A bare ``kernel`` parameter (its scope names the matrix: ``W``, ``U1``, ...)."""

    shape: tuple[int, int]

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("kernel", nn.initializers.normal(WEIGHT_STD), self.shape, jnp.float32)


class FastGRNN(nn.Module):
    """FastGRNN classifier over sequences ``(batch, time, features)``.

    Attributes:
      num_classes: output logits.
      hidden_size: hidden units ``H`` at ``width`` 1 (80: the paper's HAR-2 model).
      width: multiplier for ``hidden_size`` (the zoo's width field).
      widths: ``(hidden units,)`` after structured pruning (overrides ``hidden_size * width``).
      w_rank: rank of ``W`` (``W = W1 @ W2``); None for a full-rank ``W``.
      u_rank: rank of ``U`` (``U = U1 @ U2``); None for a full-rank ``U``.
      gate_nonlinearity: ``z_t``'s nonlinearity, a key of ``NONLINEARITIES``.
      update_nonlinearity: ``c_t``'s nonlinearity, a key of ``NONLINEARITIES``.
      zeta_init: initial ``zeta`` before the sigmoid.
      nu_init: initial ``nu`` before the sigmoid.
      dtype: computation dtype (parameters stay float32).
    """

    num_classes: int = 2
    hidden_size: int = HIDDEN_SIZE
    width: float = 1.0
    widths: tuple[int, ...] | None = None
    w_rank: int | None = None
    u_rank: int | None = None
    gate_nonlinearity: str = "sigmoid"
    update_nonlinearity: str = "tanh"
    zeta_init: float = 1.0
    nu_init: float = -4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Returns logits ``(batch, num_classes)`` from the last hidden state.

        Args:
          x: ``(batch, time, features)`` inputs.
          train: ignored (no dropout or norm); accepted like the other zoo models.

        Raises:
          ValueError: for an input that is not 3-D, or a bad rank or nonlinearity name.
        """
        del train  # No train-dependent layers.
        if x.ndim != 3:
            raise ValueError(
                f"FastGRNN takes inputs (batch, time, features), got shape {tuple(x.shape)}"
            )
        _check_rank("w_rank", self.w_rank)
        _check_rank("u_rank", self.u_rank)
        gate = _nonlinearity("gate_nonlinearity", self.gate_nonlinearity)
        update = _nonlinearity("update_nonlinearity", self.update_nonlinearity)
        hidden = layers.scaled(self.hidden_size, self.width)
        if self.widths is not None:
            (hidden,) = self.widths
        features = x.shape[-1]
        x = x.astype(self.dtype)

        def matrix(name: str, shape: tuple[int, int]) -> jax.Array:
            return _Kernel(shape, name=name)().astype(self.dtype)

        if self.w_rank is None:
            wx = x @ matrix("W", (features, hidden))
        else:
            wx = (x @ matrix("W1", (features, self.w_rank))) @ matrix("W2", (self.w_rank, hidden))
        if self.u_rank is None:
            u = matrix("U", (hidden, hidden))
            u_factors = (u,)
        else:
            u_factors = (
                matrix("U1", (hidden, self.u_rank)),
                matrix("U2", (self.u_rank, hidden)),
            )
        ones = nn.initializers.ones
        bias_gate = self.param("bias_gate", ones, (hidden,), jnp.float32).astype(self.dtype)
        bias_update = self.param("bias_update", ones, (hidden,), jnp.float32).astype(self.dtype)
        zeta = self.param("zeta", nn.initializers.constant(self.zeta_init), (1,), jnp.float32)
        nu = self.param("nu", nn.initializers.constant(self.nu_init), (1,), jnp.float32)
        zeta = jax.nn.sigmoid(zeta).astype(self.dtype)
        nu = jax.nn.sigmoid(nu).astype(self.dtype)

        def step(h: jax.Array, wx_t: jax.Array) -> tuple[jax.Array, None]:
            uh = h
            for factor in u_factors:
                uh = uh @ factor
            pre = wx_t + uh
            z = gate(pre + bias_gate)
            c = update(pre + bias_update)
            return z * h + (zeta * (1.0 - z) + nu) * c, None

        h0 = jnp.zeros((x.shape[0], hidden), self.dtype)
        h_last, _ = jax.lax.scan(step, h0, jnp.swapaxes(wx, 0, 1))  # scan over time
        return nn.Dense(self.num_classes, dtype=self.dtype)(h_last)
