"""Distribution strategies from flags, and logical CPU replicas for testing."""

import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def split_cpu(num_replicas):
    """Splits the host CPU into `num_replicas` logical devices.

    Must run before TensorFlow initializes its devices (before the first op).
    Lets `mirrored` run on a machine without accelerators.
    """
    if num_replicas <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_replicas
    )


def make_strategy(name, num_gpus=0, cpu_replicas=1, tpu=None, tpu_zone=None,
                  gcp_project=None):
    """Builds the `tf.distribute` strategy called `name`.

    Args:
      name: one of `STRATEGIES`.
      num_gpus: for "mirrored", how many local GPUs to use (0 uses all).
      cpu_replicas: for "mirrored" on a machine without GPUs, the number of
        logical CPU devices to mirror over (see `split_cpu`).
      tpu: TPU name or grpc address; "" or "local" on a TPU VM.
      tpu_zone, gcp_project: where to find a named TPU.

    Raises:
      ValueError: for an unknown name.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            devices = [d.name for d in gpus[: num_gpus or len(gpus)]]
        else:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            devices = devices[: max(cpu_replicas, 1)]
        logging.info("Mirrored strategy over %s", ", ".join(devices))
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu if tpu not in (None, "local") else "",
            zone=tpu_zone, project=gcp_project,
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"Unknown --strategy={name!r}. Use one of: {', '.join(STRATEGIES)}."
    )


def compiles_whole_step(strategy):
    """Returns whether XLA compiles a whole replica step under `strategy`.

    Over several replicas, MirroredStrategy's all-reduce inside a step
    needs a merge call, which a compiled function cannot contain, and TensorFlow
    2.21 places a compiled step of every logical CPU replica on the first CPU.
    There only the forward and backward pass are compiled, once per replica
    device, and the all-reduce and the updates run around them. One replica
    and TPUStrategy compile the whole step.

    NOTE: the per-replica compilation has run on logical CPU devices only,
    not yet on several GPUs.
    """
    return (strategy.num_replicas_in_sync == 1
            or isinstance(strategy, tf.distribute.TPUStrategy))


def compile_replica_step(strategy, step_fn, forward_backward):
    """Returns (step_fn, forward_backward) with the part XLA compiles compiled.

    `step_fn` is a whole replica step that calls `forward_backward`; which of
    the two is compiled follows `compiles_whole_step`.
    """
    if compiles_whole_step(strategy):
        return tf.function(step_fn, jit_compile=True), forward_backward
    return step_fn, tf.function(forward_backward, jit_compile=True)


def check_jit_compile(strategy, jit_compile, sync_batch_norm):
    """Raises ValueError for XLA with synchronized batch normalization.

    Where only the forward and backward pass are compiled
    (`compiles_whole_step`), they cannot contain the all-reduce of synchronized
    batch normalization.
    """
    if jit_compile and sync_batch_norm and not compiles_whole_step(strategy):
        raise ValueError(
            f"--jit_compile cannot be combined with --sync_batch_norm over "
            f"{strategy.num_replicas_in_sync} replicas: XLA compiles each replica's "
            "forward pass alone, and synchronized batch normalization all-reduces "
            "inside it. Drop one of the two flags.")


def accelerator_present(strategy_name):
    """Returns whether the run will use a TPU or a GPU (the XLA default)."""
    return strategy_name == "tpu" or bool(tf.config.list_physical_devices("GPU"))


def worker_output_dir(strategy, model_dir):
    """Returns where this worker writes its outputs.

    Under a multi-worker strategy every worker runs the same program. Only the
    chief (task 0 of type "chief", or "worker" 0 without a chief) writes to
    `model_dir`, the others to a scratch folder inside it, so that files are
    not written twice.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return model_dir
    task_type, task_id = resolver.task_type, resolver.task_id
    cluster = resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                     and "chief" not in cluster)
    if chief:
        return model_dir
    return f"{model_dir.rstrip('/')}/workers/{task_type}_{task_id}"
