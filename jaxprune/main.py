"""Command line entry point: train, prune and fine-tune as a config says.

    python -m jaxprune.main --config configs/lenet300_mnist_gmp.py --workdir runs/lenet300
    python -m jaxprune.main --config configs/lenet300_mnist_gmp.py:smoke --workdir /tmp/smoke \
        --config.pruning.sparsity=0.99

The config is locked: overriding a field that does not exist is an error. Rerunning a command
with the same ``--workdir`` resumes the run from its newest checkpoint.
"""

import logging as std_logging

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxprune import training

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, summary and plots.")
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:arg]).", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def _not_orbax_info(record: std_logging.LogRecord) -> bool:
    """Log filter: Orbax's INFO chatter (several lines per save) stays out of the console."""
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
    """Runs ``training.train_and_evaluate`` on the parsed config."""
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_not_orbax_info)
    logging.info("JAX process %d/%d", jax.process_index(), jax.process_count())
    logging.info("JAX devices: %r", jax.devices())
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
