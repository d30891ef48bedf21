"""Launchers: a sweep's runs one after the other in this process (`local`) or each a Ray task
(`ray`), the checks of their arguments, and the lock that keeps one driver per sweep folder. A
launcher calls `finished(spec, rows)` or `failed(spec, error)` for each run: only the driver writes."""
from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ParameterError, is_number
from ..files import file_lock

LAUNCHERS = ("local", "ray")
CLUSTER_EXTRA = "pip install -e '.[cluster]' (or pip install 'selectivbench[cluster]')"


def check_launcher(launcher, gpus_per_run=None, cpus_per_run=None, address=None, check_ray: bool = True) -> None:
    """The launcher and Ray's resource arguments (None: not given, as they must be unless launcher='ray')."""
    if launcher not in LAUNCHERS:
        raise ParameterError(f"launcher={launcher!r} is invalid: allowed one of {LAUNCHERS}")
    for name, value in (("address", address), ("gpus_per_run", gpus_per_run), ("cpus_per_run", cpus_per_run)):
        if value is not None and launcher != "ray":  # it would be ignored: say so rather than run without it
            raise ParameterError(f"{name}={value!r} is invalid: allowed only with --launcher ray (launcher='ray')")
    if gpus_per_run is not None and not (is_number(gpus_per_run) and gpus_per_run >= 0):
        raise ParameterError(f"gpus_per_run={gpus_per_run!r} is invalid: allowed a number >= 0")
    if cpus_per_run is not None and not (is_number(cpus_per_run) and cpus_per_run > 0):
        raise ParameterError(f"cpus_per_run={cpus_per_run!r} is invalid: allowed a number > 0")
    if launcher == "ray" and check_ray:
        check_ray_installed()


def check_ray_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ParameterError(f"launcher='ray' is invalid: allowed only with Ray installed: {CLUSTER_EXTRA}") from None


def check_ray_address(address: str, timeout: float = 10.0) -> None:
    """A HOST:PORT that nothing answers on: Ray would retry for many minutes in silence."""
    if address == "auto" or address.startswith("ray://"):
        return  # Ray itself fails fast on these
    host, _, port = address.rpartition(":")
    allowed = "'auto', 'ray://HOST:PORT', or the HOST:PORT of a Ray head reachable from here"
    if not host or not port.isdigit():
        raise ParameterError(f"address={address!r} is invalid: allowed {allowed}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ParameterError(f"address={address!r} is invalid: allowed {allowed} (connecting failed: "
                             f"{err.strerror or err})") from None


def launch_local(specs, finished, failed, worker) -> None:
    """One run after the other in this process; `worker` (the driver's `execute`) trains and evaluates one."""
    for spec in specs:
        try:
            rows = worker(spec)
        except Exception as error:  # recorded and retried next call; Ctrl-C still stops the sweep
            failed(spec, error)
        else:
            finished(spec, rows)


def check_ray_resources(ray, gpus_per_run: float, cpus_per_run: float, fixed: bool) -> None:
    """A run asking for more than any node has would wait forever, in silence. On a Ray started here
    (`fixed`: no node will join) that is one error; on a cluster, which may grow (an autoscaler), a
    warning."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("GPU", 0) >= gpus_per_run and n.get("CPU", 0) >= cpus_per_run for n in nodes):
        return
    have = ", ".join(f"{n.get('CPU', 0):g} CPUs and {n.get('GPU', 0):g} GPUs" for n in nodes) or "no node"
    field_, value = ("gpus_per_run", gpus_per_run) if not any(n.get("GPU", 0) >= gpus_per_run for n in nodes) \
        else ("cpus_per_run", cpus_per_run)
    if fixed:
        raise ParameterError(f"{field_}={value!r} is invalid: allowed at most what one Ray node has ({have})")
    tqdm.write(f"warning: no Ray node has {gpus_per_run:g} GPUs and {cpus_per_run:g} CPUs for a run now "
               f"({have}); the runs wait until one joins")


@contextlib.contextmanager
def ray_cluster(address, init: dict):
    """Ray, started here (address None) or joined ("auto", "host:port", "ray://host:port"), and
    shut down at the end when this driver started or joined it."""
    import ray  # the optional `cluster` extra: imported only for launcher='ray'

    connect_here = not ray.is_initialized()
    if connect_here:
        if address is None:  # the embedded default: a fresh Ray on this machine, even if one runs
            ray.init(address="local", include_dashboard=False, log_to_driver=False, **init)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        yield ray
    finally:
        if connect_here:
            ray.shutdown()


def launch_ray(ray, specs, finished, failed, gpus_per_run, cpus_per_run, worker) -> None:
    """Every run a Ray task with its resources (`worker`: the driver's `execute`); results come back
    here, the only writer."""
    pending = {}
    try:
        task = ray.remote(worker).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        pending = {task.remote(spec): spec for spec in specs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            try:
                rows = ray.get(ready[0])
            except ray.exceptions.RayTaskError as error:  # the run raised: its own exception, the remote stack
                failed(spec, error.cause if isinstance(error.cause, BaseException) else error, trace=str(error))
            except ray.exceptions.RayError as error:  # the worker died (out of memory, node lost)
                failed(spec, error)
            else:
                finished(spec, rows)
    finally:
        for ref in pending:  # an interrupted driver leaves no orphan training behind
            ray.cancel(ref, force=True)


LOCK_FILE = ".reproduce.lock"


def sweep_lock(folder: Path, out: str, command: str = "reproduce", lock_file: str = LOCK_FILE):
    """One driver per sweep folder: a second one (a batch job resubmitted while the first runs) would
    train the same runs into the same folders and record their rows twice."""
    return file_lock(folder / lock_file, busy=f"out={str(out)!r} is invalid: allowed a sweep folder no other "
                     f"`selectivbench {command}` is running in ({folder} is in use: wait for that driver or stop it)",
                     what="run one driver at a time")
