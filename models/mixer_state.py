"""The mixer protocol and the state each mixer family carries from one piece of a stream to the next.

Every token mixer is a `Mixer`:

    forward(x (B, T, D), state=None) -> (y (B, T, D), state)    chunked / parallel form
    step(x_t (B, D), state)          -> (y_t (B, D), state)      one step: the readable recurrence,
                                                                  and the oracle the tests check forward against

`state=None` means "nothing seen yet". Both return the state after the last step, in the family's
type below, and each accepts the other's state: a stream may be fed in pieces of any length, and
the concatenated outputs equal one pass over the whole stream.

States are values for the recurrent families (a new object each call; the old one stays valid).
An `AttentionState` appends to a shared buffer when no gradient is recorded, so feed each
attention state once (a second continuation from the same state would overwrite the first's keys).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn


class Mixer(nn.Module, abc.ABC):
    """Base class of the token mixers (see the module docstring for the protocol), built-in or plugin
    (`plugins.py`): built as `cls(config)` (a `SelectivBenchConfig`: d_model, n_heads, d_state, ...).

    A mixer without `forward` cannot be built. `step` is optional for a plugin (every built-in has
    one): without it the model runs the parallel form only, and `recurrent=True` is an error.
    Parameters of its own (`nn.Parameter`) get their initial values in `init_own_weights(self, init)`,
    called with transformers' `initialization` module (transformers 5 re-initialises what a module
    sets in `__init__`). A state that grows with the stream (a KV cache) is an `AttentionState`, or
    the class sets `state_grows = True`; the carried state is one of this module's state types, or
    any object with a `tensors()` method listing what it holds.

    `no_weight_decay` names the parameters (relative to the mixer, e.g. "A_log" or "f_proj.bias")
    that weight decay must leave alone: those of the recurrence whose scale is their meaning (decay
    rates, step sizes), which decay would pull towards a different recurrence. Parameters of fewer
    than two dimensions (biases, norm weights) are never decayed anyway (the model's
    `no_weight_decay_names`).
    """

    state_grows = False
    no_weight_decay: tuple[str, ...] = ()

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, state=None):
        """The chunked / parallel form: (y, state after the last step)."""

    def step(self, x_t: torch.Tensor, state):
        """One step of the plain recurrence: (y_t, state)."""
        raise NotImplementedError(f"{type(self).__name__} has no step (a parallel form only)")

    step.missing = True


def has_step(mixer) -> bool:
    """Whether a mixer defines its one-step recurrence (plugins may have a parallel form only). Read
    from a mark, not by identity: a checkpoint's copy of this module has a Mixer class of its own."""
    return not getattr(type(mixer).step, "missing", False)


def declared_no_decay(mixer) -> tuple[str, ...]:
    """The mixer's `no_weight_decay`, checked: a name that is not one of its parameters is an error."""
    params = dict(mixer.named_parameters())
    declared = tuple(getattr(mixer, "no_weight_decay", ()))
    unknown = [n for n in declared if n not in params]
    if unknown:
        raise ValueError(f"{type(mixer).__name__}.no_weight_decay={declared!r} is invalid: {unknown[0]!r} is not one "
                         f"of its parameters; allowed names among {sorted(params)}")
    return declared


def state_tensors(state) -> list[torch.Tensor]:
    """The tensors a mixer state holds: its `tensors()`, or those of a tuple, list, dict or plain tensor."""
    if state is None:
        return []
    if torch.is_tensor(state):
        return [state]
    if hasattr(state, "tensors"):
        return list(state.tensors())
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        return [t for s in state for t in state_tensors(s)]
    return []


class AttentionState:
    """State of the attention family (transformer, fox): the keys and values of every step seen.

    Layout: `keys`, `values` (B, H, t, d_head) after t steps; fox adds `log_forget` (B, H, t, 1), the
    cumulative log forget gate c_s of every cached step (float32 at least). `seen` = t.
    Without autograd the tensors live in buffers that double when full, so a stream of T steps
    copies O(T) elements instead of O(T^2); with autograd each append is a fresh concatenation (an
    in-place write would clobber tensors saved for backward).
    """

    def __init__(self, *tensors: torch.Tensor):
        self.length = tensors[0].shape[2]
        # k and v are often views of one projection's output: kept as they are, the state would hold
        # the queries too. Copied without autograd (a stream's state); in training the copy would only cost
        self.buffers = [t if torch.is_grad_enabled() or t.untyped_storage().nbytes() <= t.nbytes
                        else t.clone(memory_format=torch.contiguous_format) for t in tensors]

    @property
    def seen(self) -> int:
        return self.length

    def tensors(self) -> list[torch.Tensor]:
        return [b[:, :, : self.length] for b in self.buffers]

    @property
    def keys(self) -> torch.Tensor:
        return self.tensors()[0]

    @property
    def values(self) -> torch.Tensor:
        return self.tensors()[1]

    @property
    def log_forget(self) -> Optional[torch.Tensor]:
        return self.tensors()[2] if len(self.buffers) > 2 else None

    def append(self, *tensors: torch.Tensor) -> "AttentionState":
        """A state holding the old steps then `tensors` (each (B, H, n, .), in the buffers' order)."""
        n = tensors[0].shape[2]
        if torch.is_grad_enabled() and any(t.requires_grad for t in (*tensors, *self.buffers)):
            grown = (torch.cat([old, new.to(old.dtype)], 2) for old, new in zip(self.tensors(), tensors))
            return AttentionState(*grown)
        buffers = self.buffers
        if self.length + n > buffers[0].shape[2]:
            cap = max(2 * buffers[0].shape[2], self.length + n)
            buffers = [torch.cat([b[:, :, : self.length], b.new_empty(*b.shape[:2], cap - self.length, *b.shape[3:])],
                                 2) for b in buffers]
        for b, t in zip(buffers, tensors):
            b[:, :, self.length:self.length + n] = t
        grown = AttentionState(*buffers)
        grown.length = self.length + n
        return grown


@dataclass
class RecurrentState:
    """A constant-size state: `memory`, the short convolutions' window `conv` (B, C, conv_size - 1)
    or None, and `seen`, the number of steps consumed. The two families below differ in the layout
    of `memory`, which each checks when built (`memory_dims`), so that a mixer handing on the wrong
    family's state fails where it is made, with the layout it should have."""

    memory: torch.Tensor
    conv: Optional[torch.Tensor] = None
    seen: int = 0

    memory_dims = ()  # the allowed numbers of dimensions of `memory`
    memory_layout = ""

    def __post_init__(self):
        name = type(self).__name__
        if not torch.is_tensor(self.memory) or self.memory.dim() not in self.memory_dims:
            got = f"shape {tuple(self.memory.shape)}" if torch.is_tensor(self.memory) else repr(self.memory)
            raise ValueError(f"{name} memory of {got} is invalid: allowed a tensor {self.memory_layout}")
        if self.conv is not None and (not torch.is_tensor(self.conv) or self.conv.dim() != 3):
            got = f"shape {tuple(self.conv.shape)}" if torch.is_tensor(self.conv) else repr(self.conv)
            raise ValueError(f"{name} conv of {got} is invalid: allowed None or a tensor "
                             "(batch, channels, conv_size - 1)")

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.memory, self.conv) if t is not None]


@dataclass
class MatrixState(RecurrentState):
    """State of the linear-attention family (retnet, gla, mamba2, deltanet, gated_deltanet,
    gated_deltaproduct): one K x V matrix memory per head, read as o_t = S_t^T q_t.

    Layout: `memory` (B, H, K, V), float32 at least (K: key size d_head, or d_state for mamba2;
    V: value size, expand_v * d_head, or d_head for mamba2); `conv` (B, C, conv_size - 1) the last
    inputs of the short convolutions: mamba2's on x, B, C, the others' on q, k, v concatenated over
    channels (None when `use_short_conv` is off; each mixer documents its C); `seen` the number of
    steps consumed (retnet's rotary positions continue from it).
    """

    memory_dims = (4,)
    memory_layout = "(batch, heads, key size, value size): one matrix per head"


@dataclass
class DiagonalState(RecurrentState):
    """State of the diagonal (element-wise) family (s4d, mamba, gru): one memory per channel, each
    channel decaying on its own (no matrix mixes them).

    Layout of `memory`: (B, channels) or (B, channels, n) for n state entries per channel: gru
    (B, d_inner) and mamba (B, d_inner, d_state), float32 at least; s4d (B, d_model, d_state / 2)
    complex, before the output map C. `conv` (B, d_inner, conv_size - 1) the last inputs of mamba's
    short convolution (None for the others); `seen` the steps consumed.
    """

    memory_dims = (2, 3)
    memory_layout = "(batch, channels) or (batch, channels, state per channel): one memory per channel"


class SelectivBenchCache:
    """The model's state: one mixer state per layer (None for a layer that has seen nothing), in the
    spirit of transformers' `Cache`. `seen` is the number of steps consumed; `nbytes()` the memory
    the carried tensors take (a KV cache counts what it holds, not its spare capacity)."""

    def __init__(self, layers: list):
        self.layers = list(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    @property
    def seen(self) -> int:
        return next((s.seen for s in self.layers if s is not None and hasattr(s, "seen")), 0)

    def batch_size(self) -> Optional[int]:
        return next((state_tensors(s)[0].shape[0] for s in self.layers if state_tensors(s)), None)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.layers for t in state_tensors(s))
