"""Unit tests for optim.py, checkpoint.py and sharding.py on tiny pytrees."""

import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from bert_jax.errors import BertJaxError
from bert_jax.training import checkpoint, optim, sharding
from bert_jax.training.trainer_config import OptimizerConfig, TrainerConfig


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.word_embeddings = nnx.Embed(11, 4, rngs=rngs)
        self.dense = nnx.Linear(4, 4, rngs=rngs)
        self.LayerNorm = nnx.LayerNorm(4, rngs=rngs)


def _tiny_params():
    return nnx.state(Tiny(nnx.Rngs(0)), nnx.Param)


# --- optim -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decay, mid, end", [("linear", 0.55, 0.1), ("cosine", 0.55, 0.1), ("constant", 1.0, 1.0)]
)
def test_schedule_warmup_then_decay(decay, mid, end):
    s = optim.make_schedule(
        peak_lr=1.0, total_steps=110, warmup_steps=10, decay=decay, end_lr_fraction=0.1
    )
    np.testing.assert_allclose(
        [s(0), s(5), s(10), s(60), s(110), s(500)], [0.0, 0.5, 1.0, mid, end, end], atol=1e-6
    )


def test_schedule_without_warmup_starts_at_peak_and_rejects_bad_input():
    s = optim.make_schedule(peak_lr=2e-5, total_steps=10, warmup_steps=0, decay="linear")
    np.testing.assert_allclose([s(0), s(10)], [2e-5, 0.0], atol=1e-12)
    with pytest.raises(BertJaxError, match="decay"):
        optim.make_schedule(peak_lr=1.0, total_steps=10, warmup_steps=0, decay="step")
    with pytest.raises(BertJaxError, match="warmup_steps"):
        optim.make_schedule(peak_lr=1.0, total_steps=10, warmup_steps=20)


def test_weight_decay_mask_on_nnx_state_and_dict():
    mask = nnx.to_pure_dict(optim.weight_decay_mask(_tiny_params()))
    assert mask == {
        "LayerNorm": {"bias": False, "scale": False},
        "dense": {"bias": False, "kernel": True},
        "word_embeddings": {"embedding": True},
    }
    tree = {"encoder": {"layer_norm": {"scale": np.ones(4)}, "ffn": {"kernel": np.ones((4, 8))}}}
    assert optim.weight_decay_mask(tree) == {
        "encoder": {"layer_norm": {"scale": False}, "ffn": {"kernel": True}}
    }


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_masked_decay_spares_bias_and_norm_but_shrinks_kernel(name):
    params = _tiny_params()
    params["dense"]["bias"][...] = jnp.ones(4)  # nonzero so decay would show
    tx = optim.make_optimizer(name=name, learning_rate=0.1, weight_decay=0.5, clip_norm=1.0)
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    for module, name in [("dense", "bias"), ("LayerNorm", "scale"), ("LayerNorm", "bias")]:
        np.testing.assert_array_equal(new[module][name][...], params[module][name][...])
    old_k, new_k = params["dense"]["kernel"][...], new["dense"]["kernel"][...]
    assert float(jnp.linalg.norm(new_k)) < float(jnp.linalg.norm(old_k))
    if name == "adamw":  # zero grad: the update is pure decay, -lr * wd * kernel
        np.testing.assert_allclose(new_k, old_k * (1 - 0.1 * 0.5), rtol=1e-6)


def test_from_config():
    cfg = ml_collections.ConfigDict()
    cfg.optimizer = dict(
        name="lamb", learning_rate=1e-3, weight_decay=0.01, warmup_steps=2, decay="cosine",
        clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-6,
    )  # fmt: skip
    tx, schedule = optim.from_config(OptimizerConfig.from_config(cfg.optimizer), total_steps=10)
    assert float(schedule(2)) == pytest.approx(1e-3)
    params = _tiny_params()
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    cfg.optimizer.name = "sgd"
    with pytest.raises(BertJaxError, match="optimizer.name"):
        optim.from_config(OptimizerConfig.from_config(cfg.optimizer), total_steps=10)


def test_trainer_config_reads_typed_fields_once():
    cfg = ml_collections.ConfigDict()
    cfg.optimizer = dict(
        name="adamw", learning_rate=1, weight_decay=0.0, warmup_steps=-1, decay="linear",
        clip_norm=None, warmup_fraction=0.1,
    )  # fmt: skip
    cfg.train = dict(steps=0, epochs=3, batch_size=8, log_every=5, progress=False)
    settings = TrainerConfig.from_config(
        cfg, steps=40, optimizer=OptimizerConfig.from_config(cfg.optimizer, warmup_steps=4)
    )
    assert (settings.steps, settings.batch_size, settings.log_every) == (40, 8, 5)
    assert settings.progress is False and settings.grad_accumulation == 1  # a default
    o = settings.optimizer
    assert (o.warmup_steps, o.clip_norm, o.eps) == (4, 0.0, 1e-6)  # None clip: off
    assert isinstance(o.learning_rate, float) and isinstance(o.warmup_steps, int)
    with pytest.raises(BertJaxError, match="train.steps must be >= 1, got 0"):
        TrainerConfig.from_config(cfg)  # steps 0 (fine-tuning computes it from epochs)
    with pytest.raises(TypeError, match="no field"):
        TrainerConfig.from_config(cfg, stepz=1)
    del cfg.optimizer["decay"]
    with pytest.raises(BertJaxError, match=r"config.optimizer is missing field\(s\): decay"):
        TrainerConfig.from_config(cfg, steps=1)


# --- checkpoint --------------------------------------------------------------------------------


def _train_state(step: int):
    params = nnx.state(nnx.Linear(3, 4, rngs=nnx.Rngs(step)), nnx.Param)
    opt_state = optax.adamw(1e-3).init(params)
    rng = jax.random.key_data(jax.random.key(step))
    return {"params": params, "opt_state": opt_state, "step": jnp.int32(step), "rng": rng}


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _save_three(directory):
    ckpt = checkpoint.Checkpointer(directory, max_to_keep=2)
    for step in (1, 2, 3):
        assert ckpt.save(step, _train_state(step), {"epoch": step, "offset": 10 * step})
    return ckpt


def test_checkpoint_keeps_newest_and_restores_bit_exact(tmp_path):
    ckpt = _save_three(tmp_path)
    assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
    abstract = jax.eval_shape(lambda: _train_state(0))
    step, state, data = ckpt.restore(abstract)
    assert (step, data) == (3, {"epoch": 3, "offset": 30})
    assert isinstance(state["params"], nnx.State)
    _assert_same(state, _train_state(3))
    ckpt.close()
    empty = checkpoint.Checkpointer(tmp_path / "empty")
    assert empty.restore(abstract) is None and empty.latest_step() is None
    empty.close()


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_checkpoint_skips_corrupt_newest(tmp_path, damage):
    _save_three(tmp_path).close()
    files = [p for p in (tmp_path / "3" / "state").rglob("*") if p.is_file()]
    for p in files:  # the array payloads and their metadata
        if damage == "truncate":
            p.write_bytes(p.read_bytes()[:7])
        else:
            p.unlink()
    ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=2)
    with pytest.warns(UserWarning, match="step 3"):
        step, state, data = ckpt.restore(jax.eval_shape(lambda: _train_state(0)))
    assert (step, data["epoch"]) == (2, 2)
    _assert_same(state, _train_state(2))
    # Resuming from 2 and saving 3 again replaces the bad checkpoint.
    assert ckpt.save(3, _train_state(3), {"epoch": 3})
    assert ckpt.restore(jax.eval_shape(lambda: _train_state(0)))[0] == 3
    ckpt.close()


def test_checkpoint_ignores_leftover_temp_dir(tmp_path):
    _save_three(tmp_path).close()
    # What a save killed mid-write leaves behind.
    junk = tmp_path / "4.orbax-checkpoint-tmp-1234567" / "state"
    junk.mkdir(parents=True)
    (junk / "_METADATA").write_text("{")
    ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=2)
    assert ckpt.latest_step() == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        step, state, _ = ckpt.restore(jax.eval_shape(lambda: _train_state(0)))
    assert step == 3
    _assert_same(state, _train_state(3))
    ckpt.close()


# --- sharding ----------------------------------------------------------------------------------


def test_maybe_initialize_distributed_reads_env(monkeypatch):
    for var in (
        "JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
        "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE",
    ):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert not sharding.maybe_initialize_distributed()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    assert not sharding.maybe_initialize_distributed() and calls == []
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    assert sharding.maybe_initialize_distributed()
    assert calls == [dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=2)]
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "h0,h1")
    assert sharding.maybe_initialize_distributed() and calls[-1] == {}


_EIGHT_DEVICES = """
import jax, numpy as np
from jax.sharding import PartitionSpec as P
from flax import nnx
from bert_jax.training import checkpoint
from bert_jax.training import sharding

assert jax.device_count() == 8
mesh = sharding.make_mesh()
assert mesh.devices.size == 8 and dict(mesh.shape) == {"data": 8, "fsdp": 1}
assert dict(sharding.make_mesh(data_parallel=2, fsdp=4).shape) == {"data": 2, "fsdp": 4}

local = {"input_ids": np.arange(16 * 3).reshape(16, 3), "labels": np.arange(16)}
batch = sharding.put_batch(local, mesh)
ids = batch["input_ids"]
assert ids.shape == (16, 3) and len(ids.sharding.device_set) == 8
assert {s.data.shape for s in ids.addressable_shards} == {(2, 3)}
np.testing.assert_array_equal(np.asarray(ids), local["input_ids"])

sds = jax.ShapeDtypeStruct
params = {
    "encoder": {"layers": {"3": {"attention": {"query": {
        "kernel": sds((64, 32), np.float32), "bias": sds((32,), np.float32)}}}}},
    "embeddings": {"word_embeddings": {"embedding": sds((30, 16), np.float32)}},
}
fsdp_mesh = sharding.make_mesh(data_parallel=1, fsdp=8)
specs = jax.tree.map(lambda s: s.spec, sharding.param_shardings(params, fsdp_mesh, fsdp=True))
query = specs["encoder"]["layers"]["3"]["attention"]["query"]
assert query == {"kernel": P("fsdp", None), "bias": P()}, query
assert specs["embeddings"]["word_embeddings"]["embedding"] == P(None, "fsdp")  # 30 % 8 != 0
assert all(s == P() for s in jax.tree.leaves(
    jax.tree.map(lambda s: s.spec, sharding.param_shardings(params, fsdp_mesh, fsdp=False))))

# nnx.State in, sharded arrays out of a checkpoint restore.
model = nnx.Linear(64, 32, rngs=nnx.Rngs(0))
state = jax.device_put(nnx.state(model, nnx.Param), sharding.replicated(fsdp_mesh))
shardings = sharding.param_shardings(state, fsdp_mesh, fsdp=True)
abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        state, shardings)
ckpt = checkpoint.Checkpointer(CKPT_DIR)
ckpt.save(5, {"params": state}, {})
step, restored, _ = ckpt.restore({"params": abstract})
ckpt.close()
kernel = restored["params"]["kernel"][...]
step_fn = jax.jit(lambda p: jax.tree.map(lambda x: x * 2, p), in_shardings=(shardings,),
                  out_shardings=shardings)
assert step_fn(restored["params"])["kernel"][...].sharding.spec == P("fsdp", None)
assert step == 5 and kernel.sharding.spec == P("fsdp", None), kernel.sharding
np.testing.assert_array_equal(np.asarray(kernel), np.asarray(state["kernel"][...]))
print("OK")
"""


def test_sharding_on_eight_cpu_devices(tmp_path):
    env = dict(os.environ)
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = pathlib.Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    code = f"CKPT_DIR = {str(tmp_path / 'ckpt')!r}\n" + textwrap.dedent(_EIGHT_DEVICES)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
