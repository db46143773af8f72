"""Multi-process (multi-host) runs on JAX's own multi-controller runtime.

Every process runs the same command; ``jax.distributed.initialize`` connects them, after which
``jax.devices()`` lists the devices of all processes and one jitted program spans them. The
rest of jaxprune follows three rules:

* **Data**: each process reads only its rows of every global batch
  (``process_shard``: rows ``[i * B / P, (i + 1) * B / P)`` of process ``i`` of ``P``); the
  global batch is assembled with ``jax.make_array_from_process_local_data``. The global batch of
  step ``t`` is the same set of examples in the same order as in a one-process run, so the
  devices see what they would see with one process driving them all.
* **Files**: only process 0 (``is_writer``) writes metrics, the summary, plots and
  ``config.json`` and holds the workdir lock; every process reads them on resume.
* **Checkpoints**: Orbax saves and restores collectively (every process calls it).

On a Cloud TPU pod slice, under Slurm or Open MPI, ``jax.distributed.initialize()`` finds the
coordinator by itself; elsewhere (CPU or GPU boxes, tests) pass ``--coordinator_address``,
``--num_processes`` and ``--process_id``. CPU processes exchange data with gloo.
"""

import os
from collections.abc import Mapping

import jax
import numpy as np

# Environment variables that say this process is one of several of a cluster job that
# ``jax.distributed.initialize()`` can detect by itself.
_CLUSTER_HINTS = {
    # Cloud TPU VM of a multi-host slice: the worker host names, comma separated.
    "TPU_WORKER_HOSTNAMES": lambda v: "," in v,
    # Multislice (Megascale) TPU jobs.
    "MEGASCALE_COORDINATOR_ADDRESS": bool,
    # Slurm job step with more than one task.
    "SLURM_STEP_NUM_TASKS": lambda v: v.isdigit() and int(v) > 1,
    # Open MPI.
    "OMPI_COMM_WORLD_SIZE": lambda v: v.isdigit() and int(v) > 1,
}


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable that marks a multi-process cluster job, or None."""
    environ = os.environ if environ is None else environ
    for name, is_multi in _CLUSTER_HINTS.items():
        value = environ.get(name, "")
        if value and is_multi(value):
            return name
    return None


def check_flags(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> bool:
    """Validates the three launch flags; True when they ask for a multi-process run.

    Raises:
      ValueError: naming the flag, when only some are given or a value is out of range.
    """
    given = {
        "--coordinator_address": coordinator_address,
        "--num_processes": num_processes,
        "--process_id": process_id,
    }
    if all(v is None or v == "" for v in given.values()):
        return False
    missing = [k for k, v in given.items() if v is None or v == ""]
    if missing:
        raise ValueError(
            f"{', '.join(missing)} missing: a multi-process run needs --coordinator_address "
            "HOST:PORT, --num_processes N and --process_id I (0 <= I < N) on every process"
        )
    host, _, port = str(coordinator_address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}")
    if num_processes < 1:
        raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process_id must be in [0, {num_processes - 1}] (--num_processes="
            f"{num_processes}), got {process_id}"
        )
    return True


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    timeout_s: int = 300,
) -> bool:
    """Connects this process to the others of its job; True when it did.

    Call before any other JAX call. With the three launch values given, connects to the
    coordinator they name; with ``auto`` (a detected cluster, see ``detect_cluster``), lets
    JAX find the coordinator. Otherwise does nothing: a single-process run.
    """
    explicit = check_flags(coordinator_address, num_processes, process_id)
    if not explicit and not auto:
        return False
    # CPU devices of different processes talk through gloo (no effect on GPU / TPU).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_s,
        )
    else:
        jax.distributed.initialize(initialization_timeout=timeout_s)
    return True


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (no-op with one process).

    Used where non-writing processes read what process 0 has just written (the metrics file
    after a resume's truncation, the final records before the summary).
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxprune:{name}")


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def process_shard() -> tuple[int, int]:
    """``(index, count)`` of this process among the job's processes."""
    return jax.process_index(), jax.process_count()
