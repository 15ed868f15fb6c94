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
import functools
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dropnas_tf import data
from dropnas_tf import distribute
from dropnas_tf import errors
from dropnas_tf import files
from dropnas_tf import genotype as genotype_lib
from dropnas_tf import search_space
from dropnas_tf.search import dropout
from dropnas_tf.search.network import SearchNetwork
from dropnas_tf.search.step import SearchStep, StepConfig

# Settings that may change between a run and its resumption.
RUNTIME_FIELDS = ("model_dir", "overwrite", "steps_per_loop", "data_dir", "download",
                  "strategy", "num_gpus", "cpu_replicas", "tpu", "tpu_zone",
                  "gcp_project", "jit_compile", "checkpoint_every_steps")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search; defaults are the reference CIFAR-10 search."""

    model_dir: str
    dataset: str = "cifar10"
    data_dir: str = None
    download: bool = False
    train_examples: int = 0
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
    tpu: str = None
    tpu_zone: str = None
    gcp_project: str = None
    steps_per_loop: int = 10
    jit_compile: bool = False
    checkpoint_every_steps: int = 0
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


class RunSettingsError(errors.UserInputError):
    """`model_dir` holds a run made with other settings."""


def check_run_settings(model_dir, settings, overwrite, runtime_fields):
    """Records `settings` in model_dir/config.json, or checks them against it.

    Raises:
      RunSettingsError: if the directory holds a run with different settings
        and `overwrite` is False. The message lists every difference.
    """
    path = os.path.join(model_dir, "config.json")
    if tf.io.gfile.exists(path) and not overwrite:
        previous = files.read_json(path)
        differences = [
            f"--{key}: {previous.get(key)!r} there, {value!r} now"
            for key, value in settings.items()
            if key not in runtime_fields and previous.get(key) != value
        ]
        if differences:
            raise RunSettingsError(
                f"{model_dir} holds a run made with other settings ("
                + "; ".join(differences)
                + "). Use another --model_dir, or pass --overwrite to start afresh.")
        return False
    if overwrite and tf.io.gfile.exists(model_dir):
        for name in ("checkpoints", "tensorboard"):
            if tf.io.gfile.exists(os.path.join(model_dir, name)):
                tf.io.gfile.rmtree(os.path.join(model_dir, name))
        for name in ("alphas.jsonl", "metrics.jsonl"):
            if tf.io.gfile.exists(os.path.join(model_dir, name)):
                tf.io.gfile.remove(os.path.join(model_dir, name))
    tf.io.gfile.makedirs(model_dir)
    files.write_json(path, settings)
    return True


def _alpha_record(epoch, step, network):
    record = {"epoch": epoch, "step": step,
              "operations": list(network.space.operations)}
    for name, variable in (("normal", network.alpha_normal),
                           ("reduce", network.alpha_reduce)):
        alpha = np.asarray(variable.numpy(), np.float64)
        softmax = np.exp(alpha - alpha.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        record[f"alpha_{name}"] = alpha.round(7).tolist()
        record[f"softmax_{name}"] = softmax.round(7).tolist()
    return record


def run_search(config):
    """Runs the search described by `config` and returns its summary dict.

    Re-running with the same `model_dir` resumes from the latest checkpoint.

    Raises:
      errors.UserInputError: for invalid settings (see
        `SearchConfig.validate`), a data set that cannot be read, or a
        `model_dir` that holds a run with other settings.
    """
    config.validate()
    started = time.time()
    strategy = distribute.make_strategy(
        config.strategy, config.num_gpus, config.cpu_replicas, config.tpu,
        config.tpu_zone, config.gcp_project)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise errors.UserInputError(
            f"--batch_size={config.batch_size} is not divisible by the {replicas} "
            "replicas; choose a multiple of the replica count.")

    split = data.load_split(config.dataset, config.data_dir, "train",
                            max_examples=config.train_examples or None,
                            download=config.download)
    data.log_split("Search training data", split)
    steps_per_epoch = split.num_examples // config.batch_size
    if steps_per_epoch < 1:
        raise errors.UserInputError(
            f"--batch_size={config.batch_size} is larger than the "
            f"{split.num_examples} training images; lower it or use more images.")
    mean, std = data.normalization_for(config.dataset)
    image_shape = tuple(next(iter(split.dataset.take(1)))[0].shape)

    settings = dataclasses.asdict(config)
    check_run_settings(config.model_dir, settings, config.overwrite, RUNTIME_FIELDS)
    space = search_space.get_search_space(config.search_space)
    keras.utils.set_random_seed(config.seed)

    with strategy.scope():
        network = SearchNetwork(split.num_classes, config.init_channels, config.layers,
                                config.nodes, config.stem_multiplier, space)
        network.build_variables(image_shape)
        search_step = SearchStep(network, config.step_config(steps_per_epoch),
                                 config.batch_size)
        checkpoint = tf.train.Checkpoint(
            network=network, weight_optimizer=search_step.weight_optimizer,
            alpha_optimizer=search_step.alpha_optimizer,
            global_step=search_step.global_step)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(config.model_dir, "checkpoints"), max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info("Resumed from %s at step %d.", manager.latest_checkpoint,
                     int(search_step.global_step.numpy()))
    logging.info("Search network: %d weights in %d tensors, alpha %s x 2.",
                 sum(int(np.prod(v.shape)) for v in network.weight_variables),
                 len(network.weight_variables), tuple(network.alpha_normal.shape))

    start_step = int(search_step.global_step.numpy())

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

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    loops = {}

    def train_loop(warmup):
        if warmup not in loops:
            step_fn = functools.partial(search_step, warmup=warmup)
            if config.jit_compile:
                step_fn = tf.function(step_fn, jit_compile=True)

            @tf.function
            def loop(iterator, num_steps):
                totals = tf.zeros([len(SUMMED) + len(AVERAGED)])
                for _ in tf.range(num_steps):
                    images, labels = next(iterator)
                    outputs = strategy.run(step_fn, args=(images, labels))
                    values = [strategy.reduce("SUM", outputs[key], axis=None)
                              for key in SUMMED]
                    values += [strategy.reduce("MEAN", outputs[key], axis=None)
                               for key in AVERAGED]
                    totals += tf.stack(values)
                return totals

            loops[warmup] = loop
        return loops[warmup]

    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "tensorboard"))
    metrics_path = os.path.join(config.model_dir, "metrics.jsonl")
    alphas_path = os.path.join(config.model_dir, "alphas.jsonl")
    genotype_path = os.path.join(config.model_dir, "genotype.json")
    step_now = start_step
    start_epoch = step_now // steps_per_epoch
    last_record = {}
    for epoch in range(start_epoch, config.epochs):
        warmup = epoch < config.warmup_epochs
        epoch_started = time.time()
        progress = keras.utils.Progbar(
            steps_per_epoch, stateful_metrics=["loss", "accuracy"],
            unit_name="step")
        totals = {"loss": 0.0, "correct": 0.0, "examples": 0.0, "steps": 0,
                  "kept_fraction_param": 0.0, "kept_fraction_nonparam": 0.0,
                  "kept_share": 0.0}
        done_in_epoch = step_now - epoch * steps_per_epoch
        progress.update(done_in_epoch)
        learning_rate = float(search_step.weight_learning_rate())
        while done_in_epoch < steps_per_epoch:
            num_steps = min(config.steps_per_loop, steps_per_epoch - done_in_epoch)
            if config.checkpoint_every_steps:
                until_checkpoint = config.checkpoint_every_steps - (
                    step_now % config.checkpoint_every_steps)
                num_steps = min(num_steps, until_checkpoint)
            totals_of_loop = train_loop(warmup)(iterator, tf.constant(num_steps)).numpy()
            sums = dict(zip(SUMMED, totals_of_loop[:len(SUMMED)]))
            means = dict(zip(AVERAGED, totals_of_loop[len(SUMMED):]))
            loss = float(sums["loss"]) / num_steps
            if not math.isfinite(loss):
                raise errors.NonFiniteLossError(
                    f"The loss became {loss} between steps {step_now} and "
                    f"{step_now + num_steps}. The last good checkpoint is in "
                    f"{manager.directory}; lower --learning_rate or "
                    "--alpha_learning_rate and rerun.")
            step_now += num_steps
            done_in_epoch += num_steps
            totals["steps"] += num_steps
            for key in ("loss", "correct", "examples"):
                totals[key] += float(sums[key])
            for key in ("kept_fraction_param", "kept_fraction_nonparam", "kept_share"):
                totals[key] += float(means[key])
            accuracy = float(sums["correct"]) / float(sums["examples"])
            progress.update(done_in_epoch, [("loss", loss), ("accuracy", accuracy)])
            with writer.as_default(step=step_now):
                tf.summary.scalar("train/loss", loss)
                tf.summary.scalar("train/accuracy", accuracy)
                tf.summary.scalar("learning_rate/weights", learning_rate)
                tf.summary.scalar("learning_rate/alpha", config.alpha_learning_rate)
                for key in ("kept_fraction_param", "kept_fraction_nonparam", "kept_share"):
                    tf.summary.scalar(f"dropout/{key}", float(means[key]) / num_steps)
            if (config.checkpoint_every_steps
                    and step_now % config.checkpoint_every_steps == 0):
                manager.save(checkpoint_number=step_now)

        derived = genotype_lib.derive(network.alpha_normal.numpy(),
                                      network.alpha_reduce.numpy(), space, config.nodes)
        genotype_lib.save(derived, genotype_path)
        steps_done = max(totals["steps"], 1)
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
            "seconds": time.time() - epoch_started,
            "warmup": warmup,
        }
        files.append_jsonl(metrics_path, record, keep=lambda r: r["epoch"] <= epoch)
        files.append_jsonl(alphas_path, _alpha_record(epoch + 1, step_now, network),
                           keep=lambda r: r["epoch"] <= epoch)
        with writer.as_default(step=step_now):
            tf.summary.scalar("epoch/loss", record["loss"])
            tf.summary.scalar("epoch/accuracy", record["accuracy"])
            tf.summary.scalar("genotype/skip_connections_normal",
                              record["skip_connections_normal"])
            tf.summary.text("genotype", derived.to_text().replace("\n", "  \n"))
        writer.flush()
        manager.save(checkpoint_number=step_now)
        if derived.skip_count("normal") > 2:
            logging.warning(
                "Epoch %d: the derived normal cell has %d skip connections; "
                "DARTS-style searches that collapse towards skip connections "
                "end like this.", epoch + 1, derived.skip_count("normal"))
        logging.info(
            "Epoch %d/%d: loss %.4f, accuracy %.4f, lr %.5f, kept param %.3f "
            "nonparam %.3f, %.0f s. Genotype:\n%s", epoch + 1, config.epochs,
            record["loss"], record["accuracy"], learning_rate,
            record["kept_fraction_param"], record["kept_fraction_nonparam"],
            record["seconds"], derived.to_text())
        last_record = record

    derived = genotype_lib.derive(network.alpha_normal.numpy(),
                                  network.alpha_reduce.numpy(), space, config.nodes)
    genotype_lib.save(derived, genotype_path)
    if not last_record:
        previous = files.read_jsonl(metrics_path)
        last_record = previous[-1] if previous else {}
    summary = {
        "genotype": derived.to_dict(),
        "final_epoch": last_record,
        "steps": step_now,
        "seconds_this_run": time.time() - started,
        "train_examples": split.num_examples,
    }
    files.write_json(os.path.join(config.model_dir, "search_summary.json"), summary)
    return summary
