"""SelectivBench data: config -> grammar -> sampler -> (Bayes ceiling) -> datasets builder."""
from .ceiling import BayesFilter, bayes_ceiling
from .config import TASK_DESCRIPTIONS, TASKS, ParameterError, TaskParams, task_params
from .grammar import Grammar, make_grammar
from .sampler import SampleBatch, Sampler, StringLaw
from .builder import SelectivBench, SelectivBenchConfig

__all__ = ["BayesFilter", "bayes_ceiling", "TASK_DESCRIPTIONS", "TASKS", "ParameterError", "TaskParams",
           "task_params", "SelectivBench", "SelectivBenchConfig", "Grammar", "make_grammar", "SampleBatch", "Sampler", "StringLaw"]
