"""The paper's sequence models as transformers models, registered with the Auto classes.

This package is shipped as the remote code of every saved checkpoint (`trust_remote_code=True`
loads it where selectivbench is not installed), so it must stay importable on its own: its files
import only each other (relative imports) and the libraries transformers itself needs, never
`selectivbench` or its builders. A plugin mixer (`plugins.py`: `register_mixer`, `resolve_mixer`)
travels as `mixer_plugin.py` beside the weights. `tests/test_models.py` loads a checkpoint with selectivbench
blocked to enforce it.
"""
from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

from .configuration_selectivbench import IGNORE_INDEX, MIXERS, SelectivBenchConfig
from .mixer_state import AttentionState, DiagonalState, MatrixState, Mixer, SelectivBenchCache, has_step
from .modeling_selectivbench import (MIXER_CLASSES, SelectivBenchForTokenClassification, SelectivBenchModel,
                                     SelectivBenchPreTrainedModel)
from .plugins import PluginError, ResolvedMixer, register_mixer, registered_plugins, resolve_mixer
from .taxonomy import taxonomy_markdown, taxonomy_rows

AutoConfig.register(SelectivBenchConfig.model_type, SelectivBenchConfig, exist_ok=True)
AutoModel.register(SelectivBenchConfig, SelectivBenchModel, exist_ok=True)
AutoModelForTokenClassification.register(SelectivBenchConfig, SelectivBenchForTokenClassification, exist_ok=True)
# saved checkpoints carry their code, so they open with trust_remote_code where selectivbench is absent
SelectivBenchConfig.register_for_auto_class()
SelectivBenchModel.register_for_auto_class("AutoModel")
SelectivBenchForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

__all__ = ["IGNORE_INDEX", "MIXERS", "MIXER_CLASSES", "SelectivBenchConfig", "SelectivBenchModel",
           "SelectivBenchForTokenClassification", "SelectivBenchPreTrainedModel", "SelectivBenchCache", "Mixer",
           "AttentionState", "MatrixState", "DiagonalState", "taxonomy_markdown", "taxonomy_rows", "has_step",
           "PluginError", "ResolvedMixer", "register_mixer", "registered_plugins", "resolve_mixer"]
