"""SelectivBench data: config -> grammar -> sampler -> (Bayes ceiling) -> datasets builder."""
from .ceiling import BayesFilter, bayes_ceiling
from .config import TASK_DESCRIPTIONS, TASKS, ParameterError, TaskParams, task_params
from .grammar import Grammar, make_grammar
from .sampler import SampleBatch, Sampler, StringLaw

__all__ = ["BayesFilter", "bayes_ceiling", "TASK_DESCRIPTIONS", "TASKS", "ParameterError", "TaskParams",
           "task_params", "Grammar", "make_grammar", "SampleBatch", "Sampler", "StringLaw"]
