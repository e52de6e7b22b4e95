"""One training loop for every objective: sharded jit step, exact gradient accumulation, eval,
checkpoints.

An *objective* (objectives.py) says what a batch means; the Trainer does the rest:
  - the NNX model is split into graphdef + params once; a step `(state, batch) -> (state,
    metrics)` runs two pure functions compiled with `jax.jit(in_shardings, out_shardings,
    donate_argnums)` over a ("data", "fsdp") mesh of all devices (all hosts): the gradients,
    compiled once per batch shape, and the optimizer update, compiled once (so its ops are not
    held in memory once per shape: ~30 MB of RSS per length bucket for MiniLM on CPU);
  - gradient accumulation scans over k micro-batches and is exact: every loss term is a sum divided
    by its count over the *whole* batch, so k micro-batches give the gradient of one big batch;
  - dropout randomness is `fold_in(seed, step)`: independent of how the run was resumed;
  - orbax checkpoints hold params, optimizer state, step, rng and the data iterator's state;
    rerunning resumes from the newest readable checkpoint; metrics.jsonl is cut back to match.
Its settings are one typed `TrainerConfig` (trainer_config.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from bert_jax.errors import BertJaxError
from bert_jax.training import divergence, optim, sharding
from bert_jax.training.checkpoint import Checkpointer
from bert_jax.training.host_memory import TrimAfterNewShapes, release_free_heap
from bert_jax.training.metric_writers import MetricWriter
from bert_jax.training.objectives import Objective, combined_loss, loss_sums
from bert_jax.training.trainer_config import TrainerConfig


class Trainer:
    """Trains `model` on `objective` with the settings of `config`, writing into `workdir`."""

    def __init__(
        self, model: nnx.Module, objective: Objective, config: TrainerConfig, workdir: str
    ):
        self.objective, self.config, self.workdir = objective, config, workdir
        self.total_steps = config.steps
        self.accumulation = config.grad_accumulation
        self.mesh = sharding.make_mesh(fsdp=config.fsdp)
        if config.batch_size % (self.accumulation * jax.device_count()):
            raise BertJaxError(
                f"train.batch_size {config.batch_size} must be divisible by grad_accumulation "
                f"{self.accumulation} x {jax.device_count()} devices"
            )
        self.tx, self.schedule = optim.from_config(config.optimizer, config.steps)
        model.train()
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self.base_key = jax.random.key(config.seed)

        abstract = jax.eval_shape(lambda p: self._init_state(p), params)
        param_sh = sharding.param_shardings(abstract["params"], self.mesh, fsdp=config.fsdp > 1)
        # Optimizer moments mirror their parameters' shardings; scalars are replicated.
        self.state_sharding = jax.tree.map(lambda _: sharding.replicated(self.mesh), abstract)
        self.state_sharding["params"] = param_sh
        self.state_sharding["opt_state"] = _mirror_shardings(
            abstract["opt_state"], abstract["params"], param_sh, self.mesh
        )
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract,
            self.state_sharding,
        )
        self._params = params
        batch_sh = sharding.batch_sharding(self.mesh)
        rep = sharding.replicated(self.mesh)
        self.grad_step = jax.jit(
            self._grad_step, in_shardings=(param_sh, rep, batch_sh), out_shardings=(param_sh, rep)
        )
        self.update_step = jax.jit(
            self._update_step,
            in_shardings=(self.state_sharding, param_sh),
            out_shardings=(self.state_sharding, rep),
            donate_argnums=0,  # the gradients cannot be reused: every output aliases the state
        )
        self._watch = jax.jit(divergence.update, out_shardings=rep)
        self.eval_step = jax.jit(
            self._eval_step,
            in_shardings=(self.state_sharding["params"], batch_sh),
            out_shardings=rep,
        )
        self.checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints
        )

    # ---- pure functions (jitted) ----------------------------------------------------------------
    def _init_state(self, params):
        return {
            "params": params,
            "opt_state": self.tx.init(params),
            "step": jnp.zeros((), jnp.int32),
        }

    def _model(self, params, key=None) -> nnx.Module:
        return nnx.merge(
            self.graphdef, params, self.rest if key is None else _reseed(self.rest, key)
        )

    def train_step(self, state, batch) -> tuple[dict, dict]:
        """One optimizer step on a sharded batch: (state, batch) → (new state, metrics). `state`
        is donated: its buffers are reused for the new one."""
        grads, metrics = self.grad_step(state["params"], state["step"], batch)
        state, more = self.update_step(state, grads)
        return state, {**metrics, **more}

    def _grad_step(self, params, step, batch):
        """(gradients shaped like params, loss/metric summaries) of one batch."""
        key = jax.random.fold_in(self.base_key, step)
        counts = self.objective.counts(batch)  # over the whole batch: exact accumulation
        k = self.accumulation

        def micro_grads(params, micro, micro_key):
            def loss_fn(p):
                terms, metrics = loss_sums(self.objective, self._model(p, micro_key), micro)
                return combined_loss(terms, counts), (terms, metrics)

            return jax.grad(loss_fn, has_aux=True)(params)

        if k == 1:
            grads, (terms, metrics) = micro_grads(params, batch, key)
        else:
            # (B, ...) → (k, B/k, ...) taking rows i, i+k, ...: each device keeps its own rows.
            micro = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), batch
            )

            def body(carry, xs):
                micro_batch, i = xs
                g, aux = micro_grads(params, micro_batch, jax.random.fold_in(key, i))
                return jax.tree.map(jnp.add, carry, (g, aux)), None

            zeros = jax.eval_shape(
                lambda: micro_grads(params, jax.tree.map(lambda x: x[0], micro), key)
            )
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
            (grads, (terms, metrics)), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(k)))

        return grads, _summaries(self.objective, terms, metrics, counts)

    def _update_step(self, state, grads):
        """The optimizer's step: (new state, its metrics)."""
        step = state["step"]
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        out = {"grad_norm": optax.tree.norm(grads), "learning_rate": self.schedule(step)}
        return {"params": params, "opt_state": opt_state, "step": step + 1}, out

    def _eval_step(self, params, batch):
        model = self._model(params)
        model.eval()
        terms, metrics = loss_sums(self.objective, model, batch)
        return {"terms": terms, "metrics": metrics, "counts": self.objective.counts(batch)}

    # ---- host-side loop --------------------------------------------------------------------------
    def restore_or_init(self, data_iter) -> dict:
        restored = self.checkpointer.restore(self.abstract_state)
        if restored is None:
            state = jax.jit(self._init_state, out_shardings=self.state_sharding)(self._params)
            start = 0
        else:
            start, state, data_state = restored
            if hasattr(data_iter, "set_state"):
                data_iter.set_state(data_state)
        self._params = None  # the state owns the params now
        release_free_heap()  # what loading the model and building the state freed
        self.start_step = start
        return state

    def evaluate(self, params, batches: Iterable[dict]) -> dict:
        """Loss terms and metrics over `batches` (each process's local rows), summed then divided
        by the summed counts."""
        sums: dict[str, Any] = {}
        for local in batches:
            out = jax.device_get(self.eval_step(params, sharding.put_batch(local, self.mesh)))
            sums = out if not sums else jax.tree.map(np.add, sums, out)
        if not sums:
            return {}
        result = _summaries(self.objective, sums["terms"], sums["metrics"], sums["counts"], np)
        return {k: float(v) for k, v in result.items()}

    def fit(
        self,
        train_iter,
        *,
        eval_fn: Callable[[Any], dict] | None = None,
        on_eval: Callable[[int, dict, Any], None] | None = None,
        tokens_per_batch: Callable[[dict], int] | None = None,
    ) -> tuple[Any, dict]:
        """Run to `config.steps`. `eval_fn(params) -> metrics` runs every `eval_every` steps and
        at the end; `on_eval(step, metrics, params)` sees each result (e.g. to keep the best).

        A NaN/inf loss or gradient norm raises BertJaxError naming the first bad step; it is
        checked at every log and checkpoint step, so no checkpoint is written at or after it, and
        those written after the loss first left its range are deleted (divergence.py)."""
        c = self.config
        state = self.restore_or_init(train_iter)
        step = self.start_step
        log = MetricWriter(self.workdir, step, tensorboard=c.tensorboard)
        if eval_fn and step == 0 and c.eval_at_start:
            log.write(0, "eval", eval_fn(state["params"]))  # the start of every eval curve
        # Where the run began to diverge (divergence.py), tracked on device so that checking it
        # costs no host sync except at log and checkpoint steps.
        record = jax.device_put(divergence.init(), sharding.replicated(self.mesh))
        bar = tqdm(
            total=self.total_steps,
            initial=step,
            disable=not log.is_main or not c.progress,
            dynamic_ncols=True,
            desc="train",
        )
        last_eval: dict = {}
        trim = TrimAfterNewShapes()
        while step < self.total_steps:
            local = next(train_iter)
            log.count_tokens(tokens_per_batch(local) if tokens_per_batch else 0)
            state, metrics = self.train_step(state, sharding.put_batch(local, self.mesh))
            step += 1
            trim(local, metrics)  # after a new shape's compilation and first run
            record = self._watch(record, metrics, step)
            last = step == self.total_steps
            if step % c.log_every == 0 or step % c.checkpoint_every == 0 or last:
                # Checked before any checkpoint is written: none is written at or after a NaN.
                health = divergence.Health.read(record)
                self._stop_if_diverged(health)
            if step % c.log_every == 0 or last:
                line = log.train(step, {k: float(v) for k, v in jax.device_get(metrics).items()})
                bar.set_postfix(loss=f"{line['loss']:.3f}", tok_s=f"{line['tokens_per_sec']:,.0f}")
            if eval_fn and (step % c.eval_every == 0 or last):
                last_eval = self._evaluate(step, state["params"], eval_fn, on_eval, log)
            # None while the loss is out of its range (divergence.py), except the final one.
            if (step % c.checkpoint_every == 0 and not health.stretch) or last:
                data_state = train_iter.get_state() if hasattr(train_iter, "get_state") else {}
                self.checkpointer.save(step, state, data_state)
            bar.update(1)
        bar.close()
        log.close()
        if eval_fn and not last_eval:  # resumed a finished run: report its final metrics again
            last_eval = eval_fn(state["params"])
        return state, last_eval

    def _evaluate(self, step: int, params, eval_fn, on_eval, log: MetricWriter) -> dict:
        metrics = eval_fn(params)
        release_free_heap()  # what compiling the evaluation programs freed (host_memory.py)
        log.write(step, "eval", metrics)
        if on_eval:
            on_eval(step, metrics, params)
        return metrics

    def _stop_if_diverged(self, health: divergence.Health) -> None:
        """On a NaN/inf: keep the newest checkpoint from before the divergence began, delete the
        later ones (their weights are wrecked) and stop with one line saying which was kept."""
        if not health.first_bad:
            return
        keep = health.checkpoint_to_keep(self.checkpointer.all_steps())
        removed = self.checkpointer.discard_after(keep or 0)
        began = health.diverged_from
        where = (
            f"step {keep} in {self.checkpointer.directory} (rerunning resumes from it"
            if keep
            else "none (rerunning starts afresh"
        )
        raise BertJaxError(
            f"loss or gradient norm is not finite (NaN/inf) at step {health.first_bad}; stopping"
            + (f" (the loss left its range at step {began})" if began < health.first_bad else "")
            + f". Last good checkpoint: {where}; lower optimizer.learning_rate or raise "
            "warmup_steps first)"
            + (f"; removed the later checkpoints {removed}" if removed else "")
        )

    def export_model(self, params) -> nnx.Module:
        """An eval-mode model holding `params` (host copy), e.g. for save_pretrained.

        With FSDP over several processes call it on every process: the params are gathered first
        (a collective), as no single host holds them whole."""
        leaves = jax.tree.leaves(params)
        if not all(x.is_fully_replicated or x.is_fully_addressable for x in leaves):
            params = jax.jit(lambda p: p, out_shardings=sharding.replicated(self.mesh))(params)
        model = self._model(jax.device_get(params))
        model.eval()
        return model

    def close(self) -> None:
        self.checkpointer.close()


def _summaries(objective: Objective, terms, metrics, counts, xp=jnp) -> dict:
    """Each term's mean loss, their total (`combined_loss`) and the metrics, each divided by its
    count. `xp` is jnp inside jit, np on host values."""
    out = {f"{k}_loss": terms[k] / xp.maximum(counts[k], 1.0) for k in terms}
    out["loss"] = sum(out[f"{k}_loss"] for k in terms)
    for name, count_name in objective.metric_counts.items():
        out[name] = metrics[name] / xp.maximum(counts[count_name], 1.0)
    return out


def _reseed(rest: nnx.State, key: jax.Array) -> nnx.State:
    """A copy of the non-param state whose every RNG stream starts from its own fold of `key`."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(rest)
    new = []
    for i, (path, leaf) in enumerate(leaves):
        names = [getattr(p, "key", getattr(p, "name", None)) for p in path]
        if "key" in names and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.fold_in(key, i)
        elif "count" in names:
            leaf = jnp.zeros_like(leaf)
        new.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, new)


def _mirror_shardings(opt_state, params, param_sh, mesh):
    """Optimizer-state leaves shaped like a parameter get that parameter's sharding."""
    by_shape = {}
    for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(param_sh)):
        by_shape.setdefault(tuple(p.shape), s)
    rep = sharding.replicated(mesh)
    return jax.tree.map(lambda x: by_shape.get(tuple(x.shape), rep) if x.ndim else rep, opt_state)
