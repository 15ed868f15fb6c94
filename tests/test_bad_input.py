"""Bad input: each case ends with a clear message, status 1 and untouched outputs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from dropnas_tf import data

TINY_SEARCH = ["--dataset=image_folder", "--train_examples=64", "--layers=3",
               "--nodes=2", "--init_channels=4", "--batch_size=16", "--epochs=1"]
TINY_TRAIN = ["--dataset=image_folder", "--train_examples=64", "--test_examples=32",
              "--layers=3", "--init_channels=8", "--batch_size=16", "--epochs=1",
              "--export=false"]
CLASSES = ("cat", "dog")


def write_image(path, image, encoding="png"):
    encoded = (tf.io.encode_png(image) if encoding == "png"
               else tf.io.encode_jpeg(image))
    tf.io.write_file(str(path), encoded)


def make_folder(root, per_class=12, size=32, splits=("train", "test"), classes=CLASSES):
    rng = np.random.default_rng(0)
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                image = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
                write_image(folder / f"{index:03d}.png", image)
    return root


@pytest.fixture
def model_dir(tmp_path):
    """A model directory holding the outputs of an earlier run."""
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "genotype.json").write_text('{"earlier": "run"}\n')
    return directory


def record_message(stderr):
    """Appends the error line a user sees to $DROPNAS_BAD_INPUT_REPORT, if set.

    tools/bad_input_table.py turns the records into docs/bad-input.md.
    """
    report = os.environ.get("DROPNAS_BAD_INPUT_REPORT")
    if not report:
        return
    errors = [line.split("] ", 1)[-1] for line in stderr.splitlines()
              if (line.startswith("E") and "] " in line)
              or line.startswith("FATAL Flags parsing error")]
    case = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
    with open(report, "a") as f:
        f.write(json.dumps({"case": case, "message": errors[-1] if errors else ""}) + "\n")


def assert_rejected(result, *fragments, model_dir=None):
    record_message(result.stderr)
    assert result.returncode == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    if model_dir is not None:
        assert (model_dir / "genotype.json").read_text() == '{"earlier": "run"}\n'
        assert not (model_dir / "config.json").exists()


def test_missing_data_dir(run_module, model_dir, tmp_path):
    missing = tmp_path / "absent"
    result = run_module("dropnas_tf.search", f"--model_dir={model_dir}",
                        f"--data_dir={missing}", *TINY_SEARCH)
    assert_rejected(result, f"--data_dir='{missing}' is not a directory", model_dir=model_dir)


def test_empty_data_dir(run_module, model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_module("dropnas_tf.search", f"--model_dir={model_dir}",
                        f"--data_dir={empty}", *TINY_SEARCH)
    assert_rejected(result, f"Split folder not found: {empty}/train", model_dir=model_dir)


def test_missing_test_split(run_module, model_dir, tmp_path):
    root = make_folder(tmp_path / "images", splits=("train",))
    result = run_module("dropnas_tf.train", f"--model_dir={model_dir}",
                        f"--data_dir={root}", *TINY_TRAIN)
    assert_rejected(result, f"Split folder not found: {root}/test", model_dir=model_dir)


def test_class_folders_differ(run_module, model_dir, tmp_path):
    root = make_folder(tmp_path / "images")
    make_folder(root, splits=("test",), classes=("bird",))
    result = run_module("dropnas_tf.train", f"--model_dir={model_dir}",
                        f"--data_dir={root}", *TINY_TRAIN)
    assert_rejected(result, "Class folders of test/ (bird, cat, dog) differ from those "
                    "of train/ (cat, dog)", model_dir=model_dir)


def test_corrupt_image_named(run_module, tmp_path):
    root = make_folder(tmp_path / "images", per_class=40)
    corrupt = root / "train" / "dog" / "007.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 20)
    model_dir = tmp_path / "run"
    result = run_module("dropnas_tf.search", f"--model_dir={model_dir}",
                        f"--data_dir={root}", *TINY_SEARCH)
    assert_rejected(result, f"Cannot read image {corrupt}")
    assert not (model_dir / "genotype.json").exists()


def test_unknown_dataset(run_module, model_dir):
    result = run_module("dropnas_tf.search", f"--model_dir={model_dir}",
                        "--dataset=mnist")
    assert_rejected(result, "--dataset", "mnist", model_dir=model_dir)


@pytest.mark.parametrize("flag, message", [
    ("--drop_rate_nonparam=-0.1", "--drop_rate_nonparam must be in [0, 1), received: -0.1"),
    ("--layers=2", "--layers=2 is too small"),
    ("--warmup_epochs=5", "--warmup_epochs=5 must be between 0 and --epochs=1"),
    ("--batch_size=1000", "--batch_size=1000 is larger than the 64 training images"),
    ("--search_space=2-skip", "--search_space"),
], ids=["negative_drop_rate", "two_cells", "warmup_longer_than_search",
        "batch_larger_than_data", "unknown_search_space"])
def test_search_flag_out_of_range(run_module, model_dir, cifar10_dir, flag, message):
    result = run_module("dropnas_tf.search", f"--model_dir={model_dir}",
                        f"--data_dir={cifar10_dir}", *TINY_SEARCH, flag)
    assert_rejected(result, message, model_dir=model_dir)


def test_batch_not_divisible_by_replicas(run_module, model_dir, cifar10_dir):
    result = run_module("dropnas_tf.search", f"--model_dir={model_dir}",
                        f"--data_dir={cifar10_dir}", *TINY_SEARCH, "--batch_size=15",
                        "--strategy=mirrored", "--cpu_replicas=2")
    assert_rejected(result, "--batch_size=15 is not divisible by the 2 replicas",
                    model_dir=model_dir)


@pytest.mark.parametrize("flags, message", [
    (("--deterministic", "--jit_compile"),
     "--deterministic cannot be combined with --jit_compile"),
    (("--strategy=mirrored", "--cpu_replicas=2", "--sync_batch_norm", "--jit_compile"),
     "--jit_compile cannot be combined with --sync_batch_norm over 2 replicas"),
], ids=["deterministic", "sync_batch_norm"])
def test_xla_flag_conflicts(run_module, model_dir, cifar10_dir, flags, message):
    result = run_module("dropnas_tf.search", f"--model_dir={model_dir}",
                        f"--data_dir={cifar10_dir}", *TINY_SEARCH, *flags)
    assert_rejected(result, message, model_dir=model_dir)


@pytest.mark.parametrize("change, message", [
    (lambda g: g["normal"].__setitem__(1, ["conv_9x9", 0]),
     "'normal' node 2 (pair 1): unknown operation 'conv_9x9'"),
    (lambda g: g["reduce"].__setitem__(5, ["sep_conv_3x3", 6]),
     "'reduce' node 4 (pair 5): input index 6 is out of range"),
    (lambda g: g["normal"].pop(), "'normal' must hold two (operation, input) pairs per node"),
], ids=["unknown_operation", "input_out_of_range", "odd_pair_count"])
def test_malformed_genotype(run_module, model_dir, tmp_path, cifar10_dir, change, message):
    from dropnas_tf import genotype as genotype_lib

    content = genotype_lib.DROPNAS_CIFAR10.to_dict()
    change(content)
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(content))
    result = run_module("dropnas_tf.train", f"--model_dir={model_dir}",
                        f"--data_dir={cifar10_dir}", f"--genotype={path}", *TINY_TRAIN)
    assert_rejected(result, message, model_dir=model_dir)


def test_genotype_with_python_code(run_module, model_dir, tmp_path, cifar10_dir):
    marker = tmp_path / "executed"
    path = tmp_path / "genotype.txt"
    path.write_text(f"__import__('os').system('touch {marker}')")
    result = run_module("dropnas_tf.train", f"--model_dir={model_dir}",
                        f"--data_dir={cifar10_dir}", f"--genotype={path}", *TINY_TRAIN)
    assert_rejected(result, "is not a JSON genotype file", model_dir=model_dir)
    assert not marker.exists()


def test_train_model_dir_with_other_settings(run_module, tmp_path, cifar10_dir):
    from dropnas_tf import genotype as genotype_lib

    model_dir = tmp_path / "run"
    model_dir.mkdir()
    settings = {"train_config": {"layers": 20}}
    (model_dir / "config.json").write_text(json.dumps(settings))
    genotype_lib.save(genotype_lib.DROPNAS_CIFAR10, str(model_dir / "genotype.json"))
    result = run_module("dropnas_tf.train", f"--model_dir={model_dir}",
                        f"--data_dir={cifar10_dir}", *TINY_TRAIN)
    record_message(result.stderr)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "layers: 20 -> 3" in result.stderr
    assert "--overwrite" in result.stderr
    assert json.loads((model_dir / "config.json").read_text()) == settings


def test_train_model_dir_with_foreign_config(run_module, tmp_path, cifar10_dir):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    result = run_module("dropnas_tf.train", f"--model_dir={model_dir}",
                        f"--data_dir={cifar10_dir}", *TINY_TRAIN)
    record_message(result.stderr)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "is not the settings file of a dropnas_tf.train run" in result.stderr
    assert (model_dir / "config.json").read_text() == "{}"


def test_grayscale_rgba_and_other_sizes_converted(tmp_path):
    root = make_folder(tmp_path / "images", per_class=2)
    rng = np.random.default_rng(1)
    write_image(root / "train" / "cat" / "gray.png",
                rng.integers(0, 255, size=(32, 32, 1), dtype=np.uint8))
    write_image(root / "train" / "cat" / "rgba.png",
                rng.integers(0, 255, size=(32, 32, 4), dtype=np.uint8))
    write_image(root / "train" / "dog" / "large.jpg",
                rng.integers(0, 255, size=(48, 48, 3), dtype=np.uint8), "jpeg")
    split = data.load_split("image_folder", str(root), "train", image_size=32)
    shapes = {tuple(image.shape) for image, _ in split.dataset}
    assert split.num_examples == 7
    assert shapes == {(32, 32, 3)}


def test_non_square_first_image_rejected(tmp_path):
    root = tmp_path / "images"
    folder = root / "train" / "cat"
    folder.mkdir(parents=True)
    write_image(folder / "wide.png", np.zeros((20, 40, 3), np.uint8))
    with pytest.raises(data.DataError, match="is 40x20 pixels"):
        data.load_split("image_folder", str(root), "train")
