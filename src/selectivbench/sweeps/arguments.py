"""The arguments of `reproduce` and of its dry run (`estimate`), checked alike: every bad one is one
ParameterError before any work. Apart from the driver, so that the dry run's module (whose
`parameter_count` training imports) does not import the driver and, through it, training."""
from __future__ import annotations

from pathlib import Path

from ..builders.config import TASKS
from ..errors import ParameterError, check_choice
from ..models import MIXERS
from ..training.args import check_mixer_spec
from .launchers import check_launcher, check_ray_installed
from .outputs import check_out_folder
from .scales import SCALES


def check_arguments(task, scale, mixers, launcher, gpus_per_run=None, cpus_per_run=None, address=None,
                    out: str | None = None) -> None:
    """Every bad argument is one ParameterError, before any work. `address`, `gpus_per_run` and
    `cpus_per_run` are Ray's: None (not given) unless launcher='ray'."""
    check_choice("task", task, TASKS)
    if scale not in SCALES:
        raise ParameterError(f"scale={scale!r} is invalid: allowed one of {tuple(SCALES)}")
    if mixers is not None and not mixers:
        raise ParameterError(f"mixers={list(mixers)!r} is invalid: allowed one or more of {MIXERS} or plugins")
    for m in mixers or ():
        if m not in MIXERS:  # a plugin: it must import and run, before any run starts
            try:
                check_mixer_spec(m)
            except ParameterError as err:
                raise ParameterError(f"mixers={list(mixers)!r} is invalid: allowed one or more of {MIXERS} or "
                                     f"plugins ({err})") from None
    check_launcher(launcher, gpus_per_run, cpus_per_run, address, check_ray=False)
    if out is not None:
        if not out:
            raise ParameterError("out='' is invalid: allowed a folder path (not empty)")
        check_out_folder(out, Path(out) / f"{task}_{scale}")
    if launcher == "ray":
        check_ray_installed()
