"""Configuration of the SelectivBench sequence models (one class for every token mixer)."""
from __future__ import annotations

import math
from numbers import Real

from transformers import PretrainedConfig

MIXERS = ("transformer", "s4d", "retnet", "mamba", "mamba2", "gla", "deltanet", "gated_deltanet",
          "gated_deltaproduct", "gru", "fox")
NORMS = ("layernorm", "rmsnorm")
LINEAR_INITS = ("normal", "torch")
IGNORE_INDEX = -100  # label of steps the loss and the metrics skip (padding), as in transformers


class SelectivBenchConfig(PretrainedConfig):
    r"""Configuration of `SelectivBenchModel` / `SelectivBenchForTokenClassification`.

    Args:
        mixer (`str`, *optional*, defaults to `"gla"`):
            Token mixer of every layer: one of `MIXERS`, or a plugin (`plugins.py`): a registered or
            installed plugin's name, `PATH.py:CLASS` or `MODULE:CLASS`, recorded as its name plus
            `mixer_plugin`.
        vocab_size (`int`, *optional*, defaults to 41):
            Number of symbols, the end marker '#' included. Token id `vocab_size` is a silent gap step,
            whose input vector is zero (SPEC §4).
        num_labels (`int`, *optional*, defaults to 1601):
            Number of hidden grammar states (classes); 1601 is k = d = 40. Without it, a saved config's
            `id2label` gives it.
        d_model (`int`, *optional*, defaults to 128):
            Width of the residual stream.
        n_layers (`int`, *optional*, defaults to 2):
            Number of blocks (mixer -> dropout -> residual -> norm).
        n_heads (`int`, *optional*, defaults to 4):
            Heads of the attention-like mixers (`d_model` must be divisible by it).
        d_state (`int`, *optional*, defaults to 16):
            State size per channel of the SSM mixers (s4d, mamba, mamba2).
        input_noise (`float`, *optional*, defaults to 0.0):
            Amplitude n of the uniform [0, n) noise added to every one-hot input entry when the caller
            passes no noise of its own, in training mode only: in eval mode the model adds no noise
            unless the caller passes `input_noise` (so evaluation is deterministic; the data collator
            draws the task's test noise reproducibly).
        expand (`int`, *optional*, defaults to 2):
            Inner width factor of mamba, mamba2 and gru.
        conv_size (`int`, *optional*, defaults to 4):
            Kernel of the short causal convolutions: mamba's and mamba2's on their inner stream, and
            (with `use_short_conv`) the ones on q, k and v of the fla-style mixers.
        use_short_conv (`bool`, *optional*, defaults to `True`):
            A short causal convolution of `conv_size` (depthwise, no bias, then silu) on each of q, k
            and v of deltanet, gated_deltanet, gated_deltaproduct, gla and retnet, as fla's layers with
            `use_short_conv=True` (the paper's). Its last `conv_size - 1` inputs are carried in the
            state. `False`: no conv; q, k, v get fla's activations of that branch (silu for the delta
            rules, none for gla and retnet).
        expand_v (`int`, *optional*, defaults to 2):
            Value width factor of deltanet, gated_deltanet, gated_deltaproduct, gla and retnet, as fla's
            `expand_v`: each head reads keys of d_head = d_model / n_heads and values of
            expand_v * d_head, so the state per head is d_head x (expand_v * d_head), the output norm
            and gate are expand_v * d_model wide, and o_proj maps that back to d_model. The paper's is
            2; 1 gives square blocks. (mamba2 instead has heads of d_model / n_heads channels and so
            expand * n_heads of them: mamba-ssm's `headdim` rule in the paper.)
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout after each mixer, in [0, 1).
        norm (`str`, *optional*, defaults to `"layernorm"`):
            Norm after each residual: `"layernorm"` or `"rmsnorm"`.
        chunk_size (`int`, *optional*, defaults to 16):
            Time chunk of the chunked (training) forms; mamba's selective scan (blocks of 32 steps) and
            the minGRU scan (sqrt(T) steps) are memory-bound and size their own.
        num_householder (`int`, *optional*, defaults to 2):
            Householder reflections per token of gated_deltaproduct (fla's default 2; the paper's runs,
            and `reproduce --scale paper`, use 4).
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the rotary embedding of transformer and retnet (the paper's transformer runs: 1000;
            its retnet keeps fla's 10000).
        time_step_min (`float`, *optional*, defaults to 0.001):
            Lower end of the initial step sizes dt, drawn log-uniformly per channel or head (mamba,
            mamba2, gated_deltanet, gated_deltaproduct, s4d), as in transformers' Mamba2Config: decays
            exp(dt A) start between fast and slow.
        time_step_max (`float`, *optional*, defaults to 0.1):
            Upper end of the initial step sizes dt (at least `time_step_min`).
        A_init_range (`tuple[float, float]`, *optional*, defaults to `(1.0, 16.0)`):
            (low, high) range of the initial decay rates -A per head, drawn uniformly (mamba2,
            gated_deltanet, gated_deltaproduct; stored as A_log = log(-A)).
        use_fast_kernels (`bool`, *optional*, defaults to `True`):
            On CUDA, use flash-linear-attention / mamba-ssm kernels when installed.
        initializer_range (`float`, *optional*):
            Std of the normal init of linear layers; `None`: 1/sqrt(fan_in).
        linear_init (`str`, *optional*, defaults to `"normal"`):
            `"normal"` (normal weights of std `initializer_range`, zero biases) or `"torch"` (PyTorch's
            own nn.Linear init: weights and biases uniform in +-1/sqrt(fan_in), std 3x smaller: the
            paper's, whose layers are built bare, so that no library init runs). The mixers' own
            parameters (decays, step sizes, conv kernels) are set the same either way.
        mixer_plugin (`dict`, *optional*):
            Where a plugin mixer came from (name, class, origin, sha256 of its source; set by resolving
            `mixer`); `None` for the built-ins.
    """

    model_type = "selectivbench"

    def __init__(self, mixer: str = "gla", vocab_size: int = 41, num_labels: int | None = None, d_model: int = 128,
                 n_layers: int = 2, n_heads: int = 4, d_state: int = 16, input_noise: float = 0.0,
                 expand: int = 2, conv_size: int = 4, use_short_conv: bool = True, expand_v: int = 2,
                 dropout: float = 0.0, norm: str = "layernorm",
                 chunk_size: int = 16, num_householder: int = 2, rope_theta: float = 10000.0,
                 time_step_min: float = 1e-3, time_step_max: float = 1e-1, A_init_range=(1.0, 16.0),
                 use_fast_kernels: bool = True, initializer_range: float | None = None, linear_init: str = "normal",
                 mixer_plugin: dict | None = None, **kwargs):
        if mixer not in MIXERS and mixer_plugin is None and isinstance(mixer, str):
            from .plugins import PluginError, resolve_mixer

            try:
                resolved = resolve_mixer(mixer)
            except PluginError as err:
                raise ValueError(f"mixer={mixer!r} is invalid: allowed one of {MIXERS}, a registered or installed "
                                 f"plugin name, PATH.py:CLASS or MODULE:CLASS ({err})") from None
            mixer, mixer_plugin = resolved.name, resolved.plugin
        self.mixer = mixer
        self.mixer_plugin = mixer_plugin
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_state = d_state
        self.input_noise = input_noise
        self.expand = expand
        self.conv_size = conv_size
        self.use_short_conv = use_short_conv
        self.expand_v = expand_v
        self.dropout = dropout
        self.norm = norm
        self.chunk_size = chunk_size
        self.num_householder = num_householder
        self.rope_theta = rope_theta
        self.time_step_min = time_step_min
        self.time_step_max = time_step_max
        # a saved config.json gives a list back
        self.A_init_range = tuple(A_init_range) if isinstance(A_init_range, (list, tuple)) else A_init_range
        self.use_fast_kernels = use_fast_kernels
        self.initializer_range = initializer_range
        self.linear_init = linear_init
        if num_labels is None:  # a saved config carries id2label instead
            num_labels = len(kwargs["id2label"]) if kwargs.get("id2label") else 1601
        super().__init__(num_labels=num_labels, **kwargs)
        self.validate_fields()

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """A saved config (config.json): its mixer is a built-in or the plugin its `mixer_plugin` records.
        A spec there (PATH.py:CLASS, MODULE:CLASS, a name) is never resolved: that would import code a
        checkpoint names."""
        mixer = config_dict.get("mixer", "gla")
        if mixer not in MIXERS and config_dict.get("mixer_plugin") is None:
            raise ValueError(f"mixer={mixer!r} is invalid: allowed in a saved config one of {MIXERS}, or a plugin "
                             "recorded in mixer_plugin (code a config names is never imported)")
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def for_task(cls, task, **kwargs) -> "SelectivBenchConfig":
        """The config of a model for a loaded task (anything with `.params` (vocab_size, noise) and
        `.grammar.states`): symbols, classes, state names and input noise come from the task."""
        states = list(task.grammar.states)
        return cls(vocab_size=task.params.vocab_size, num_labels=len(states), input_noise=task.params.noise,
                   id2label=dict(enumerate(states)), label2id={s: i for i, s in enumerate(states)}, **kwargs)

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def head_dim(self) -> int | None:
        """None until n_heads is a positive integer: transformers reads this before validate_fields
        runs, which then names the bad field."""
        ok = isinstance(self.n_heads, int) and not isinstance(self.n_heads, bool) and self.n_heads > 0
        return self.d_model // self.n_heads if ok and isinstance(self.d_model, int) else None

    def validate_fields(self) -> None:
        def bad(name, allowed):
            raise ValueError(f"{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_real(v):
            return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)

        def real_in(name, low, high, low_open=False, high_open=False):
            v = getattr(self, name)
            if not is_real(v) or v < low or v > high or (low_open and v == low) or (high_open and v == high):
                bad(name, f"a real number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")

        plugin = self.mixer_plugin
        if self.mixer not in MIXERS and not (isinstance(plugin, dict) and plugin.get("name") == self.mixer):
            bad("mixer", f"one of {MIXERS} or a plugin")
        if self.mixer in MIXERS and plugin is not None:
            bad("mixer_plugin", f"None for the built-in mixer {self.mixer!r}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_state", "expand", "conv_size",
                     "expand_v", "chunk_size", "num_householder"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "an integer >= 1")
        if not is_int(self.num_labels) or self.num_labels < 2:
            bad("num_labels", "an integer >= 2")
        if self.d_model % self.n_heads:
            bad("d_model", f"a multiple of n_heads={self.n_heads}")
        if self.mixer in ("transformer", "retnet") and self.head_dim % 2:
            bad("n_heads", f"a divisor of d_model={self.d_model} leaving an even head size (rotary embedding)")
        if self.mixer == "s4d" and self.d_state % 2:
            bad("d_state", "an even integer (s4d keeps d_state/2 complex modes)")
        real_in("input_noise", 0.0, 1.0)
        real_in("dropout", 0.0, 1.0, high_open=True)
        if self.norm not in NORMS:
            bad("norm", f"one of {NORMS}")
        real_in("rope_theta", 0.0, math.inf, low_open=True, high_open=True)
        real_in("time_step_min", 0.0, 1.0, low_open=True)
        real_in("time_step_max", self.time_step_min, math.inf, high_open=True)
        low_high = self.A_init_range
        if not (isinstance(low_high, tuple) and len(low_high) == 2 and all(is_real(v) for v in low_high)
                and 0 < low_high[0] <= low_high[1]):
            bad("A_init_range", "a pair (low, high) of real numbers with 0 < low <= high")
        if not isinstance(self.use_short_conv, bool):
            bad("use_short_conv", "True or False")
        if not isinstance(self.use_fast_kernels, bool):
            bad("use_fast_kernels", "True or False")
        if self.initializer_range is not None:
            real_in("initializer_range", 0.0, math.inf, low_open=True, high_open=True)
        if self.linear_init not in LINEAR_INITS:
            bad("linear_init", f"one of {LINEAR_INITS}")
