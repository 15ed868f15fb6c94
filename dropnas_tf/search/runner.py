"""Runs a whole search: data, strategy, loop, checkpoints and outputs.

Outputs in `model_dir`:

- `genotype.json` and `genotype.txt`: the derived cells, rewritten every epoch.
- `alphas.jsonl`: one record per epoch with raw and softmax alpha of every
  edge.
- `metrics.jsonl`: one record per epoch (loss, accuracy, learning rate, kept
  fractions, skip connections in the derived normal cell, seconds).
- `config.json`: the settings of the run; a rerun with other settings is
  rejected unless `overwrite` is set.
- `checkpoints/`: network, alpha, both optimizers and the global step.
- `tensorboard/`: scalars per loop and per epoch.
- `search_summary.json`: written when the search ends.
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dropnas_tf import allocator
from dropnas_tf import data
from dropnas_tf import distribute
from dropnas_tf import errors
from dropnas_tf import files
from dropnas_tf import genotype as genotype_lib
from dropnas_tf import ops
from dropnas_tf import precision
from dropnas_tf import run_utils
from dropnas_tf import search_space
from dropnas_tf import visualize
from dropnas_tf.search import dropout
from dropnas_tf.search import memory
from dropnas_tf.search.network import SearchNetwork
from dropnas_tf.search.step import SearchStep, StepConfig

# Settings that may change between a run and its resumption.
RUNTIME_FIELDS = ("model_dir", "overwrite", "steps_per_loop", "data_dir", "download",
                  "strategy", "num_gpus", "cpu_replicas", "tpu", "tpu_zone",
                  "gcp_project", "jit_compile", "checkpoint_every_steps",
                  "memory_check", "max_skip_connect", "sync_batch_norm",
                  "recompute_cells")
# Files and folders of a search; --overwrite deletes them.
OUTPUTS = ("checkpoints", "tensorboard", "alphas.jsonl", "metrics.jsonl",
           "genotype.json", "genotype.txt", "search_summary.json")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search; defaults are the reference CIFAR-10 search."""

    model_dir: str
    dataset: str = "cifar10"
    data_dir: str = None
    download: bool = False
    train_examples: int = 0
    holdout_examples: int = 0
    image_size: int = 0
    search_space: str = "original"
    layers: int = 14
    init_channels: int = 16
    nodes: int = 4
    stem_multiplier: int = 3
    batch_size: int = 96
    epochs: int = 76
    warmup_epochs: int = 0
    learning_rate: float = 0.0375
    learning_rate_min: float = 0.0015
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 3.0
    alpha_learning_rate: float = 3e-4
    alpha_beta_1: float = 0.5
    alpha_beta_2: float = 0.999
    alpha_weight_decay: float = 1e-3
    drop_rate_param: float = 3e-5
    drop_rate_nonparam: float = 3e-5
    method: str = "dropnas"
    seed: int = 2
    strategy: str = "default"
    num_gpus: int = 0
    cpu_replicas: int = 1
    sync_batch_norm: bool = False
    tpu: str = None
    tpu_zone: str = None
    gcp_project: str = None
    steps_per_loop: int = 10
    jit_compile: bool = False
    mixed_precision: str = "float32"
    checkpoint_every_steps: int = 0
    memory_check: bool = True
    recompute_cells: bool = False
    max_skip_connect: int = -1
    overwrite: bool = False

    def validate(self):
        """Raises UserInputError naming the first setting out of range."""
        try:
            self._validate()
        except ValueError as error:
            raise errors.UserInputError(str(error)) from None

    def _validate(self):
        search_space.get_search_space(self.search_space)
        dropout.check_drop_rate("--drop_rate_param", self.drop_rate_param)
        dropout.check_drop_rate("--drop_rate_nonparam", self.drop_rate_nonparam)
        if self.layers < 3:
            raise ValueError(
                f"--layers={self.layers} is too small: a search network needs at "
                "least 3 cells (two reduction cells and one normal cell).")
        checks = (("init_channels", self.init_channels), ("nodes", self.nodes),
                  ("batch_size", self.batch_size), ("epochs", self.epochs),
                  ("stem_multiplier", self.stem_multiplier))
        for name, value in checks:
            if value < 1:
                raise ValueError(f"--{name}={value} must be at least 1.")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(
                f"--warmup_epochs={self.warmup_epochs} must be between 0 and "
                f"--epochs={self.epochs}.")
        if self.method not in ("dropnas", "darts"):
            raise ValueError(f"--method={self.method!r} must be dropnas or darts.")
        if self.mixed_precision not in precision.POLICIES:
            raise ValueError(
                f"--mixed_precision={self.mixed_precision!r} must be one of "
                f"{', '.join(precision.POLICIES)}.")
        if self.steps_per_loop < 1:
            raise ValueError(f"--steps_per_loop={self.steps_per_loop} must be at least 1.")

    def step_config(self, steps_per_epoch):
        return StepConfig(
            steps_per_epoch=steps_per_epoch, epochs=self.epochs,
            warmup_epochs=self.warmup_epochs, weight_lr_max=self.learning_rate,
            weight_lr_min=self.learning_rate_min, momentum=self.momentum,
            weight_decay=self.weight_decay, grad_clip=self.grad_clip,
            alpha_lr=self.alpha_learning_rate, alpha_beta_1=self.alpha_beta_1,
            alpha_beta_2=self.alpha_beta_2, alpha_decay=self.alpha_weight_decay,
            drop_rate_param=self.drop_rate_param,
            drop_rate_nonparam=self.drop_rate_nonparam, method=self.method,
            seed=self.seed)


# Step outputs summed over replicas, and those averaged over replicas.
SUMMED = ("loss", "correct", "examples")
AVERAGED = ("kept_fraction_param", "kept_fraction_nonparam", "kept_share")


def _alpha_record(epoch, step, network, alpha_gradient):
    record = {"epoch": epoch, "step": step,
              "operations": list(network.space.operations)}
    for index, name in enumerate(("normal", "reduce")):
        alpha = np.asarray(network.alpha_variables[index].numpy(), np.float64)
        softmax = np.exp(alpha - alpha.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        record[f"alpha_{name}"] = alpha.round(7).tolist()
        record[f"softmax_{name}"] = softmax.round(7).tolist()
        if alpha_gradient is not None:
            record[f"alpha_grad_{name}"] = np.asarray(alpha_gradient[index]).tolist()
    return record


def _check_memory(config, network, image_shape, replicas):
    """Logs the memory estimate, and rejects a run that cannot fit on the host."""
    estimate = memory.estimate_search_bytes(
        config.layers, config.init_channels, config.nodes,
        config.batch_size // replicas, image_shape[0],
        sum(int(np.prod(v.shape)) for v in network.weight_variables),
        config.stem_multiplier, config.recompute_cells,
        system_malloc=allocator.current() == "system")
    available = run_utils.available_memory_bytes()
    logging.info("Estimated memory need: %.1f GiB per replica (%s GiB available on "
                 "the host).", estimate / run_utils.GIB,
                 "unknown" if available is None else f"{available / run_utils.GIB:.1f}")
    on_host = not tf.config.list_physical_devices("GPU") and config.strategy != "tpu"
    if (config.memory_check and on_host and available is not None
            and estimate * replicas > available):
        raise errors.UserInputError(
            f"This search needs about {estimate * replicas / run_utils.GIB:.1f} GiB "
            f"but the host has {available / run_utils.GIB:.1f} GiB available. "
            f"{_memory_advice(config)}, or pass --nomemory_check to try anyway.")
    return estimate


def _memory_advice(config):
    advice = "Pass --recompute_cells, or lower" if not config.recompute_cells else "Lower"
    return (f"{advice} --batch_size={config.batch_size}, --layers={config.layers} or "
            f"--init_channels={config.init_channels}")


def _out_of_memory_message(config, estimate):
    return (
        f"The search ran out of memory (estimated need {estimate / run_utils.GIB:.1f} "
        f"GiB per replica). {_memory_advice(config)}, or spread the batch over more "
        "replicas with --strategy.")


def run_search(config):
    """Runs the search described by `config` and returns its summary dict.

    Re-running with the same `model_dir` resumes from the latest checkpoint;
    SIGTERM saves a checkpoint and raises `run_utils.PreemptedError`.

    Raises:
      errors.UserInputError: for invalid settings (see
        `SearchConfig.validate`), a data set that cannot be read, a
        `model_dir` that contains a run with other settings, or a configuration
        that does not fit in memory.
      errors.NonFiniteLossError: if the loss becomes NaN or infinite.
      run_utils.PreemptedError: after SIGTERM.
    """
    config.validate()
    precision.set_policy(config.mixed_precision)
    try:
        with run_utils.PreemptionGuard() as guard:
            return _SearchRun(config, guard).run()
    finally:
        precision.set_policy("float32")


class _SearchRun:
    """The state of one search command: strategy, data, network, loop, outputs."""

    def __init__(self, config, guard):
        self.config = config
        self.guard = guard
        self.started = time.time()
        self.strategy = distribute.make_strategy(
            config.strategy, config.num_gpus, config.cpu_replicas, config.tpu,
            config.tpu_zone, config.gcp_project)
        replicas = self.strategy.num_replicas_in_sync
        try:
            distribute.check_jit_compile(self.strategy, config.jit_compile,
                                         config.sync_batch_norm)
        except ValueError as error:
            raise errors.UserInputError(str(error)) from None
        if config.batch_size % replicas:
            raise errors.UserInputError(
                f"--batch_size={config.batch_size} is not divisible by the {replicas} "
                "replicas; choose a multiple of the replica count.")

        self.split = data.load_split(config.dataset, config.data_dir, "train",
                                     max_examples=config.train_examples or None,
                                     download=config.download,
                                     holdout_examples=config.holdout_examples,
                                     image_size=config.image_size or None)
        data.log_split("Search training data", self.split)
        self.steps_per_epoch = self.split.num_examples // config.batch_size
        if self.steps_per_epoch < 1:
            raise errors.UserInputError(
                f"--batch_size={config.batch_size} is larger than the "
                f"{self.split.num_examples} training images; lower it or use more images.")
        self.image_shape = data.image_shape(self.split)

        output_dir = distribute.worker_output_dir(self.strategy, config.model_dir)
        if output_dir != config.model_dir:
            config = self.config = dataclasses.replace(config, model_dir=output_dir)
        run_utils.check_run_settings(config.model_dir, dataclasses.asdict(config),
                                     config.overwrite, RUNTIME_FIELDS, OUTPUTS)
        self.space = search_space.get_search_space(config.search_space)
        keras.utils.set_random_seed(config.seed)
        self._build(replicas)
        self.writer = tf.summary.create_file_writer(
            os.path.join(config.model_dir, "tensorboard"))
        self.loops = {}

    def _build(self, replicas):
        config = self.config
        with self.strategy.scope(), ops.synchronized_batch_norm(config.sync_batch_norm):
            self.network = SearchNetwork(self.split.num_classes, config.init_channels,
                                         config.layers, config.nodes,
                                         config.stem_multiplier, self.space,
                                         recompute_cells=config.recompute_cells)
            self.network.build_variables(self.image_shape)
            loss_scale = None
            if config.mixed_precision == "mixed_float16":
                loss_scale = precision.DynamicLossScale()
            self.step = SearchStep(self.network, config.step_config(self.steps_per_epoch),
                                   config.batch_size, loss_scale)
            items = {"network": self.network,
                     "weight_optimizer": self.step.weight_optimizer,
                     "alpha_optimizer": self.step.alpha_optimizer,
                     "global_step": self.step.global_step}
            if loss_scale:
                items.update(loss_scale.checkpoint_items())
            self.checkpoint = tf.train.Checkpoint(**items)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(config.model_dir, "checkpoints"), max_to_keep=3)
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
            logging.info("Resumed from %s at step %d.", self.manager.latest_checkpoint,
                         int(self.step.global_step.numpy()))
        logging.info("Search network: %d weights in %d tensors, alpha %s x 2.",
                     sum(int(np.prod(v.shape)) for v in self.network.weight_variables),
                     len(self.network.weight_variables),
                     tuple(self.network.alpha_normal.shape))
        self.memory_estimate = _check_memory(config, self.network, self.image_shape,
                                             replicas)

    def _dataset(self, start_step):
        config, split = self.config, self.split
        mean, std = data.normalization_for(config.dataset)

        def dataset_fn(context):
            batch = context.get_per_replica_batch_size(config.batch_size)
            shard = split
            if context.num_input_pipelines > 1:
                shard = dataclasses.replace(
                    split, dataset=split.dataset.shard(context.num_input_pipelines,
                                                       context.input_pipeline_id))
            per_pipeline = config.batch_size // context.num_input_pipelines
            return data.train_dataset(shard, batch, config.seed, mean, std,
                                      skip_examples=start_step * per_pipeline)

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def _loop(self, warmup):
        """Returns the tf.function that runs several steps (one per warm-up mode)."""
        if warmup in self.loops:
            return self.loops[warmup]
        strategy = self.strategy
        step_fn = self.step.replica_function(strategy, warmup, self.config.jit_compile)
        alpha_shape = (2,) + tuple(self.network.alpha_normal.shape)

        @tf.function
        def loop(iterator, num_steps):
            totals = tf.zeros([len(SUMMED) + len(AVERAGED)])
            alpha_gradient = tf.zeros(alpha_shape)
            for _ in tf.range(num_steps):
                images, labels = next(iterator)
                outputs = strategy.run(step_fn, args=(images, labels))
                values = [strategy.reduce("SUM", outputs[key], axis=None) for key in SUMMED]
                values += [strategy.reduce("MEAN", outputs[key], axis=None)
                           for key in AVERAGED]
                totals += tf.stack(values)
                alpha_gradient += strategy.reduce("MEAN", outputs["alpha_gradient"],
                                                  axis=None)
            return totals, alpha_gradient

        self.loops[warmup] = loop
        return loop

    def _run_loop(self, iterator, warmup, num_steps):
        try:
            totals, alpha_gradient = self._loop(warmup)(iterator, tf.constant(num_steps))
        except tf.errors.ResourceExhaustedError:
            raise errors.ReportedError(
                _out_of_memory_message(self.config, self.memory_estimate)) from None
        except tf.errors.InvalidArgumentError as error:
            unreadable = data.find_unreadable_image(self.split)
            if unreadable:
                raise data.DataError(unreadable) from None
            raise error
        totals = totals.numpy()
        sums = dict(zip(SUMMED, totals[:len(SUMMED)]))
        means = dict(zip(AVERAGED, totals[len(SUMMED):]))
        return sums, means, alpha_gradient.numpy()

    def _save_and_stop_if_preempted(self, step):
        if not self.guard.requested:
            return
        path = self.manager.save(checkpoint_number=step)
        message = (f"Stopped by SIGTERM at step {step}; checkpoint saved to {path}. "
                   "Rerun the same command to resume.")
        logging.warning("%s", message)
        raise run_utils.PreemptedError(message)

    def run(self):
        config = self.config
        step_now = int(self.step.global_step.numpy())
        iterator = self._dataset(step_now)
        last_record = {}
        for epoch in range(step_now // self.steps_per_epoch, config.epochs):
            step_now, last_record = self._run_epoch(iterator, epoch, step_now)
        return self._finish(step_now, last_record)

    def _run_epoch(self, iterator, epoch, step_now):
        config = self.config
        steps_per_epoch = self.steps_per_epoch
        warmup = epoch < config.warmup_epochs
        epoch_started = time.time()
        progress = keras.utils.Progbar(steps_per_epoch, stateful_metrics=["loss", "accuracy"],
                                       unit_name="step")
        totals = dict.fromkeys(SUMMED + AVERAGED, 0.0)
        alpha_gradient_total = 0.0
        steps_done = 0
        done_in_epoch = step_now - epoch * steps_per_epoch
        progress.update(done_in_epoch)
        learning_rate = float(self.step.weight_learning_rate())
        while done_in_epoch < steps_per_epoch:
            num_steps = min(config.steps_per_loop, steps_per_epoch - done_in_epoch)
            if config.checkpoint_every_steps:
                num_steps = min(num_steps, config.checkpoint_every_steps
                                - step_now % config.checkpoint_every_steps)
            sums, means, alpha_gradient = self._run_loop(iterator, warmup, num_steps)
            loss = float(sums["loss"]) / num_steps
            if not math.isfinite(loss):
                raise errors.NonFiniteLossError(
                    f"The loss became {loss} between steps {step_now} and "
                    f"{step_now + num_steps}. The last good checkpoint is in "
                    f"{self.manager.directory}; lower --learning_rate or "
                    "--alpha_learning_rate and rerun.")
            step_now += num_steps
            done_in_epoch += num_steps
            steps_done += num_steps
            for key in SUMMED + AVERAGED:
                totals[key] += float(sums[key] if key in sums else means[key])
            alpha_gradient_total = alpha_gradient_total + alpha_gradient
            accuracy = float(sums["correct"]) / float(sums["examples"])
            progress.update(done_in_epoch, [("loss", loss), ("accuracy", accuracy)])
            with self.writer.as_default(step=step_now):
                tf.summary.scalar("train/loss", loss)
                tf.summary.scalar("train/accuracy", accuracy)
                tf.summary.scalar("learning_rate/weights", learning_rate)
                tf.summary.scalar("learning_rate/alpha", config.alpha_learning_rate)
                for key in AVERAGED:
                    tf.summary.scalar(f"dropout/{key}", float(means[key]) / num_steps)
            if config.checkpoint_every_steps and step_now % config.checkpoint_every_steps == 0:
                self.manager.save(checkpoint_number=step_now)
            self._save_and_stop_if_preempted(step_now)
        return step_now, self._end_epoch(epoch, step_now, warmup, learning_rate, totals,
                                         steps_done, alpha_gradient_total, epoch_started)

    def _end_epoch(self, epoch, step_now, warmup, learning_rate, totals, steps_done,
                   alpha_gradient_total, epoch_started):
        config = self.config
        derived = self._derive()
        steps_done = max(steps_done, 1)
        record = {
            "epoch": epoch + 1,
            "step": step_now,
            "loss": totals["loss"] / steps_done,
            "accuracy": totals["correct"] / max(totals["examples"], 1.0),
            "learning_rate": learning_rate,
            "kept_fraction_param": totals["kept_fraction_param"] / steps_done,
            "kept_fraction_nonparam": totals["kept_fraction_nonparam"] / steps_done,
            "kept_share": totals["kept_share"] / steps_done,
            "skip_connections_normal": derived.skip_count("normal"),
            "skip_connections_reduce": derived.skip_count("reduce"),
            "seconds": time.time() - epoch_started,
            "warmup": warmup,
        }
        alpha_gradient = np.asarray(alpha_gradient_total) / steps_done
        model_dir = config.model_dir
        files.append_jsonl(os.path.join(model_dir, "metrics.jsonl"), record,
                           keep=lambda r: r["epoch"] <= epoch)
        files.append_jsonl(os.path.join(model_dir, "alphas.jsonl"),
                           _alpha_record(epoch + 1, step_now, self.network, alpha_gradient),
                           keep=lambda r: r["epoch"] <= epoch)
        with self.writer.as_default(step=step_now):
            tf.summary.scalar("epoch/loss", record["loss"])
            tf.summary.scalar("epoch/accuracy", record["accuracy"])
            tf.summary.scalar("genotype/skip_connections_normal",
                              record["skip_connections_normal"])
            tf.summary.text("genotype", derived.to_text().replace("\n", "  \n"))
            picture = visualize.genotype_image(derived, title=f"epoch {epoch + 1}")
            tf.summary.image("genotype", picture[None])
        self.writer.flush()
        self.manager.save(checkpoint_number=step_now)
        if derived.skip_count("normal") > 2:
            logging.warning(
                "Epoch %d: the derived normal cell has %d skip connections. Searches "
                "of the DARTS family that collapse towards parameter-free cells end "
                "like this; consider --max_skip_connect when deriving.",
                epoch + 1, derived.skip_count("normal"))
        logging.info(
            "Epoch %d/%d: loss %.4f, accuracy %.4f, lr %.5f, kept param %.3f "
            "nonparam %.3f, %.0f s. Genotype:\n%s", epoch + 1, config.epochs,
            record["loss"], record["accuracy"], learning_rate,
            record["kept_fraction_param"], record["kept_fraction_nonparam"],
            record["seconds"], derived.to_text())
        return record

    def _derive(self):
        cap = self.config.max_skip_connect
        derived = genotype_lib.derive(self.network.alpha_normal.numpy(),
                                      self.network.alpha_reduce.numpy(), self.space,
                                      self.config.nodes,
                                      max_skip_connect=None if cap < 0 else cap)
        genotype_lib.save(derived, os.path.join(self.config.model_dir, "genotype.json"))
        return derived

    def _finish(self, step_now, last_record):
        config = self.config
        derived = self._derive()
        if not last_record:
            previous = files.read_jsonl(os.path.join(config.model_dir, "metrics.jsonl"))
            last_record = previous[-1] if previous else {}
        summary = {
            "genotype": derived.to_dict(),
            "final_epoch": last_record,
            "steps": step_now,
            "seconds_this_run": time.time() - self.started,
            "peak_rss_gib": run_utils.peak_rss_bytes() / run_utils.GIB,
            "memory_estimate_gib": self.memory_estimate / run_utils.GIB,
            "train_examples": self.split.num_examples,
        }
        files.write_json(os.path.join(config.model_dir, "search_summary.json"), summary)
        return summary
