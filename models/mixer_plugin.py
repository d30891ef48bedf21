"""Placeholder: in a checkpoint of a plugin mixer, this file holds the plugin's own source.

`save_pretrained` writes the plugin module there (its `selectivbench.models` imports made relative),
and `modeling_selectivbench` reads the class from it when the checkpoint is loaded as remote code
(`trust_remote_code=True`). Here, in the installed package, it marks that no plugin was saved.
"""
PLACEHOLDER = True
