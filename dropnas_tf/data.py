"""Input pipelines: TensorFlow Datasets or an image folder, with augmentation.

Every split is read as a `tf.data.Dataset` of (uint8 image [H, W, 3], int32
label). Training pipelines decode once, cache the decoded images in memory,
shuffle with a fixed seed and augment each image with a stateless random seed
derived from its position in the stream, so a run can resume at any step with
the same data order by skipping the elements it has already consumed.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from dropnas_tf import errors

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TFDS_DATASETS = ("cifar10", "cifar100", "imagenet2012")
DATASETS = TFDS_DATASETS + ("image_folder",)
SPLITS = ("train", "test", "holdout")

# Per-channel mean and standard deviation of the training images, in [0, 1].
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class DataError(errors.UserInputError):
    """A data set cannot be read as requested."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a data set.

    Attributes:
      dataset: (uint8 image [H, W, 3], int32 label) pairs, decoded, in a fixed
        order.
      num_examples: the number of pairs.
      num_classes: the number of classes of the data set.
      class_names: class names in label order.
      paths: the image files in dataset order, for image folders (else
        None), so that a decoding error can name its file.
    """

    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int
    class_names: tuple
    paths: tuple = None


def image_shape(split):
    """Returns the static (height, width, 3) of a split's images."""
    shape = split.dataset.element_spec[0].shape
    if shape.is_fully_defined():
        return tuple(shape)
    return tuple(next(iter(split.dataset.take(1)))[0].shape)


def find_unreadable_image(split):
    """Returns a message naming the first image of `split` that fails to decode.

    Returns None when every image decodes or the split has no file list. Used
    after the input pipeline raised, because TensorFlow's decoding errors do
    not name the file.
    """
    for path in split.paths or ():
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            reason = error.message.splitlines()[0] if error.message else type(error).__name__
            # Drop TensorFlow's "{{function_node ...}}" prefix, which names no file.
            reason = re.sub(r"^\{\{[^}]*\}\}\s*", "", reason)
            return (f"Cannot read image {path}: {reason}. Remove or replace the file, "
                    "then rerun.")
    return None


def normalization_for(dataset_name):
    """Returns (mean, std) for a data set; image folders use CIFAR-10's."""
    return NORMALIZATION.get(dataset_name, NORMALIZATION["cifar10"])


def load_split(dataset_name, data_dir, split, max_examples=None, image_size=None,
               download=False, holdout_examples=0):
    """Reads one split.

    Args:
      dataset_name: a TFDS name from `TFDS_DATASETS`, or "image_folder".
      data_dir: the TFDS data directory, or the image-folder root holding
        `train/` and `test/` with one subfolder per class.
      split: "train", "test", or "holdout": `holdout_examples` training
        images that "train" then leaves out, for validation during tuning.
      max_examples: keep only this many examples (None keeps all). For image
        folders they are drawn by a fixed-seed permutation of the file list,
        so every class is represented.
      image_size: resize images to this square size when they differ from it.
        None keeps the stored size; image folders then take the size of their
        first image.
      download: let TFDS download and prepare the data set if it is missing.
      holdout_examples: training images set aside as the "holdout" split.

    Raises:
      DataError: naming the missing directory, split or data set.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of: {', '.join(SPLITS)}.")
    if split == "holdout" and not holdout_examples:
        raise DataError("The holdout split needs --holdout_examples above 0.")
    if dataset_name == "image_folder":
        return _image_folder_split(data_dir, split, max_examples, image_size,
                                   holdout_examples)
    if dataset_name in TFDS_DATASETS:
        return _tfds_split(dataset_name, data_dir, split, max_examples, image_size,
                           download, holdout_examples)
    raise DataError(
        f"Unknown --dataset={dataset_name!r}. Use one of: {', '.join(DATASETS)}."
    )


def list_classes(root, split):
    """Returns the sorted class folder names of `root/split`."""
    split_dir = os.path.join(root, split)
    if not tf.io.gfile.isdir(split_dir):
        raise DataError(
            f"Split folder not found: {split_dir}. An image folder needs "
            f"train/ and test/, each with one subfolder per class."
        )
    classes = sorted(
        name.rstrip("/") for name in tf.io.gfile.listdir(split_dir)
        if tf.io.gfile.isdir(os.path.join(split_dir, name))
    )
    if not classes:
        raise DataError(f"No class folders in {split_dir}.")
    return classes


def _image_folder_split(root, split, max_examples, image_size, holdout_examples):
    if not root or not tf.io.gfile.isdir(root):
        raise DataError(
            f"--data_dir={root!r} is not a directory. For --dataset=image_folder "
            "point it at a folder holding train/ and test/."
        )
    folder_split = "test" if split == "test" else "train"
    classes = list_classes(root, folder_split)
    if folder_split != "train":
        train_classes = list_classes(root, "train")
        if classes != train_classes:
            raise DataError(
                f"Class folders of {split}/ ({', '.join(classes)}) differ from "
                f"those of train/ ({', '.join(train_classes)})."
            )
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, folder_split, name)
        files = sorted(
            f for f in tf.io.gfile.listdir(folder)
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths.extend(os.path.join(folder, f) for f in files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/{folder_split}.")

    order = np.random.default_rng(0).permutation(len(paths))
    if folder_split == "train" and holdout_examples:
        if holdout_examples >= len(order):
            raise DataError(
                f"--holdout_examples={holdout_examples} leaves no training images "
                f"out of {len(order)}; lower it.")
        order = order[-holdout_examples:] if split == "holdout" else order[:-holdout_examples]
    if max_examples:
        order = order[:max_examples]
    paths = [paths[i] for i in order]
    labels = np.asarray(labels, np.int32)[order]

    if not image_size:
        try:
            first = tf.io.decode_image(tf.io.read_file(paths[0]), channels=3,
                                       expand_animations=False)
        except tf.errors.InvalidArgumentError as error:
            raise DataError(f"Cannot read image {paths[0]}: {error.message}") from None
        if first.shape[0] != first.shape[1]:
            raise DataError(
                f"{paths[0]} is {first.shape[1]}x{first.shape[0]} pixels. Without a "
                "target size, image folders must hold square images, which are "
                "resized to the size of the first one; resize the images, or pass "
                "--image_size to dropnas_tf.train.")
        image_size = int(first.shape[0])

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                   expand_animations=False)
        image = _resize_if_needed(image, image_size)
        return tf.ensure_shape(image, [image_size, image_size, 3]), label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE)
    return Split(dataset, len(paths), len(classes), tuple(classes), tuple(paths))


def _resize_if_needed(image, size):
    shape = tf.shape(image)
    image = tf.cond(
        tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size)),
        lambda: image,
        lambda: tf.cast(tf.clip_by_value(
            tf.round(tf.image.resize(image, [size, size], antialias=True)), 0, 255),
            tf.uint8),
    )
    # Decoded images have an unknown static shape; the CIFAR augmentation needs it.
    return tf.ensure_shape(image, [size, size, 3])


def _tfds_split(name, data_dir, split, max_examples, image_size, download,
                holdout_examples):
    import tensorflow_datasets as tfds  # Imported here: it is slow to import.

    if split == "test":
        tfds_split = "validation" if name == "imagenet2012" else "test"
        if max_examples:
            tfds_split = f"{tfds_split}[:{max_examples}]"
    elif split == "holdout":
        tfds_split = f"train[-{holdout_examples}:]"
    elif max_examples:
        tfds_split = f"train[:{max_examples}]"
    elif holdout_examples:
        tfds_split = f"train[:-{holdout_examples}]"
    else:
        tfds_split = "train"
    try:
        dataset, info = tfds.load(
            name, split=tfds_split, data_dir=data_dir, as_supervised=True,
            download=download, with_info=True, shuffle_files=False,
        )
    except AssertionError as error:
        raise DataError(
            f"TFDS data set {name!r} is not prepared in "
            f"{data_dir or '~/tensorflow_datasets'}: {error}. Pass --download to "
            "let TFDS fetch it, prepare it elsewhere and point --data_dir at it, "
            "or use --dataset=image_folder."
        ) from None
    num_examples = info.splits[tfds_split].num_examples
    total = info.splits["train"].num_examples
    if split == "train" and holdout_examples and (max_examples or 0) > total - holdout_examples:
        raise DataError(
            f"--train_examples={max_examples} overlaps the {holdout_examples} held-out "
            f"images at the end of the {total} training images; lower one of them.")
    num_classes = info.features["label"].num_classes
    names = tuple(info.features["label"].names)

    def convert(image, label):
        if image_size:
            image = _resize_if_needed(image, image_size)
        return image, tf.cast(label, tf.int32)

    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return Split(dataset, num_examples, num_classes, names)


def normalize(images, mean, std):
    """Maps uint8 images to float32, scaled to [0, 1] and standardized per channel."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def cifar_augment(image, seed, pad=4, cutout=0):
    """Random crop after `pad`-pixel zero padding, random flip, optional cutout.

    Args:
      image: float32 [H, W, 3], already normalized.
      seed: int32 [2] stateless seed.
      pad: zero padding before the crop, in pixels.
      cutout: side of the square set to zero (0 disables it). Its center is
        uniform over the image and the square is clipped at the border.
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    height, width = image.shape[0], image.shape[1]
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(padded, [height, width, 3], seeds[0])
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if cutout:
        image = apply_cutout(image, cutout, seeds[2])
    return image


def apply_cutout(image, size, seed):
    """Zeros the rows and columns [c - size // 2, c + size // 2) around a random pixel c."""
    height, width = image.shape[0], image.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    center_y = tf.random.stateless_uniform([], seeds[0], 0, height, tf.int32)
    center_x = tf.random.stateless_uniform([], seeds[1], 0, width, tf.int32)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = ((rows >= center_y - size // 2) & (rows < center_y + size // 2)
              & (cols >= center_x - size // 2) & (cols < center_x + size // 2))
    return image * tf.cast(~inside, image.dtype)[:, :, None]


def imagenet_train_preprocess(image, seed, size=224):
    """Random resized crop (8%-100% area, 3/4-4/3 aspect) and flip, float32 in [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), seed=seeds[0],
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(image, [size, size])
    return tf.image.stateless_random_flip_left_right(image, seeds[1])


def imagenet_eval_preprocess(image, size=224):
    """Resizes the short side to size / 0.875 and takes the central crop, as uint8."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / 0.875) / tf.reduce_min(shape)
    resized = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
    cropped = tf.image.resize_with_crop_or_pad(resized, size, size)
    return tf.cast(tf.clip_by_value(tf.round(cropped), 0, 255), tf.uint8)


def train_dataset(split, batch_size, seed, mean, std, cutout=0, skip_examples=0,
                  imagenet=False, image_size=224, shuffle_buffer=50_000,
                  cache=True):
    """Builds an endless, shuffled, augmented training stream of batches.

    Args:
      split: the training `Split`.
      batch_size: examples per batch; the last partial batch of the stream is
        never produced because the stream does not end.
      seed: fixes the shuffle order and every augmentation draw.
      mean, std: per-channel normalization.
      cutout: cutout size in pixels (0 disables it).
      skip_examples: drop this many examples from the start of the stream, to
        resume a run at the step it stopped.
      imagenet: use random resized crops of `image_size` instead of CIFAR crops.
      shuffle_buffer: shuffle buffer size, capped at the split size.
      cache: keep decoded images in memory after the first pass.

    Returns:
      A `tf.data.Dataset` of (float32 images [B, H, W, 3], int32 labels [B]).
    """
    dataset = split.dataset
    if cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(min(shuffle_buffer, split.num_examples), seed=seed,
                              reshuffle_each_iteration=True).repeat()
    dataset = dataset.enumerate().skip(skip_examples)

    def augment(index, example):
        image, label = example
        element_seed = tf.stack([tf.cast(seed, tf.int64), index])
        element_seed = tf.cast(element_seed % (2**31 - 1), tf.int32)
        if imagenet:
            image = imagenet_train_preprocess(image, element_seed, image_size)
            image = normalize(image, mean, std)
        else:
            image = normalize(image, mean, std)
            image = cifar_augment(image, element_seed, cutout=cutout)
        return image, label

    dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, batch_size, imagenet=False, image_size=224,
                 drop_remainder=False):
    """Builds a test stream of uint8 image batches, in order, without augmentation."""
    dataset = split.dataset
    if imagenet:
        dataset = dataset.map(lambda image, label: (imagenet_eval_preprocess(image, image_size), label),
                              num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def log_split(name, split):
    logging.info("%s: %d examples, %d classes", name, split.num_examples,
                 split.num_classes)
