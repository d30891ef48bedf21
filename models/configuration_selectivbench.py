"""Configuration of the SelectivBench sequence models (one class for every token mixer)."""
from __future__ import annotations

from transformers import PretrainedConfig

MIXERS = ("transformer", "s4d", "retnet", "mamba", "mamba2", "gla", "deltanet", "gated_deltanet",
          "gated_deltaproduct", "gru", "fox")
NORMS = ("layernorm", "rmsnorm")


class SelectivBenchConfig(PretrainedConfig):
    """Configuration of `SelectivBenchModel` / `SelectivBenchForTokenClassification`.

    Args:
        mixer: token mixer of every layer, one of `MIXERS`.
        vocab_size: number of symbols, the end marker '#' included. Token id `vocab_size` is a
            silent gap step, whose input vector is zero (SPEC §4).
        num_labels: number of hidden grammar states (classes); default 1601 (k = d = 40).
        d_model: width of the residual stream.
        n_layers: number of blocks (mixer -> dropout -> residual -> norm).
        n_heads: heads of the attention-like mixers (d_model must be divisible by it).
        d_state: state size per channel of the SSM mixers (s4d, mamba, mamba2).
        input_noise: amplitude n of the uniform [0, n) noise added to every one-hot input entry
            when the caller passes no noise of its own.
        expand: inner width factor of mamba, mamba2 and gru.
        conv_size: kernel of the short causal convolution of mamba and mamba2.
        dropout: dropout after each mixer.
        norm: 'layernorm' or 'rmsnorm' after each residual.
        chunk_size: time chunk of the chunked (training) forms; mamba's selective scan (blocks of 64
            steps) and the minGRU scan (sqrt(T) steps) are memory-bound and size their own.
        num_householder: Householder reflections per token of gated_deltaproduct.
        rope_theta: base of the rotary embedding of transformer and retnet.
        use_fast_kernels: on CUDA, use flash-linear-attention / mamba-ssm kernels when installed.
        initializer_range: std of the normal init of linear layers; None: 1/sqrt(fan_in).
    """

    model_type = "selectivbench"

    def __init__(self, mixer: str = "gla", vocab_size: int = 41, num_labels: int | None = None, d_model: int = 128,
                 n_layers: int = 2, n_heads: int = 4, d_state: int = 16, input_noise: float = 0.0,
                 expand: int = 2, conv_size: int = 4, dropout: float = 0.0, norm: str = "layernorm",
                 chunk_size: int = 16, num_householder: int = 2, rope_theta: float = 10000.0,
                 use_fast_kernels: bool = True, initializer_range: float | None = None, **kwargs):
        self.mixer = mixer
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_state = d_state
        self.input_noise = input_noise
        self.expand = expand
        self.conv_size = conv_size
        self.dropout = dropout
        self.norm = norm
        self.chunk_size = chunk_size
        self.num_householder = num_householder
        self.rope_theta = rope_theta
        self.use_fast_kernels = use_fast_kernels
        self.initializer_range = initializer_range
        if num_labels is None:  # a saved config carries id2label instead
            num_labels = len(kwargs["id2label"]) if kwargs.get("id2label") else 1601
        super().__init__(num_labels=num_labels, **kwargs)
        self.validate_fields()

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
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate_fields(self) -> None:
        def bad(name, allowed):
            raise ValueError(f"{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        def positive_int(name, low=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                bad(name, f"an integer >= {low}")

        if self.mixer not in MIXERS:
            bad("mixer", f"one of {MIXERS}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_state", "expand", "conv_size",
                     "chunk_size", "num_householder"):
            positive_int(name)
        positive_int("num_labels", 2)
        if self.d_model % self.n_heads:
            bad("d_model", f"a multiple of n_heads={self.n_heads}")
        if self.mixer in ("transformer", "retnet") and self.head_dim % 2:
            bad("n_heads", f"a divisor of d_model={self.d_model} leaving an even head size (rotary embedding)")
        if self.mixer == "s4d" and self.d_state % 2:
            bad("d_state", "an even integer (s4d keeps d_state/2 complex modes)")
        if not (0.0 <= self.input_noise <= 1.0):
            bad("input_noise", "[0.0, 1.0]")
        if not (0.0 <= self.dropout < 1.0):
            bad("dropout", "[0.0, 1.0)")
        if self.norm not in NORMS:
            bad("norm", f"one of {NORMS}")
