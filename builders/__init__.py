"""SelectivBench data: config -> grammar -> sampler -> (Bayes ceiling) -> datasets builder.

Names are imported on first use, so that `selectivbench --help` and the parameter checks do not
load numpy's heavier neighbours (datasets, pyarrow) before they are needed.
"""
from importlib import import_module

_WHERE = {
    "BayesFilter": "ceiling", "bayes_ceiling": "ceiling",
    "TASK_DESCRIPTIONS": "config", "TASKS": "config", "ParameterError": "config", "TaskParams": "config",
    "task_params": "config",
    "Grammar": "grammar", "make_grammar": "grammar_draw",
    "SampleBatch": "sampler", "Sampler": "sampler", "StringLaw": "sampler",
    "SelectivBench": "builder", "SelectivBenchBuilderConfig": "builder",
}
__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
