"""Distribution and XLA: mirrored runs match one device, compiled steps match plain ones.

The mirrored runs split the CPU into two logical devices (--cpu_replicas=2),
so they run anywhere. Synchronized batch normalization makes each replica
normalize with the statistics of the global batch, as one device would.

The networks are small on purpose. Their gradients are not smooth functions
of the input, because ReLU and max pooling switch. In a large network a
rounding difference of 1e-7 can flip one switch and move a weight by 1e-3
(see docs/distribution.md).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import genotype as genotype_lib
from dropnas_tf import search_space
from dropnas_tf import train
from dropnas_tf.derived import drop_path
from dropnas_tf.search.network import SearchNetwork
from dropnas_tf.search.step import SearchStep, StepConfig

TOLERANCE = 1e-5
MIRRORED = ("--strategy=mirrored", "--cpu_replicas=2", "--sync_batch_norm")
XLA = ("--jit_compile", "--nodeterministic")


def _assert_same_checkpoints(read, first, second, skip="seconds"):
    """Compares every float value of two checkpoints, except names containing `skip`."""
    a, b = read(first), read(second)
    assert a.keys() == b.keys()
    compared = 0
    for name, value in a.items():
        if value.dtype.kind != "f" or "seconds" in name or skip in name:
            continue
        np.testing.assert_allclose(b[name], value, rtol=0, atol=TOLERANCE, err_msg=name)
        compared += 1
    assert compared > 20


def _search_args(data_dir, model_dir):
    return ("--dataset=image_folder", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
            "--train_examples=48", "--image_size=8", "--batch_size=16", "--epochs=1",
            "--layers=3", "--init_channels=4", "--nodes=2", "--drop_rate_param=0.3",
            "--drop_rate_nonparam=0.3", "--deterministic", "--steps_per_loop=1")


def test_mirrored_search_matches_default(run_module, checkpoint_values, cifar10_dir, tmp_path):
    single, mirrored = tmp_path / "default", tmp_path / "mirrored"
    for model_dir, extra in ((single, ()), (mirrored, MIRRORED)):
        result = run_module("dropnas_tf.search", *_search_args(cifar10_dir, model_dir), *extra)
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_checkpoints(checkpoint_values, single / "checkpoints", mirrored / "checkpoints")
    assert ((single / "genotype.json").read_text()
            == (mirrored / "genotype.json").read_text())
    alphas = [json.loads((d / "alphas.jsonl").read_text().splitlines()[-1])
              for d in (single, mirrored)]
    for key in ("alpha_normal", "alpha_reduce"):
        np.testing.assert_allclose(alphas[1][key], alphas[0][key], atol=TOLERANCE)


def test_mirrored_xla_search_matches_plain(run_module, checkpoint_values, cifar10_dir,
                                           tmp_path):
    """Without synchronized batch normalization each replica updates its own
    moving averages inside the mixed operations' tf.cond branches. With
    --jit_compile, XLA compiles each replica's forward and backward pass.
    XLA has no deterministic max-pool gradient, so only the plain run is
    --deterministic."""
    plain, compiled = tmp_path / "plain", tmp_path / "xla"
    mirrored = ("--strategy=mirrored", "--cpu_replicas=2")
    for model_dir, extra in ((plain, mirrored), (compiled, mirrored + XLA)):
        result = run_module("dropnas_tf.search", *_search_args(cifar10_dir, model_dir), *extra)
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_checkpoints(checkpoint_values, plain / "checkpoints", compiled / "checkpoints")
    assert (plain / "genotype.json").read_text() == (compiled / "genotype.json").read_text()


def _training_args(cifar10_dir):
    return ("--dataset=image_folder", f"--data_dir={cifar10_dir}", "--train_examples=8",
            "--test_examples=8", "--batch_size=4", "--epochs=1", "--layers=3",
            "--init_channels=4", "--auxiliary_weight=0.4", "--drop_path_prob=0.2",
            "--cutout=8", "--export=false", "--deterministic", "--steps_per_loop=1")


def _compare_trainings(run_module, checkpoint_values, cifar10_dir, first, second,
                       skip="seconds"):
    """Trains twice, `first` and `second` being (model_dir, extra flags) pairs."""
    for model_dir, extra in (first, second):
        result = run_module("dropnas_tf.train", *_training_args(cifar10_dir),
                            f"--model_dir={model_dir}", *extra)
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_checkpoints(checkpoint_values, first[0] / "checkpoints",
                             second[0] / "checkpoints", skip)


def test_mirrored_training_matches_default(run_module, checkpoint_values, cifar10_dir,
                                           tmp_path):
    _compare_trainings(run_module, checkpoint_values, cifar10_dir,
                       (tmp_path / "default", ()), (tmp_path / "mirrored", MIRRORED))


def test_mirrored_xla_training_matches_plain(run_module, checkpoint_values, cifar10_dir,
                                             tmp_path):
    """Compares the weights and batch-norm statistics, without the auxiliary
    head. With 2 images per replica, XLA's rounding moved the auxiliary head's
    statistics and the momentum (raw gradients) by up to 5e-5."""
    mirrored = ("--strategy=mirrored", "--cpu_replicas=2", "--auxiliary_weight=0")
    _compare_trainings(run_module, checkpoint_values, cifar10_dir,
                       (tmp_path / "plain", mirrored),
                       (tmp_path / "xla", mirrored + XLA), skip="optimizer")


def _batches(count, image_size=16, batch=8):
    rng = np.random.default_rng(0)
    return [(tf.constant(rng.normal(size=(batch, image_size, image_size, 3)), tf.float32),
             tf.constant(rng.integers(0, 10, size=batch), tf.int32)) for _ in range(count)]


def _search_after_steps(jit_compile):
    tf.keras.utils.set_random_seed(0)
    network = SearchNetwork(10, channels=4, num_cells=3, num_nodes=2,
                            space=search_space.SEARCH_SPACES["original"])
    network.build_variables((16, 16, 3))
    config = StepConfig(steps_per_epoch=10, epochs=2, drop_rate_param=0.3,
                        drop_rate_nonparam=0.3, seed=3)
    step = SearchStep(network, config, global_batch_size=8)
    run = tf.function(lambda images, labels: step(images, labels), jit_compile=jit_compile)
    losses = [float(run(images, labels)["loss"]) for images, labels in _batches(3)]
    variables = network.weight_variables + network.alpha_variables + network.non_trainable_weights
    # Paths differ between the two networks (Keras numbers repeated names), so
    # the variables pair up by their creation order.
    return losses, [(v.path.split("/", 1)[-1], v.numpy()) for v in variables]


def test_search_step_compiles_with_xla_and_matches():
    plain_losses, plain = _search_after_steps(jit_compile=False)
    compiled_losses, compiled = _search_after_steps(jit_compile=True)
    np.testing.assert_allclose(compiled_losses, plain_losses, rtol=1e-5)
    assert [name for name, _ in compiled] == [name for name, _ in plain]
    for (name, value), (_, compiled_value) in zip(plain, compiled):
        np.testing.assert_allclose(compiled_value, value, atol=TOLERANCE, err_msg=name)


def _training_after_steps(jit_compile):
    config = train.TrainConfig(layers=3, init_channels=4, batch_size=8, auxiliary_weight=0.4,
                               drop_path_prob=0.2, learning_rate=0.05, jit_compile=jit_compile,
                               image_size=32)
    trainer = train.Trainer(config, tf.distribute.get_strategy(),
                            genotype_lib.resolve("dropnas_cifar10"), 10, (0.0,) * 3,
                            (1.0,) * 3, steps_per_epoch=10)
    for layer in drop_path.drop_path_layers(trainer.model):
        layer.rate.assign(0.2)
    dataset = tf.data.Dataset.from_tensor_slices(tuple(
        tf.concat(parts, axis=0) for parts in zip(*_batches(3, image_size=32)))).batch(8)
    loss, _ = trainer.train_loop(iter(dataset), tf.constant(3))
    return float(loss), {v.path: v.numpy() for v in trainer.model.weights}


def test_train_step_compiles_with_xla_and_matches():
    plain_loss, plain = _training_after_steps(jit_compile=False)
    compiled_loss, compiled = _training_after_steps(jit_compile=True)
    assert compiled_loss == pytest.approx(plain_loss, rel=1e-5)
    for name, value in plain.items():
        np.testing.assert_allclose(compiled[name], value, atol=TOLERANCE, err_msg=name)
