"""Tests of the SavedModel export and of `dropnas_tf.evaluate`."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import data, export, genotype
from dropnas_tf.derived import drop_path, network

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = data.normalization_for("cifar10")

# Loads the SavedModel with TensorFlow alone and writes its outputs.
LOAD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    saved_model, images_path, output_path = sys.argv[1:]
    loaded = tf.saved_model.load(saved_model)
    serve = loaded.signatures["serving_default"]
    outputs = serve(images=tf.constant(np.load(images_path)))
    again = serve(images=tf.constant(np.load(images_path)))
    np.savez(output_path, probabilities=outputs["probabilities"].numpy(),
             classes=outputs["classes"].numpy(),
             again=again["probabilities"].numpy(),
             input_dtype=str(serve.structured_input_signature[1]["images"].dtype.name),
             imported=str(any(name.startswith("dropnas_tf") for name in sys.modules)))
""")


@pytest.fixture(scope="module")
def model():
    built = network.build_cifar_model(genotype.DROPNAS_CIFAR10, 10, channels=8,
                                      num_cells=3, auxiliary=True, drop_path=True)
    # Drop path stays in the graph with a high rate; the export must ignore it.
    drop_path.set_drop_path_rate(built, 0.5)
    return built


@pytest.fixture(scope="module")
def saved_model(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "saved_model")
    export.export_saved_model(network.inference_model(model), path, MEAN, STD, 32,
                              class_names=[f"class{i}" for i in range(10)])
    return path


def _subprocess_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    return env


def test_export_layout(saved_model):
    assert tf.saved_model.contains_saved_model(saved_model)
    extra = os.path.join(saved_model, export.EXTRA_DIR)
    with open(os.path.join(extra, "class_names.txt")) as f:
        assert f.read().split() == [f"class{i}" for i in range(10)]
    with open(os.path.join(extra, "export_info.json")) as f:
        assert json.load(f)["image_size"] == 32
    leftovers = [name for name in os.listdir(os.path.dirname(saved_model))
                 if ".tmp-" in name or ".old-" in name]
    assert leftovers == []


def test_export_matches_keras_in_fresh_process(model, saved_model, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, [5, 32, 32, 3], dtype=np.uint8)
    images_path = str(tmp_path / "images.npy")
    output_path = str(tmp_path / "outputs.npz")
    np.save(images_path, images)
    # Run outside the repository so that `dropnas_tf` is not importable.
    subprocess.run([sys.executable, "-c", LOAD_SCRIPT, saved_model, images_path,
                    output_path], check=True, cwd=str(tmp_path), env=_subprocess_env())
    outputs = np.load(output_path)

    assert str(outputs["imported"]) == "False"
    assert str(outputs["input_dtype"]) == "uint8"
    probabilities = outputs["probabilities"]
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Drop path is inactive in the export: two calls give the same output.
    np.testing.assert_array_equal(outputs["again"], probabilities)

    logits = network.inference_model(model)(data.normalize(images, MEAN, STD),
                                            training=False)
    expected = tf.nn.softmax(logits).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(outputs["classes"], np.argmax(logits, axis=1))


def test_export_replaces_earlier_export(model, tmp_path):
    path = str(tmp_path / "saved_model")
    inference = network.inference_model(model)
    export.export_saved_model(inference, path, MEAN, STD, 32)
    export.export_saved_model(inference, path, MEAN, STD, 32)
    assert tf.saved_model.contains_saved_model(path)
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_evaluate_matches_keras(model, saved_model, cifar10_dir, tmp_path):
    report_path = str(tmp_path / "report.json")
    subprocess.run(
        [sys.executable, "-m", "dropnas_tf.evaluate", f"--saved_model={saved_model}",
         "--dataset=image_folder", f"--data_dir={cifar10_dir}", "--test_examples=100",
         "--batch_size=32", f"--report={report_path}"],
        check=True, cwd=REPO_ROOT, env=_subprocess_env(),
    )
    with open(report_path) as f:
        report = json.load(f)

    split = data.load_split("image_folder", cifar10_dir, "test", 100, 32)
    inference = network.inference_model(model)
    correct = 0
    for images, labels in data.eval_dataset(split, 50):
        logits = inference(data.normalize(images, MEAN, STD), training=False)
        correct += int(np.sum(np.argmax(logits, axis=1) == labels.numpy()))

    assert report["num_examples"] == 100
    assert report["correct_top1"] == correct
    assert report["top1"] == correct / 100
    assert report["top1"] <= report["top5"] <= 1.0
