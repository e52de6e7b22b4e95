"""Device mesh, parameter partition rules, batch placement and multi-host start-up.

The mesh has two axes: "data" (pure data parallelism: params replicated) and "fsdp" (params sharded,
batch also split). The batch's leading axis is split over both, so every device gets its own slice.
Which params are sharded is declared once, in a rules table keyed by param path, outside the model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bert_jax.errors import BertJaxError
from bert_jax.sampling import host_block

MESH_AXES = ("data", "fsdp")

# A rule's spec is either a PartitionSpec or LARGEST_DIM: "shard the largest dim divisible by the
# fsdp axis size along 'fsdp'" (replicated if none divides). The first matching regex wins; it is
# searched in the "/"-joined param path, e.g. "encoder/layers/3/attention/query/kernel".
LARGEST_DIM = "largest_dim"
DEFAULT_RULES: list[tuple[str, P | str]] = [
    (r"(^|/)(kernel|embedding)$", LARGEST_DIM),  # dense kernels, word/position/type embeddings
    (r".*", P()),  # biases, LayerNorm scales, anything else: replicated
]


def param_path(path: Sequence[Any]) -> str:
    """A jax key path as "a/b/0/kernel". The trailing `.value` of an nnx Variable is dropped."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        else:
            parts.append(str(k))
    if parts and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def _int_env(*names: str) -> int | None:
    for n in names:
        if os.environ.get(n, "").strip():
            return int(os.environ[n])
    return None


def maybe_initialize_distributed() -> bool:
    """Call `jax.distributed.initialize()` if the environment describes a multi-process run.

    Recognised, in this order:
      - explicit: `JAX_COORDINATOR_ADDRESS` (or `COORDINATOR_ADDRESS`) = "host:port",
        `JAX_NUM_PROCESSES` > 1 and `JAX_PROCESS_ID`; passed to `initialize` as arguments.
      - SLURM: `SLURM_NTASKS` > 1 (jax reads the rest of the SLURM_* variables itself).
      - Open MPI: `OMPI_COMM_WORLD_SIZE` > 1 (jax reads `OMPI_COMM_WORLD_RANK` etc.).
      - Cloud TPU pod: `TPU_WORKER_HOSTNAMES` listing more than one host (comma-separated).
    CPU processes talk through gloo collectives. Must run before anything touches a jax device.
    Idempotent. Returns True if jax is now running multi-process.
    """
    if jax.distributed.is_initialized():
        return True
    kwargs: dict[str, Any] = {}
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("COORDINATOR_ADDRESS")
    num_processes = _int_env("JAX_NUM_PROCESSES")
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if coordinator and num_processes and num_processes > 1:
        process_id = _int_env("JAX_PROCESS_ID")
        if process_id is None:
            raise BertJaxError("JAX_COORDINATOR_ADDRESS is set but JAX_PROCESS_ID is missing")
        kwargs = dict(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    elif not (
        (_int_env("SLURM_NTASKS") or 1) > 1
        or (_int_env("OMPI_COMM_WORLD_SIZE") or 1) > 1
        or len(hosts) > 1
    ):
        return False
    # Only affects the CPU client, so it is safe to set before we know the platform.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True


def make_mesh(data_parallel: int = -1, fsdp: int = 1) -> Mesh:
    """A ("data", "fsdp") mesh over all devices (of all processes). -1 means "the rest"."""
    n = jax.device_count()
    if fsdp == -1 and data_parallel == -1:
        raise BertJaxError("mesh: only one of data_parallel and fsdp may be -1")
    if fsdp == -1:
        fsdp = n // max(data_parallel, 1)
    if data_parallel == -1:
        data_parallel = n // max(fsdp, 1)
    if data_parallel * fsdp != n or data_parallel < 1 or fsdp < 1:
        raise BertJaxError(
            f"mesh: data_parallel={data_parallel} x fsdp={fsdp} must equal the {n} devices"
        )
    # Auto axes: jit's in/out shardings drive partitioning (GSPMD), not sharding-in-types.
    return jax.make_mesh((data_parallel, fsdp), MESH_AXES, axis_types=(AxisType.Auto,) * 2)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def _spec_for(name: str, shape: tuple[int, ...], rules, fsdp_size: int) -> P:
    spec = next((spec for pattern, spec in rules if re.search(pattern, name)), P())
    if spec != LARGEST_DIM:
        return spec
    if len(shape) < 2:
        return P()
    # Largest dim first; ties go to the earlier dim (e.g. vocab over hidden for embeddings).
    for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], d)):
        if shape[dim] % fsdp_size == 0:
            return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])
    return P()


def param_shardings(
    abstract_params: Any, mesh: Mesh, rules=DEFAULT_RULES, fsdp: bool = False
) -> Any:
    """Pytree (same structure as `abstract_params`) of NamedSharding for each param.

    `abstract_params` may hold arrays or `jax.ShapeDtypeStruct`s (from `jax.eval_shape`). With
    `fsdp=False`, or a mesh whose "fsdp" axis has size 1, everything is replicated.
    """
    fsdp_size = mesh.shape["fsdp"]
    if not fsdp or fsdp_size == 1:
        return jax.tree.map(lambda _: replicated(mesh), abstract_params)

    def shard(path, leaf):
        spec = _spec_for(param_path(path), tuple(leaf.shape), rules, fsdp_size)
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(shard, abstract_params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device; other axes whole."""
    return NamedSharding(mesh, P(MESH_AXES))


def process_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous block of a global batch's rows (all of them on one process);
    `put_batch` reassembles the blocks in process order."""
    return host_block(batch, jax.process_index(), jax.process_count())


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble each process's slice of the batch into global arrays sharded by `batch_sharding`.

    Every process passes its own `local_batch` (same keys and per-process batch size); the global
    batch is their concatenation in process order.
    """
    sharding = batch_sharding(mesh)
    n_local = len(mesh.local_devices)
    out = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] % n_local:
            raise BertJaxError(
                f"batch field {key!r}: leading size {value.shape[:1]} must divide evenly over "
                f"{n_local} local devices"
            )
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out
