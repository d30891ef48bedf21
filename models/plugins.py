"""Mixer plugins: a token mixer of your own, used wherever a built-in name is.

A plugin is a `Mixer` subclass (`mixer_state.py`) written against the public API of
`selectivbench.models` (`Mixer`, `DiagonalState`, `MatrixState`, `AttentionState`), built as
`cls(config)`, with an optional module-level `TAXONOMY` dict (the built-ins' keys). `resolve_mixer`
is the one place that turns a `--mixer` value into a class:

    NAME                 a built-in (gla, mamba2, ...), a name given to `register_mixer(NAME, cls)`, or one
                         an installed package declares under the entry-point group `selectivbench.mixers`
    PATH.py:CLASS        a file anywhere on disk
    MODULE:CLASS         an importable module

A file or module plugin is named by its class attribute `mixer_name`, else by its class name in
lower case without a trailing "mixer" (`LRUMixer` -> `lru`). The config records a plugin
(`mixer_plugin`: name, class, origin, sha256 of its module's source), and `save_pretrained` writes
that source beside the weights as `mixer_plugin.py` (its `selectivbench.models` imports made
relative), so the checkpoint opens with `trust_remote_code=True` where neither selectivbench nor
the plugin exists. selectivbench never imports code that a checkpoint names (its record is data a
user was handed, and may name any file or module): a plugin checkpoint loads only when its plugin is
already known in this process, registered or resolved from a spec the user gave (`--mixer`), or an
installed entry point, with the very source the record's sha256 names (`plugin_class`).

This file travels with every checkpoint (`modeling_selectivbench` imports it): standard library
and relative imports only.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .configuration_selectivbench import MIXERS

ENTRY_POINT_GROUP = "selectivbench.mixers"
SAVED_FILE = "mixer_plugin.py"  # the plugin's source in a checkpoint
ALLOWED_IMPORTS = ("torch", "transformers", "numpy")
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class PluginError(ValueError):
    """A mixer that cannot be used: the message names it and why (one line)."""


@dataclass(frozen=True)
class ResolvedMixer:
    """A `--mixer` value resolved: its name, its class, and (plugins only) the record the config keeps."""

    name: str
    cls: type
    plugin: Optional[dict] = None


_REGISTRY: dict[str, ResolvedMixer] = {}  # plugins resolved or registered in this process, by name


def _builtin_classes() -> dict:
    from .modeling_selectivbench import MIXER_CLASSES

    return MIXER_CLASSES


def _check_class(cls, where: str) -> None:
    from .mixer_state import Mixer

    if not (isinstance(cls, type) and issubclass(cls, Mixer)):
        raise PluginError(f"{where} is not a Mixer subclass (got {cls!r}): subclass selectivbench.models.Mixer")
    if inspect.isabstract(cls):
        raise PluginError(f"{where} cannot be built: it does not define forward (abstract {cls.__name__})")
    declared = cls.no_weight_decay  # the parameters weight decay leaves alone (Mixer's docstring)
    if not (isinstance(declared, (tuple, list)) and all(isinstance(name, str) for name in declared)):
        raise PluginError(f"{where}: no_weight_decay={declared!r} is invalid: allowed a tuple of its parameter names")


def _check_name(name) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginError(f"name={name!r} is invalid: allowed a Python identifier (letters, digits, _)")
    if name in MIXERS:
        raise PluginError(f"name={name!r} clashes with a built-in mixer: allowed a name not in {MIXERS}")


def default_name(cls) -> str:
    """`mixer_name` if the class sets one, else its name in lower case without a trailing 'mixer'."""
    name = getattr(cls, "mixer_name", None)
    if name is None:
        name = cls.__name__.lower()
        name = name[: -len("mixer")] if name.endswith("mixer") and len(name) > 5 else name
    return name


def module_source(cls) -> str:
    """The source of the module that defines `cls` (what a checkpoint carries)."""
    module = sys.modules.get(cls.__module__)
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        raise PluginError(f"mixer class {cls.__qualname__} has no readable source file (defined in "
                          f"{cls.__module__}): allowed a class defined in a .py file") from None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record(name: str, cls, origin: str) -> dict:
    return {"name": name, "class": cls.__qualname__, "origin": origin, "sha256": _sha256(module_source(cls)),
            "file": SAVED_FILE}


def register_mixer(name: str, cls) -> ResolvedMixer:
    """Make `cls` usable as `--mixer NAME` (and `SelectivBenchConfig(mixer=NAME)`) in this process."""
    _check_name(name)
    _check_class(cls, f"register_mixer({name!r}, ...)")
    resolved = ResolvedMixer(name, cls, _record(name, cls, f"registered:{name}"))
    _REGISTRY[name] = resolved
    return resolved


def _load_file(path: Path):
    """Import a .py file as a module of its own (named after its path, so two files never collide)."""
    module_name = f"selectivbench_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and inspect look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _entry_points() -> dict:
    """The installed entry points of the group. Metadata found in the current folder is not installed:
    `python -m` puts the current folder on sys.path, and a folder a user was handed (a checkpoint) could
    ship a *.dist-info naming its own code."""
    from importlib.metadata import entry_points

    here = Path.cwd().resolve()
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)
            if ep.dist is None or Path(ep.dist.locate_file("")).resolve() != here}


def _import_failure(where: str, err: BaseException) -> PluginError:
    return PluginError(f"cannot import {where}: {type(err).__name__}: {' '.join(str(err).split())}")


def _existing_file(where: str) -> Path:
    """A plugin spec's PATH.py, absolute; PluginError when there is no such file."""
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise PluginError(f"no file {path}")
    return path


def resolve_mixer(spec: str) -> ResolvedMixer:
    """The one resolution of a `--mixer` value (see the module docstring); PluginError names what is wrong."""
    if not isinstance(spec, str) or not spec:
        raise PluginError("not a string naming a mixer")
    if spec in MIXERS:
        return ResolvedMixer(spec, _builtin_classes()[spec])
    if ":" not in spec:
        if spec in _REGISTRY:
            return _REGISTRY[spec]
        _check_name(spec)
        points = _entry_points()
        if spec not in points:
            raise PluginError(f"no mixer of that name (plugins known here: "
                              f"{', '.join(sorted({*_REGISTRY, *points})) or 'none'})")
        try:
            cls = points[spec].load()
        except Exception as err:
            raise _import_failure(f"the entry point {spec}={points[spec].value}", err) from None
        _check_class(cls, f"entry point {spec}={points[spec].value}")
        resolved = ResolvedMixer(spec, cls, _record(spec, cls, f"entry-point:{spec}"))
        _REGISTRY[spec] = resolved
        return resolved
    where, _, class_name = spec.rpartition(":")
    if not where or not NAME_PATTERN.match(class_name):
        raise PluginError("CLASS after the last ':' is not a class name")
    if where.endswith(".py"):
        path = _existing_file(where)
        try:
            module = _load_file(path)
        except Exception as err:
            raise _import_failure(str(path), err) from None
        origin = f"file:{path}:{class_name}"
    else:
        try:
            module = importlib.import_module(where)
        except Exception as err:
            raise _import_failure(f"module {where}", err) from None
        origin = f"module:{where}:{class_name}"
    if not hasattr(module, class_name):
        raise PluginError(f"{where} defines no {class_name}")
    cls = getattr(module, class_name)
    _check_class(cls, spec)
    name = default_name(cls)
    _check_name(name)
    resolved = ResolvedMixer(name, cls, _record(name, cls, origin))
    _REGISTRY[name] = resolved
    return resolved


def absolute_spec(spec: str) -> str:
    """A PATH.py:CLASS value with its path made absolute (runs record it and may run elsewhere)."""
    where, _, class_name = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if where.endswith(".py"):
        return f"{Path(where).expanduser().resolve()}:{class_name}"
    return spec


def file_sha256(path) -> str:
    """The sha256 that a plugin file's record would hold, read without importing it: its text as
    `inspect.getsource` gives it (the encoding its cookie names, universal newlines, a final newline)."""
    with tokenize.open(path) as f:
        text = f.read()
    return _sha256(text if not text or text.endswith("\n") else text + "\n")


def _short(sha) -> str:
    return f"{sha[:12]}..." if isinstance(sha, str) else repr(sha)


def plugin_class(record: dict):
    """The class a config's `mixer_plugin` record names, if this process already knows it with the
    recorded source (sha256): registered (`register_mixer`) or resolved from a spec the user gave
    (`--mixer`, `SelectivBenchConfig(mixer=SPEC)`), else an installed entry point of that name. The
    record's origin is never imported: a checkpoint is data, and its config may name any file or
    module (one beside the weights, or one the current folder shadows)."""
    name, origin, sha = record.get("name"), record.get("origin"), record.get("sha256")
    known = _REGISTRY.get(name) if isinstance(name, str) else None
    if known is not None and known.plugin["sha256"] == sha:
        return known.cls
    if known is not None:
        reason = f"the plugin {name!r} known here has another source (sha256 {_short(known.plugin['sha256'])})"
    elif isinstance(name, str) and NAME_PATTERN.match(name) and name not in MIXERS and name in _entry_points():
        try:
            resolved = resolve_mixer(name)
        except PluginError as err:
            reason = f"its installed entry point does not load ({err})"
        else:
            if resolved.plugin["sha256"] == sha:
                return resolved.cls
            reason = (f"the installed entry point {name!r} has another source (sha256 "
                      f"{_short(resolved.plugin['sha256'])})")
    else:
        reason = "code a checkpoint names is never imported on its say-so"
    raise PluginError(f"mixer plugin {name!r} (from {origin}, sha256 {_short(sha)}) is not known in this process: "
                      f"{reason}. Pass --mixer PATH.py:CLASS or MODULE:CLASS naming its source, register it "
                      f"(selectivbench.models.register_mixer) or install it (entry point group {ENTRY_POINT_GROUP}); "
                      f"or load the checkpoint's own copy ({SAVED_FILE}) with trust_remote_code=True")


def saved_plugin(folder) -> Optional[dict]:
    """The `mixer_plugin` record of a checkpoint's config.json, read as JSON (None: no plugin, or no
    readable config, which loading it reports)."""
    try:
        record = json.loads((Path(folder) / "config.json").read_text()).get("mixer_plugin")
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) else None


def resolve_for_checkpoints(spec: str, records: list[dict]) -> ResolvedMixer:
    """A user's `--mixer` spec for loading checkpoints whose configs hold `records`: resolved and
    registered here only when its source is the one a record names (same plugin name, same sha256).
    A file's text is hashed before it is imported, so a file of another source never runs."""
    records = [r for r in records if isinstance(r, dict)]
    if not records:
        raise PluginError("no checkpoint given records a mixer plugin (built-in mixers need no --mixer)")
    recorded = ", ".join(f"{r.get('name')!r} sha256 {_short(r.get('sha256'))}" for r in records)
    if spec in MIXERS:
        raise PluginError(f"{spec!r} is a built-in mixer: allowed the source of a checkpoint's plugin ({recorded})")
    where = spec.rpartition(":")[0] if isinstance(spec, str) else ""
    if where.endswith(".py"):
        path = _existing_file(where)
        try:
            sha = file_sha256(path)
        except (OSError, SyntaxError, UnicodeDecodeError) as err:
            raise PluginError(f"cannot read {path}: {type(err).__name__}: {err}") from None
        if sha not in {r.get("sha256") for r in records}:
            raise PluginError(f"its source (sha256 {_short(sha)}) is not the one the checkpoint recorded "
                              f"({recorded}); not imported")
    resolved = resolve_mixer(spec)
    if not any(r.get("name") == resolved.name and r.get("sha256") == resolved.plugin["sha256"] for r in records):
        raise PluginError(f"it is plugin {resolved.name!r} with source sha256 {_short(resolved.plugin['sha256'])}, "
                          f"not the one the checkpoint recorded ({recorded})")
    return resolved


def plugin_available(record: dict) -> bool:
    try:
        plugin_class(record)
    except PluginError:
        return False
    return True


def trust_saved_plugin(folder, record: dict) -> type:
    """Import a checkpoint's own copy of its plugin (`mixer_plugin.py`) through transformers' remote-code
    loader, and register it here under its name: only when a caller passed trust_remote_code=True."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    cls = get_class_from_dynamic_module(f"{record['file'][: -len('.py')]}.{record['class']}", str(folder))
    _REGISTRY[record["name"]] = ResolvedMixer(record["name"], cls, dict(record))
    return cls


def _shipped_module(module_name: str) -> bool:
    """A module of this package that checkpoints carry (what modeling_selectivbench imports)."""
    here = Path(__file__).parent
    return (here / f"{module_name}.py").is_file() and module_name not in ("taxonomy", "__init__")


def _rewritten_import(node: ast.ImportFrom, package_exports) -> list[str]:
    """`from selectivbench.models[.x] import a, b` as relative imports of the files a checkpoint carries
    ([] when a name lives in a file that does not travel)."""
    by_module = {}
    for alias in node.names:
        if node.module == "selectivbench.models":
            home = getattr(getattr(package_exports, alias.name, None), "__module__", "") or ""
            module = home.rpartition(".")[2] if home.startswith(package_exports.__name__ + ".") else None
        else:
            module = node.module.split(".")[2]
        if module is None or not _shipped_module(module) or alias.name == "*":
            return []
        by_module.setdefault(module, []).append(alias.name + (f" as {alias.asname}" if alias.asname else ""))
    return [f"from .{module} import {', '.join(names)}" for module, names in by_module.items()]


def travelling_source(cls) -> str:
    """The plugin module's source as a checkpoint carries it: `selectivbench.models` imports made
    relative. Refuses (PluginError naming the import and its line) any import that cannot travel."""
    from . import mixer_state

    package = importlib.import_module(mixer_state.__name__.rpartition(".")[0])
    source = module_source(cls)
    if "<locals>" in cls.__qualname__:
        raise PluginError(f"mixer class {cls.__qualname__} cannot travel with a checkpoint: allowed a class defined "
                          "at module level")
    lines = source.splitlines()
    allowed = "torch, transformers, numpy, the standard library and selectivbench.models"
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    saved_copy = cls.__module__.endswith("." + SAVED_FILE[: -len(".py")])  # a checkpoint's copy, saved again
    edits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if saved_copy and node.level == 1 and _shipped_module(node.module or ""):
                    continue
                names = ["." * node.level + (node.module or "")]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in ALLOWED_IMPORTS or top in stdlib:
                continue
            if isinstance(node, ast.ImportFrom) and not node.level and (
                    name == "selectivbench.models" or name.startswith("selectivbench.models.")):
                new = _rewritten_import(node, package)
                if new:
                    edits.append((node, new))
                    continue
            raise PluginError(f"mixer plugin {cls.__name__} cannot travel with its checkpoint: line {node.lineno} "
                              f"imports {name!r} ({lines[node.lineno - 1].strip()!r}); allowed {allowed} (as "
                              "`from selectivbench.models import Mixer, DiagonalState, ...`)")
    for node, new in sorted(edits, key=lambda e: -e[0].lineno):
        indent = " " * node.col_offset
        lines[node.lineno - 1: node.end_lineno] = [indent + line for line in new]
    return "\n".join(lines) + "\n"


def registered_plugins() -> dict:
    """Name -> class of every plugin known here: registered or resolved in this process, and installed."""
    found = {name: r.cls for name, r in _REGISTRY.items()}
    for name in _entry_points():
        if name not in found and name not in MIXERS:  # a built-in's name is the built-in
            try:
                found[name] = resolve_mixer(name).cls
            except PluginError:
                continue  # a broken installed plugin is reported when it is asked for, not in every listing
    return found
