"""Train a derived network from scratch (the evaluation phase of DropNAS).

Run it as a program:

    python -m dropnas_tf.train --genotype=dropnas_cifar10 --model_dir=DIR \\
        --flagfile=flags/train_cifar10.flags

or call `run_training(TrainConfig(...))` from Python. Re-running the same
command on the same --model_dir resumes from the latest checkpoint, which is
written at the end of every epoch.

Outputs in --model_dir: config.json and genotype.json (what `export` needs to
rebuild the model), checkpoints/ (latest), best/ (highest test top-1),
summaries/ (TensorBoard), metrics.jsonl (one line per epoch),
final.weights.h5, train_summary.json and, with --export, saved_model/.
"""

import dataclasses
import json
import math
import os
import sys
import time

import keras
import tensorflow as tf
from absl import app, flags, logging
from tensorflow.core.framework import summary_pb2

from dropnas_tf import errors
from dropnas_tf import data, distribute, export, genotype as genotype_lib, optimizers
from dropnas_tf import ops, precision, run_utils
from dropnas_tf import flags as shared_flags
from dropnas_tf.derived import drop_path as drop_path_lib
from dropnas_tf.derived import network

VARIANTS = ("cifar", "imagenet")
LR_DECAYS = ("cosine", "exponential")
DEFAULT_IMAGE_SIZE = {"cifar": 32, "imagenet": 224}

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
FINAL_WEIGHTS_FILE = "final.weights.h5"
SUMMARIES_DIR = "summaries"
SAVED_MODEL_DIR = "saved_model"

# Settings that may differ when a run resumes: they do not change the model,
# the optimization or the data order.
RESUME_INDEPENDENT = frozenset({
    "model_dir", "data_dir", "download", "strategy", "num_gpus", "cpu_replicas",
    "tpu", "tpu_zone", "gcp_project", "steps_per_loop", "overwrite",
    "eval_batch_size", "export", "jit_compile", "checkpoint_every_steps",
    "sync_batch_norm",
})


class ConfigError(errors.UserInputError):
    """A training setting is invalid, or --model_dir contains a run with other settings."""


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; the defaults are the CIFAR-10 reference.

    Attributes mirror the command-line flags of the same names (see
    `define_flags` for their meaning).
    """

    genotype: str = "dropnas_cifar10"
    model_dir: str = ""
    variant: str = "cifar"
    dataset: str = "cifar10"
    data_dir: str = None
    download: bool = False
    train_examples: int = 0
    holdout_examples: int = 0
    eval_split: str = "test"
    test_examples: int = 0
    image_size: int = 0
    epochs: int = 600
    batch_size: int = 192
    eval_batch_size: int = 256
    learning_rate: float = 0.05
    lr_decay: str = "cosine"
    lr_decay_rate: float = 0.97
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 3.0
    layers: int = 20
    init_channels: int = 36
    auxiliary_weight: float = 0.4
    cutout: int = 16
    drop_path_prob: float = 0.2
    label_smoothing: float = 0.0
    seed: int = 2
    strategy: str = "default"
    num_gpus: int = 0
    cpu_replicas: int = 1
    sync_batch_norm: bool = False
    tpu: str = None
    tpu_zone: str = None
    gcp_project: str = None
    steps_per_loop: int = 10
    jit_compile: bool = None
    mixed_precision: str = "float32"
    checkpoint_every_steps: int = 0
    overwrite: bool = False
    export: bool = True

    @property
    def resolved_image_size(self):
        return self.image_size or DEFAULT_IMAGE_SIZE[self.variant]


def validate_config(config):
    """Checks value ranges that flags cannot express.

    Raises:
      ConfigError: naming the invalid setting and its value.
    """
    if not config.model_dir:
        raise ConfigError("`model_dir` must be set.")
    if config.variant not in VARIANTS:
        raise ConfigError(f"`variant` must be one of {VARIANTS}, received: {config.variant!r}")
    if config.lr_decay not in LR_DECAYS:
        raise ConfigError(f"`lr_decay` must be one of {LR_DECAYS}, received: {config.lr_decay!r}")
    positive = ("epochs", "batch_size", "eval_batch_size", "layers", "init_channels",
                "steps_per_loop")
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"`{name}` must be at least 1, received: {getattr(config, name)}")
    non_negative = ("learning_rate", "momentum", "weight_decay", "grad_clip",
                    "auxiliary_weight", "cutout", "label_smoothing", "image_size",
                    "train_examples", "test_examples")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ConfigError(f"`{name}` must not be negative, received: {getattr(config, name)}")
    if config.mixed_precision not in precision.POLICIES:
        raise ConfigError(f"`mixed_precision` must be one of {precision.POLICIES}, "
                          f"received: {config.mixed_precision!r}")
    if config.init_channels % 2:
        raise ConfigError(f"`init_channels` must be even, received: {config.init_channels}")
    if not 0.0 <= config.drop_path_prob < 1.0:
        raise ConfigError(f"`drop_path_prob` must be in [0, 1), received: {config.drop_path_prob}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"`label_smoothing` must be in [0, 1), received: {config.label_smoothing}")
    if config.lr_decay == "exponential" and not 0.0 < config.lr_decay_rate <= 1.0:
        raise ConfigError(f"`lr_decay_rate` must be in (0, 1], received: {config.lr_decay_rate}")


def learning_rate_at(config, epoch):
    """Returns the learning rate of 0-based `epoch`, held for the whole epoch.

    Cosine decay goes from `learning_rate` at epoch 0 towards 0 at epoch
    `epochs`; exponential decay multiplies by `lr_decay_rate` every epoch.
    """
    if config.lr_decay == "cosine":
        return 0.5 * config.learning_rate * (1.0 + math.cos(math.pi * epoch / config.epochs))
    return config.learning_rate * config.lr_decay_rate ** epoch


def drop_path_rate_at(config, epoch):
    """Returns the drop path rate of 0-based `epoch`: rising linearly from 0."""
    return config.drop_path_prob * epoch / config.epochs


# `tf.summary.scalar` needs the tensorboard package; writing the tensor with
# the scalar plugin's metadata produces the same event without it.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


def write_scalar(name, value):
    """Writes a TensorBoard scalar to the default summary writer at its step."""
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)


# ---------------------------------------------------------------------------
# Run directory: configuration, resume checks, metrics file.


def _run_config(config, num_classes, class_names, mean, std, drop_path):
    return {
        "train_config": dataclasses.asdict(config),
        "model": {
            "variant": config.variant,
            "num_classes": num_classes,
            "channels": config.init_channels,
            "num_cells": config.layers,
            "auxiliary": config.auxiliary_weight > 0,
            "image_size": config.resolved_image_size,
            "drop_path": drop_path,
        },
        "data": {"dataset": config.dataset, "class_names": list(class_names),
                 "mean": list(mean), "std": list(std)},
    }


def _run_outputs(model_dir):
    return [os.path.join(model_dir, name) for name in (
        export.CHECKPOINT_DIR, export.BEST_CHECKPOINT_DIR, SUMMARIES_DIR,
        SAVED_MODEL_DIR, METRICS_FILE, SUMMARY_FILE, FINAL_WEIGHTS_FILE,
        export.RUN_CONFIG_FILE, export.GENOTYPE_FILE, "genotype.txt")]


def prepare_model_dir(config, run_config, genotype):
    """Writes config.json and genotype.json, checking a run being resumed.

    With `overwrite`, the outputs of an earlier run in `model_dir` are deleted
    first. Otherwise an earlier run must have the same settings, except those
    in `RESUME_INDEPENDENT`.

    Raises:
      ConfigError: if `model_dir` contains a run with other settings.
    """
    model_dir = config.model_dir
    tf.io.gfile.makedirs(model_dir)
    config_path = os.path.join(model_dir, export.RUN_CONFIG_FILE)
    if config.overwrite:
        for path in _run_outputs(model_dir):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            elif tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
    elif tf.io.gfile.exists(config_path):
        with tf.io.gfile.GFile(config_path) as f:
            try:
                previous = json.load(f)
            except json.JSONDecodeError:
                previous = None
        if not isinstance(previous, dict) or "train_config" not in previous:
            raise ConfigError(
                f"{config_path} is not the settings file of a dropnas_tf.train run. "
                "Use another --model_dir, or pass --overwrite to replace it.")
        previous_genotype = genotype_lib.load(os.path.join(model_dir, export.GENOTYPE_FILE))
        differences = [
            f"{key}: {previous['train_config'].get(key)!r} -> {value!r}"
            for key, value in run_config["train_config"].items()
            if key not in RESUME_INDEPENDENT
            and key != "genotype"
            and previous["train_config"].get(key) != value
        ]
        if previous_genotype != genotype:
            differences.append("the genotype differs")
        if differences:
            raise ConfigError(
                f"{model_dir} contains a run with other settings ("
                + "; ".join(differences)
                + "). Use another --model_dir, or pass --overwrite to delete that run."
            )
    genotype_lib.write_atomic(config_path, json.dumps(run_config, indent=2) + "\n")
    genotype_lib.save(genotype, os.path.join(model_dir, export.GENOTYPE_FILE))


def _read_metrics(path, completed_epochs):
    """Returns the metric records of the epochs a restored checkpoint covers."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r["epoch"] <= completed_epochs]


def _write_metrics(path, records):
    genotype_lib.write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


# ---------------------------------------------------------------------------
# Training and evaluation steps.


class Trainer:
    """The model, optimizer, state variables and compiled steps of one run."""

    def __init__(self, config, strategy, genotype, num_classes, mean, std,
                 steps_per_epoch):
        self.config = config
        self.strategy = strategy
        self.num_classes = num_classes
        self.mean, self.std = mean, std
        self.steps_per_epoch = steps_per_epoch
        self.auxiliary = config.auxiliary_weight > 0
        self.use_drop_path = config.drop_path_prob > 0
        with strategy.scope(), ops.synchronized_batch_norm(config.sync_batch_norm):
            keras.utils.set_random_seed(config.seed)
            self.model = network.build_model(
                config.variant, genotype, num_classes, config.init_channels,
                config.layers, self.auxiliary, config.resolved_image_size,
                drop_path=self.use_drop_path,
            )
            self.inference = network.inference_model(self.model)
            # The train step all-reduces and clips gradients itself, so this SGD
            # applies them without summing over replicas again.
            # NOTE: Keras SGD folds the learning rate into the momentum buffer
            # (m = momentum * m - lr * g), while PyTorch applies it after
            # (v = momentum * v + g). The updates match within an epoch and
            # differ slightly right after each per-epoch learning rate change.
            self.optimizer = optimizers.SGD(learning_rate=float(config.learning_rate),
                                            momentum=float(config.momentum))
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.best_top1 = tf.Variable(-1.0, dtype=tf.float64, trainable=False,
                                         name="best_top1")
            self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                             name="train_seconds")
            self.loss_scale = None
            if config.mixed_precision == "mixed_float16":
                self.loss_scale = precision.DynamicLossScale()
        items = dict(model=self.model, optimizer=self.optimizer, step=self.step,
                     epoch=self.epoch, best_top1=self.best_top1,
                     train_seconds=self.train_seconds)
        if self.loss_scale:
            items.update(self.loss_scale.checkpoint_items())
        self.checkpoint = tf.train.Checkpoint(**items)
        self.replica_train_step = self._replica_train_step
        self._gradients = self._forward_backward
        if config.jit_compile:
            self.replica_train_step, self._gradients = distribute.compile_replica_step(
                strategy, self._replica_train_step, self._forward_backward)
        self.train_loop = tf.function(self._train_loop)
        self.eval_step = tf.function(self._eval_step)

    def _per_example_loss(self, labels, logits):
        if self.config.label_smoothing > 0:
            targets = tf.one_hot(labels, self.num_classes)
            return keras.losses.categorical_crossentropy(
                targets, logits, from_logits=True,
                label_smoothing=self.config.label_smoothing)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)

    def _forward_backward(self, images, labels):
        """Returns the summed loss, logits and this replica's gradients."""
        config = self.config
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            if self.auxiliary:
                outputs = [tf.cast(o, tf.float32) for o in outputs]
            else:
                outputs = tf.cast(outputs, tf.float32)
            logits = outputs[0] if self.auxiliary else outputs
            loss_sum = tf.reduce_sum(self._per_example_loss(labels, logits))
            if self.auxiliary:
                aux_loss = tf.reduce_sum(self._per_example_loss(labels, outputs[1]))
                loss_sum += config.auxiliary_weight * aux_loss
            # Per-example losses summed over the replica and divided by the
            # global batch, so summing gradients over replicas gives the mean.
            loss = loss_sum / config.batch_size
            if self.loss_scale:
                loss = self.loss_scale.scale_loss(loss)
        return loss_sum, logits, tape.gradient(loss, self.model.trainable_variables)

    def _replica_train_step(self, images, labels):
        variables = self.model.trainable_variables
        loss_sum, logits, gradients = self._gradients(images, labels)
        gradients = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, gradients)
        if self.loss_scale:
            gradients, finite = self.loss_scale.unscale(gradients)
            precision.run_if_finite(
                finite, lambda gradients: self._apply(gradients, variables), (gradients,))
            self.loss_scale.update(finite)
        else:
            self._apply(gradients, variables)
        correct = tf.reduce_sum(tf.cast(
            tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32))
        return loss_sum, correct

    def _apply(self, gradients, variables):
        config = self.config
        if config.grad_clip > 0:
            gradients, _ = tf.clip_by_global_norm(gradients, config.grad_clip)
        # L2 weight decay on every weight, added after clipping, as PyTorch's
        # SGD(weight_decay=...) does in the DARTS reference.
        if config.weight_decay > 0:
            gradients = [g + config.weight_decay * v for g, v in zip(gradients, variables)]
        self.optimizer.apply_gradients(zip(gradients, variables))

    def _train_loop(self, iterator, num_steps):
        """Runs `num_steps` steps; returns summed loss and correct predictions."""
        loss_total = tf.constant(0.0)
        correct_total = tf.constant(0.0)
        for _ in tf.range(num_steps):
            images, labels = next(iterator)
            loss_sum, correct = self.strategy.run(self.replica_train_step,
                                                  args=(images, labels))
            loss_total += self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None)
            correct_total += self.strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
        self.step.assign_add(tf.cast(num_steps, tf.int64))
        return loss_total, correct_total

    def _eval_step(self, images, labels):
        def replica_step(images, labels):
            logits = self.inference(data.normalize(images, self.mean, self.std),
                                    training=False)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
            correct = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32))
            count = tf.cast(tf.shape(labels)[0], tf.float32)
            return loss, correct, count

        results = self.strategy.run(replica_step, args=(images, labels))
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None)
                for r in results]

    def evaluate(self, dataset):
        """Returns (mean cross-entropy, top-1) of the inference model on `dataset`."""
        loss, correct, count = 0.0, 0.0, 0.0
        for images, labels in dataset:
            batch_loss, batch_correct, batch_count = self.eval_step(images, labels)
            loss += float(batch_loss)
            correct += float(batch_correct)
            count += float(batch_count)
        return loss / max(count, 1.0), correct / max(count, 1.0)


# ---------------------------------------------------------------------------
# The run.


def _load_data(config):
    imagenet = config.variant == "imagenet"
    # ImageNet images keep their size: training crops and evaluation resizes them.
    size = None if imagenet else config.resolved_image_size
    train_split = data.load_split(config.dataset, config.data_dir, "train",
                                  config.train_examples or None, size, config.download,
                                  holdout_examples=config.holdout_examples)
    test_split = data.load_split(config.dataset, config.data_dir, config.eval_split,
                                 config.test_examples or None, size, config.download,
                                 holdout_examples=config.holdout_examples)
    data.log_split("train", train_split)
    data.log_split("test", test_split)
    return train_split, test_split


def run_training(config):
    """Trains the derived network of `config.genotype` and writes the run outputs.

    Args:
      config: a `TrainConfig`.

    Returns:
      The contents of train_summary.json as a dict.

    Raises:
      ConfigError: for invalid settings or a --model_dir containing another run.
      genotype.GenotypeError, data.DataError: for a bad genotype or data set.
    """
    validate_config(config)
    if config.jit_compile is None:
        config = dataclasses.replace(
            config, jit_compile=distribute.accelerator_present(config.strategy))
    precision.set_policy(config.mixed_precision)
    try:
        with run_utils.PreemptionGuard() as guard:
            return _run_training(config, guard)
    finally:
        precision.set_policy("float32")


def _run_training(config, guard):
    start_time = time.time()
    genotype = genotype_lib.resolve(config.genotype)
    strategy = distribute.make_strategy(config.strategy, config.num_gpus,
                                        config.cpu_replicas, config.tpu,
                                        config.tpu_zone, config.gcp_project)
    replicas = strategy.num_replicas_in_sync
    try:
        distribute.check_jit_compile(strategy, config.jit_compile, config.sync_batch_norm)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.batch_size % replicas:
        raise ConfigError(f"`batch_size` {config.batch_size} is not divisible by the "
                         f"{replicas} replicas.")

    train_split, test_split = _load_data(config)
    steps_per_epoch = train_split.num_examples // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"`batch_size` {config.batch_size} exceeds the "
                         f"{train_split.num_examples} training examples.")
    mean, std = data.normalization_for(config.dataset)
    run_config = _run_config(config, train_split.num_classes, train_split.class_names,
                             mean, std, drop_path=config.drop_path_prob > 0)
    # NOTE: under multi_worker_mirrored every worker writes to --model_dir;
    # the search separates non-chief workers with distribute.worker_output_dir.
    prepare_model_dir(config, run_config, genotype)

    trainer = Trainer(config, strategy, genotype, train_split.num_classes, mean, std,
                      steps_per_epoch)
    model_dir = config.model_dir
    manager = tf.train.CheckpointManager(
        trainer.checkpoint, os.path.join(model_dir, export.CHECKPOINT_DIR), max_to_keep=2)
    best_manager = tf.train.CheckpointManager(
        trainer.checkpoint, os.path.join(model_dir, export.BEST_CHECKPOINT_DIR),
        max_to_keep=1)
    if manager.latest_checkpoint:
        trainer.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info("Resumed from %s at epoch %d, step %d", manager.latest_checkpoint,
                     int(trainer.epoch.numpy()), int(trainer.step.numpy()))

    params = network.count_parameters(trainer.model)
    multiply_adds = network.count_multiply_adds(trainer.model)
    logging.info("Model: %d parameters, %d multiply-adds per image (auxiliary head "
                 "excluded), %d steps per epoch", params, multiply_adds, steps_per_epoch)

    metrics_path = os.path.join(model_dir, METRICS_FILE)
    records = _read_metrics(metrics_path, int(trainer.epoch.numpy()))
    final_top1 = records[-1]["test_top1"] if records else None
    imagenet = config.variant == "imagenet"
    image_size = config.resolved_image_size
    train_stream = data.train_dataset(
        train_split, config.batch_size, config.seed, mean, std, cutout=config.cutout,
        skip_examples=int(trainer.step.numpy()) * config.batch_size, imagenet=imagenet,
        image_size=image_size)
    iterator = iter(strategy.experimental_distribute_dataset(train_stream))
    test_stream = strategy.experimental_distribute_dataset(data.eval_dataset(
        test_split, config.eval_batch_size, imagenet=imagenet, image_size=image_size))
    writer = tf.summary.create_file_writer(os.path.join(model_dir, SUMMARIES_DIR))

    for epoch in range(int(trainer.epoch.numpy()), config.epochs):
        epoch_start = time.time()
        learning_rate = learning_rate_at(config, epoch)
        drop_rate = drop_path_rate_at(config, epoch)
        trainer.optimizer.learning_rate = learning_rate
        drop_path_lib.set_drop_path_rate(trainer.model, drop_rate)
        logging.info("Epoch %d/%d: learning rate %.6g, drop path rate %.4g",
                     epoch + 1, config.epochs, learning_rate, drop_rate)

        try:
            train_loss, train_top1 = _train_epoch(trainer, iterator, epoch, writer,
                                                  manager, guard)
            test_loss, test_top1 = trainer.evaluate(test_stream)
        except tf.errors.InvalidArgumentError:
            unreadable = (data.find_unreadable_image(train_split)
                          or data.find_unreadable_image(test_split))
            if unreadable:
                raise data.DataError(unreadable) from None
            raise
        epoch_seconds = time.time() - epoch_start

        trainer.epoch.assign(epoch + 1)
        trainer.train_seconds.assign_add(epoch_seconds)
        improved = test_top1 > float(trainer.best_top1.numpy())
        if improved:
            trainer.best_top1.assign(test_top1)
            best_manager.save(checkpoint_number=epoch + 1)
        manager.save(checkpoint_number=int(trainer.step.numpy()))

        final_top1 = test_top1
        records.append({
            "epoch": epoch + 1, "step": int(trainer.step.numpy()),
            "learning_rate": learning_rate, "drop_path_rate": drop_rate,
            "train_loss": train_loss, "train_top1": train_top1,
            "test_loss": test_loss, "test_top1": test_top1,
            "best_test_top1": float(trainer.best_top1.numpy()), "epoch_seconds": epoch_seconds,
        })
        _write_metrics(metrics_path, records)
        with writer.as_default(step=int(trainer.step.numpy())):
            write_scalar("test/loss", test_loss)
            write_scalar("test/top1", test_top1)
            write_scalar("train/epoch_top1", train_top1)
            write_scalar("learning_rate", learning_rate)
            write_scalar("drop_path_rate", drop_rate)
        writer.flush()
        logging.info(
            "Epoch %d/%d: train loss %.4f top-1 %.2f%%, test loss %.4f top-1 %.2f%% "
            "(best %.2f%%)%s, %.0f s", epoch + 1, config.epochs, train_loss,
            100 * train_top1, test_loss, 100 * test_top1,
            100 * float(trainer.best_top1.numpy()), ", saved as best" if improved else "",
            epoch_seconds)

    summary = _finish(config, trainer, params, multiply_adds, final_top1, start_time)
    if config.export:
        export.export_from_run(model_dir, os.path.join(model_dir, SAVED_MODEL_DIR),
                               checkpoint="latest")
    return summary


def _train_epoch(trainer, iterator, epoch, writer, manager, guard):
    """Trains one epoch; returns its mean loss and top-1 on the training batches.

    Saves a checkpoint every --checkpoint_every_steps steps, and saves one and
    raises `run_utils.PreemptedError` once SIGTERM has arrived.
    """
    config = trainer.config
    done = int(trainer.step.numpy()) - epoch * trainer.steps_per_epoch
    progress = keras.utils.Progbar(trainer.steps_per_epoch,
                                   stateful_metrics=["loss", "top1"])
    progress.update(done)
    loss_total, correct_total, examples = 0.0, 0.0, 0
    while done < trainer.steps_per_epoch:
        num_steps = min(config.steps_per_loop, trainer.steps_per_epoch - done)
        step = int(trainer.step.numpy())
        every = config.checkpoint_every_steps
        if every:
            num_steps = min(num_steps, every - step % every)
        loss_sum, correct = trainer.train_loop(iterator, tf.constant(num_steps))
        step += num_steps
        if not math.isfinite(float(loss_sum)):
            raise errors.NonFiniteLossError(
                f"The training loss became {float(loss_sum)} between steps "
                f"{step - num_steps} and {step}. The last good checkpoint is in "
                f"{manager.directory}; lower --learning_rate and rerun.")
        if every and step % every == 0:
            manager.save(checkpoint_number=step)
        if guard.requested:
            path = manager.save(checkpoint_number=step)
            message = (f"Stopped by SIGTERM at step {step}; checkpoint saved to {path}. "
                       "Rerun the same command to resume.")
            logging.warning("%s", message)
            raise run_utils.PreemptedError(message)
        done += num_steps
        loss_total += float(loss_sum)
        correct_total += float(correct)
        examples += num_steps * config.batch_size
        loss, top1 = loss_total / examples, correct_total / examples
        progress.update(done, values=[("loss", loss), ("top1", top1)])
        with writer.as_default(step=int(trainer.step.numpy())):
            write_scalar("train/loss", float(loss_sum) / (num_steps * config.batch_size))
            write_scalar("train/top1", float(correct) / (num_steps * config.batch_size))
    return loss_total / max(examples, 1), correct_total / max(examples, 1)


def _finish(config, trainer, params, multiply_adds, final_top1, start_time):
    """Writes the final weights and train_summary.json; returns the summary."""
    model_dir = config.model_dir
    weights_path = os.path.join(model_dir, FINAL_WEIGHTS_FILE)
    # Keras requires the .weights.h5 suffix, so the temporary name keeps it.
    temporary = os.path.join(model_dir, f"final.tmp-{os.getpid()}.weights.h5")
    trainer.model.save_weights(temporary)
    tf.io.gfile.rename(temporary, weights_path, overwrite=True)
    summary = {
        "genotype": config.genotype,
        "epochs": int(trainer.epoch.numpy()),
        "steps": int(trainer.step.numpy()),
        "parameters": params,
        "multiply_adds": multiply_adds,
        "best_test_top1": float(trainer.best_top1.numpy()) if float(trainer.best_top1.numpy()) >= 0 else None,
        "final_test_top1": final_top1,
        "train_seconds": float(trainer.train_seconds.numpy()),
        "wall_seconds_this_call": time.time() - start_time,
    }
    genotype_lib.write_atomic(os.path.join(model_dir, SUMMARY_FILE),
                              json.dumps(summary, indent=2) + "\n")
    logging.info("Finished: best test top-1 %s, final test top-1 %s; summary in %s",
                 summary["best_test_top1"], final_top1, os.path.join(model_dir, SUMMARY_FILE))
    return summary


# ---------------------------------------------------------------------------
# Command line.


def define_flags():
    """Defines the training flags; the defaults are the CIFAR-10 reference settings."""
    shared_flags.define_data_flags()
    shared_flags.define_run_flags()
    defaults = TrainConfig()
    flags.DEFINE_string("genotype", defaults.genotype,
                        "Shipped genotype name (dropnas_cifar10) or path of a "
                        "genotype.json written by the search.")
    flags.DEFINE_enum("variant", defaults.variant, list(VARIANTS),
                      "Network: cifar (3x3 stem, 32x32 input) or imagenet (three "
                      "stride-2 stem convolutions, 224x224 input).")
    flags.DEFINE_integer("image_size", defaults.image_size,
                         "Input height and width in pixels; 0 uses 32 for cifar and "
                         "224 for imagenet.", lower_bound=0)

    flags.DEFINE_enum("eval_split", defaults.eval_split, ["test", "holdout"],
                      "Split evaluated after every epoch: the test split, or the "
                      "training images set aside by --holdout_examples.")
    flags.DEFINE_integer("epochs", defaults.epochs, "Training epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", defaults.batch_size,
                         "Global training batch size, summed over replicas.", lower_bound=1)
    flags.DEFINE_integer("eval_batch_size", defaults.eval_batch_size,
                         "Global batch size for test evaluation.", lower_bound=1)

    flags.DEFINE_float("learning_rate", defaults.learning_rate,
                       "Initial SGD learning rate.", lower_bound=0)
    flags.DEFINE_enum("lr_decay", defaults.lr_decay, list(LR_DECAYS),
                      "Per-epoch learning rate decay: cosine to 0 at the last epoch, "
                      "or exponential by --lr_decay_rate.")
    flags.DEFINE_float("lr_decay_rate", defaults.lr_decay_rate,
                       "Per-epoch learning rate factor for --lr_decay=exponential.")
    flags.DEFINE_float("momentum", defaults.momentum, "SGD momentum.", lower_bound=0)
    flags.DEFINE_float("weight_decay", defaults.weight_decay,
                       "L2 weight decay added to the gradient of every weight.",
                       lower_bound=0)
    flags.DEFINE_float("grad_clip", defaults.grad_clip,
                       "Clip the global norm of the replica-summed gradient to this "
                       "value; 0 disables clipping.", lower_bound=0)

    flags.DEFINE_integer("layers", defaults.layers, "Number of cells.", lower_bound=1)
    flags.DEFINE_integer("init_channels", defaults.init_channels,
                         "Operation channels of the first cells (even); reduction "
                         "cells double them.", lower_bound=2)
    flags.DEFINE_float("auxiliary_weight", defaults.auxiliary_weight,
                       "Weight of the auxiliary head's loss; 0 removes the head.",
                       lower_bound=0)

    flags.DEFINE_integer("cutout", defaults.cutout,
                         "Cutout square side in pixels (CIFAR variant); 0 disables it.",
                         lower_bound=0)
    flags.DEFINE_float("drop_path_prob", defaults.drop_path_prob,
                       "Final drop path probability, reached linearly from 0 over "
                       "the epochs; 0 builds the model without drop path.",
                       lower_bound=0, upper_bound=0.99)
    flags.DEFINE_float("label_smoothing", defaults.label_smoothing,
                       "Label smoothing of the training loss.", lower_bound=0,
                       upper_bound=0.99)

    flags.DEFINE_bool("export", defaults.export,
                      "At the end, export the final weights as a SavedModel to "
                      "MODEL_DIR/saved_model.")


def config_from_flags():
    """Returns a `TrainConfig` with every field taken from the flag of the same name."""
    values = {field.name: flags.FLAGS[field.name].value
              for field in dataclasses.fields(TrainConfig)}
    return TrainConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    shared_flags.apply_runtime_flags()
    config = config_from_flags()
    try:
        run_training(config)
    except errors.ReportedError as error:
        logging.error("%s", error)
        sys.exit(getattr(error, "exit_code", 1))


if __name__ == "__main__":
    define_flags()
    app.run(main)
