"""The paper's sequence models as transformers models, registered with the Auto classes."""
from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

from .configuration_selectivbench import MIXERS, SelectivBenchConfig
from .modeling_selectivbench import (MIXER_CLASSES, SelectivBenchForTokenClassification, SelectivBenchModel,
                                     SelectivBenchPreTrainedModel)
from .taxonomy import taxonomy_markdown, taxonomy_rows

AutoConfig.register(SelectivBenchConfig.model_type, SelectivBenchConfig, exist_ok=True)
AutoModel.register(SelectivBenchConfig, SelectivBenchModel, exist_ok=True)
AutoModelForTokenClassification.register(SelectivBenchConfig, SelectivBenchForTokenClassification, exist_ok=True)
# saved checkpoints carry their code, so they open with trust_remote_code where selectivbench is absent
SelectivBenchConfig.register_for_auto_class()
SelectivBenchModel.register_for_auto_class("AutoModel")
SelectivBenchForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

__all__ = ["MIXERS", "MIXER_CLASSES", "SelectivBenchConfig", "SelectivBenchModel",
           "SelectivBenchForTokenClassification", "SelectivBenchPreTrainedModel", "taxonomy_markdown",
           "taxonomy_rows"]
