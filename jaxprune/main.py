"""Command line entry point: train, prune and fine-tune as a config says.

    python -m jaxprune.main --config configs/lenet300_mnist_gmp.py --workdir runs/lenet300
    python -m jaxprune.main --config configs/lenet300_mnist_gmp.py:smoke --workdir /tmp/smoke \
        --config.pruning.sparsity=0.99

The config is locked: overriding a field that does not exist is an error. Rerunning a command
with the same ``--workdir`` resumes the run from its newest checkpoint.

Compiled XLA programs are cached on disk (``~/.cache/jaxprune/xla``; the environment variable
``JAXPRUNE_COMPILATION_CACHE`` names another folder, or ``off``), so a second run of a config
starts training seconds sooner; the cache changes no result.

Exit codes: 0 done; 2 a config or usage error (one line on stderr; ``--verbosity=1`` adds the
traceback); 1 a run that failed (divergence, a damaged checkpoint, a target not reached, a
locked workdir); 130 / 143 stopped by SIGINT / SIGTERM after saving a checkpoint (rerun the
same command to resume).
"""

import atexit
import logging as std_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxprune.compilation_cache import enable_compilation_cache

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, summary and plots.")
flags.DEFINE_bool(
    "restart",
    False,
    "Start over (new run id, the config may change) when the run has no checkpoint left; its "
    "metrics, summary, plots and config.json are deleted, other files stay.",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process runs: HOST:PORT of process 0's coordinator (same on every process).",
)
flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes in all.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0 first.")
flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "Call jax.distributed.initialize(): 'auto' when the launch flags are given or a cluster "
    "job is detected (multi-host Cloud TPU slice, Slurm, Open MPI); 'on' always (JAX finds "
    "the coordinator); 'off' never.",
)
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:arg]).", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])

USAGE_ERROR = 2
RUN_FAILED = 1


def _not_orbax_info(record: std_logging.LogRecord) -> bool:
    """Log filter: Orbax's INFO chatter (several lines per save) stays out of the console."""
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def _fail(code: int, message: str) -> None:
    """Prints one line on stderr and exits (with the traceback first under --verbosity>=1)."""
    if FLAGS.verbosity >= 1:
        raise  # noqa: PLE0704 - re-raise the exception being handled, with its traceback
    first = " ".join(str(message).split("\n")[0].split()) if message else "error"
    print(f"jaxprune: error: {first}", file=sys.stderr)
    sys.exit(code)


def _exit_now() -> None:
    """Ends a finished single-process run without the interpreter's teardown (exit code 0).

    Everything the run writes is on disk when ``train_and_evaluate`` returns (checkpoints
    waited for, metrics and TensorBoard files closed, summary and plots written atomically).
    The ``atexit`` hooks still run, with the user's and the libraries' (logging flushes its
    handlers in one); only the interpreter's finalization is skipped: freeing every module and
    the XLA client, about 0.4 s of a LeNet run that changes nothing on disk. Runs of several
    processes exit normally, so that their hooks leave the coordination service in order.
    """
    atexit._run_exitfuncs()  # noqa: SLF001 - the hooks sys.exit would run, in the same order
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv):
    """Runs ``training.train_and_evaluate`` on the parsed config."""
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    from jaxprune.training import distributed

    try:
        launch = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        if FLAGS.distributed == "off":
            if distributed.check_flags(*launch):
                raise ValueError("--distributed=off contradicts --coordinator_address")
        else:
            auto = FLAGS.distributed == "on" or distributed.detect_cluster() is not None
            distributed.initialize(*launch, auto=auto)
    except ValueError as e:
        _fail(USAGE_ERROR, str(e))
    enable_compilation_cache()  # JAXPRUNE_COMPILATION_CACHE or ~/.cache/jaxprune/xla
    from jaxprune import training
    from jaxprune.data.tfds_source import DatasetNotPreparedError
    from jaxprune.training import runner

    logging.get_absl_handler().addFilter(_not_orbax_info)
    logging.info("JAX process %d/%d", jax.process_index(), jax.process_count())
    logging.info("JAX devices: %r", jax.devices())
    try:
        config = FLAGS.config
        config.get("flow")  # ml_collections loads the file lazily: fail here, as a usage error
    except OSError as e:
        _fail(USAGE_ERROR, " ".join(str(e).split()))
    try:
        if not (FLAGS.workdir or "").strip():
            raise ValueError("--workdir is empty; give the run directory")
        training.train_and_evaluate(config, FLAGS.workdir, restart=FLAGS.restart)
        if jax.process_count() == 1:
            _exit_now()
    except runner.RunInterrupted as stopped:
        print(f"jaxprune: {stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except (
        FloatingPointError,
        training.CheckpointError,
        runner.TargetNotReachedError,
        RuntimeError,
    ) as e:
        _fail(RUN_FAILED, str(e))
    except (ValueError, TypeError, KeyError, DatasetNotPreparedError) as e:
        _fail(USAGE_ERROR, e.args[0] if isinstance(e, KeyError) and e.args else str(e))


def _parse_flags(argv):
    """Absl flag parsing with config errors as one line and exit code 2."""
    try:
        return FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
        # A misspelt --config.FIELD raises AttributeError with ml_collections' "Did you mean".
        text = e.args[0] if isinstance(e, AttributeError | KeyError) and e.args else str(e)
        text = str(text).replace("\\n", " ").replace("\\", "").replace("'", "")
        token = text.split()[0] if text.split() else ""
        where = next((a.split("=")[0] for a in argv[1:] if f".{token}" in a.split("=")[0]), "")
        prefix = f"{where}: no such config field; " if where and "Did you" in text else ""
        print(f"jaxprune: error: {prefix}{' '.join(text.split())}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
