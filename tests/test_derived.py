"""Tests of the derived network, drop path and one training step."""

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import data, genotype, train
from dropnas_tf.derived import drop_path, network

NUM_CLASSES = 10
# Three cells: cells 1 and 2 are reduction cells, so 32x32 inputs reach the
# auxiliary head at 8x8, as in the full network.
TINY = dict(channels=8, num_cells=3, image_size=32)

DARTS_V2 = genotype.Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
            ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2),
            ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2),
            ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)


@pytest.fixture(scope="module")
def aux_model():
    return network.build_cifar_model(genotype.DROPNAS_CIFAR10, NUM_CLASSES,
                                     auxiliary=True, drop_path=True, **TINY)


@pytest.fixture(scope="module")
def plain_model():
    return network.build_cifar_model(genotype.DROPNAS_CIFAR10, NUM_CLASSES,
                                     auxiliary=False, drop_path=False, **TINY)


@pytest.fixture(scope="module")
def images():
    return tf.random.stateless_normal([6, 32, 32, 3], seed=[1, 2])


def test_output_shapes_with_and_without_aux(aux_model, plain_model, images):
    logits, aux_logits = aux_model(images, training=False)
    assert logits.shape == (6, NUM_CLASSES)
    assert aux_logits.shape == (6, NUM_CLASSES)
    assert plain_model(images, training=False).shape == (6, NUM_CLASSES)
    inference = network.inference_model(aux_model)
    assert inference(images, training=False).shape == (6, NUM_CLASSES)


def test_inference_model_shares_layers(aux_model, images):
    inference = network.inference_model(aux_model)
    logits, _ = aux_model(images, training=False)
    np.testing.assert_allclose(inference(images, training=False), logits, rtol=0, atol=0)
    assert not any(layer.name.startswith("aux") for layer in inference.layers)


def test_counts_exclude_aux_head(aux_model, plain_model):
    assert network.count_parameters(aux_model) == network.count_parameters(plain_model)
    assert network.count_multiply_adds(aux_model) == network.count_multiply_adds(plain_model)
    all_weights = sum(int(np.prod(w.shape)) for w in aux_model.trainable_weights)
    assert network.count_parameters(aux_model) < all_weights


def test_darts_v2_parameter_count():
    # The DARTS reference reports 3,349,342 parameters for this cell at 20
    # cells and 36 channels (auxiliary head excluded).
    model = network.build_cifar_model(DARTS_V2, 10, drop_path=False)
    assert network.count_parameters(model) == 3_349_342
    assert 500e6 < network.count_multiply_adds(model) < 560e6


def test_reduction_cells_halve_the_map(aux_model):
    assert network.reduction_cells(3) == [1, 2]
    assert network.reduction_cells(20) == [6, 13]
    assert aux_model.get_layer("cell0_output").output.shape[1:] == (32, 32, 32)
    assert aux_model.get_layer("cell1_output").output.shape[1:] == (16, 16, 64)
    assert aux_model.get_layer("cell2_output").output.shape[1:] == (8, 8, 128)


def test_builder_rejects_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        network.build_cifar_model(genotype.DROPNAS_CIFAR10, 10, channels=7, num_cells=3)
    with pytest.raises(ValueError, match="num_classes"):
        network.build_cifar_model(genotype.DROPNAS_CIFAR10, 0, channels=8, num_cells=3)
    with pytest.raises(ValueError, match="auxiliary head"):
        network.build_cifar_model(genotype.DROPNAS_CIFAR10, 10, channels=8,
                                  num_cells=3, image_size=16)
    with pytest.raises(ValueError, match="variant"):
        network.build_model("mnist", genotype.DROPNAS_CIFAR10, 10, 8, 3, False, 32)


def test_imagenet_model_shapes():
    model = network.build_imagenet_model(genotype.DROPNAS_CIFAR10, 7, channels=8,
                                         num_cells=3, image_size=224, drop_path=False)
    logits, aux_logits = model(tf.zeros([1, 224, 224, 3]), training=False)
    assert logits.shape == (1, 7)
    assert aux_logits.shape == (1, 7)
    # The stems reduce 224 to 28; reduction cells 1 and 2 reduce to 14 and 7.
    assert model.get_layer("cell0_output").output.shape[1:3] == (28, 28)
    assert model.get_layer("cell2_output").output.shape[1:3] == (7, 7)
    assert model.get_layer("aux_expand_conv").output.shape[1:3] == (1, 1)


def test_drop_path_layer_drops_whole_samples():
    layer = drop_path.DropPath(initial_rate=0.5, seed=3)
    x = tf.ones([200, 2, 2, 1])
    y = layer(x, training=True).numpy()
    per_sample = y.reshape(200, -1)
    # Each sample is either all zeros or all 1 / (1 - 0.5).
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    dropped = np.sum(per_sample[:, 0] == 0.0)
    assert 50 < dropped < 150
    second = layer(x, training=True).numpy()
    assert not np.array_equal(y, second)


def test_drop_path_layer_identity_at_inference():
    layer = drop_path.DropPath(initial_rate=0.5)
    x = tf.random.stateless_normal([8, 3, 3, 2], seed=[0, 1])
    np.testing.assert_array_equal(layer(x, training=False), x)
    layer.rate.assign(0.0)
    np.testing.assert_array_equal(layer(x, training=True), x)


def test_drop_path_layer_config_and_validation():
    layer = drop_path.DropPath(initial_rate=0.25, seed=7, name="dp")
    config = layer.get_config()
    assert config["initial_rate"] == 0.25
    assert config["seed"] == 7
    assert drop_path.DropPath.from_config(config).initial_rate == 0.25
    with pytest.raises(ValueError, match="1.0"):
        drop_path.DropPath(initial_rate=1.0)
    with pytest.raises(ValueError, match="seed"):
        drop_path.DropPath(seed="x")


def test_model_drop_path_active_only_in_training(aux_model, images):
    assert len(drop_path.drop_path_layers(aux_model)) > 0
    drop_path.set_drop_path_rate(aux_model, 0.5)
    try:
        first, _ = aux_model(images, training=True)
        second, _ = aux_model(images, training=True)
        assert not np.allclose(first, second)
        inference = network.inference_model(aux_model)
        np.testing.assert_array_equal(inference(images, training=False),
                                      inference(images, training=False))
    finally:
        drop_path.set_drop_path_rate(aux_model, 0.0)


def test_train_step_on_real_images(cifar10_dir):
    config = train.TrainConfig(model_dir="unused", dataset="image_folder",
                               layers=3, init_channels=8, batch_size=16, epochs=2,
                               drop_path_prob=0.2, cutout=16)
    split = data.load_split("image_folder", cifar10_dir, "train", 32, 32)
    mean, std = data.normalization_for("cifar10")
    strategy = tf.distribute.get_strategy()
    trainer = train.Trainer(config, strategy, genotype.DROPNAS_CIFAR10,
                            split.num_classes, mean, std, steps_per_epoch=2)
    drop_path.set_drop_path_rate(trainer.model, 0.1)
    before = [w.numpy().copy() for w in trainer.model.trainable_weights]
    iterator = iter(data.train_dataset(split, 16, seed=1, mean=mean, std=std, cutout=16))
    loss_sum, correct = trainer.train_loop(iterator, tf.constant(1))
    assert int(trainer.step) == 1
    assert np.isfinite(float(loss_sum))
    assert 0 <= float(correct) <= 16
    after = trainer.model.trainable_weights
    changed = [not np.array_equal(b, a.numpy()) for b, a in zip(before, after)]
    assert all(changed)
