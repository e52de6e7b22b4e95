"""The peers' MLM training steps, each run as a worker process by `train_step.py`.

    python benchmarks/peers.py hf_torch '<workload json>' [--warmup N]   (main venv)
    python benchmarks/peers.py hf_flax  '<workload json>' [--warmup N]   (peer venv, setup_peers.sh)

Both follow the HF recipe: logits at every position (B, L, vocab), cross-entropy where
labels != -100; clip_by_global_norm(1.0) then AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-6, weight
decay 0.01 except biases and LayerNorm) — the same optimizer our Trainer builds.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workload import PEAK_LR, VOCAB, Workload, make_batch, serve


def hf_config(w: Workload, config_cls):
    return config_cls(
        vocab_size=VOCAB,
        hidden_size=w.hidden,
        num_hidden_layers=w.layers,
        num_attention_heads=w.heads,
        intermediate_size=4 * w.hidden,
        hidden_dropout_prob=w.hidden_dropout,
        attention_probs_dropout_prob=w.attention_dropout,
    )


def hf_torch(w: Workload, warmup: int) -> None:
    """transformers (PyTorch) BertForMaskedLM, eager (no torch.compile), default SDPA attention."""
    import torch
    import transformers

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # honour --cpus pinning
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(hf_config(w, transformers.BertConfig))
    model.train()
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=PEAK_LR,
        betas=(0.9, 0.999),
        eps=1e-6,
    )
    b = make_batch(w)
    inputs = {
        k: torch.from_numpy(b[k]).long()
        for k in ("input_ids", "token_type_ids", "attention_mask", "position_ids", "labels")
    }

    def step():
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # CPU torch is synchronous; this is only a guard

    serve(
        step,
        warmup,
        {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "attn_implementation": model.config._attn_implementation,
        },
    )


def hf_flax(w: Workload, warmup: int) -> None:
    """transformers 4.57 FlaxBertForMaskedLM (linen) + optax under jax.jit, state donated."""
    import flax
    import jax
    import jax.numpy as jnp
    import optax
    import transformers
    from flax import traverse_util

    model = transformers.FlaxBertForMaskedLM(
        hf_config(w, transformers.BertConfig), seed=0, dtype=jnp.float32
    )

    def decay_mask(params):
        flat = traverse_util.flatten_dict(params)
        return traverse_util.unflatten_dict(
            {
                k: not (k[-1] == "bias" or "LayerNorm" in k or k[-2:] == ("LayerNorm", "scale"))
                for k in flat
            }
        )

    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(PEAK_LR, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=decay_mask),
    )
    params = model.params
    opt_state = tx.init(params)
    b = make_batch(w)
    batch = {
        k: jnp.asarray(b[k], jnp.int32)
        for k in ("input_ids", "token_type_ids", "attention_mask", "position_ids", "labels")
    }
    base_key = jax.random.PRNGKey(0)

    def train_step(params, opt_state, step, batch):
        def loss_fn(p):
            logits = model(
                batch["input_ids"],
                batch["attention_mask"],
                batch["token_type_ids"],
                batch["position_ids"],
                params=p,
                dropout_rng=jax.random.fold_in(base_key, step),
                train=True,
            ).logits
            labels = batch["labels"]
            weights = (labels != -100).astype(jnp.float32)
            ce = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), jnp.where(labels < 0, 0, labels)
            )
            return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, step + 1, loss

    jitted = jax.jit(train_step, donate_argnums=(0, 1))
    state = [params, opt_state, jnp.zeros((), jnp.int32)]

    def step():
        *new, loss = jitted(*state, batch)
        state[:] = new
        loss.block_until_ready()

    serve(
        step,
        warmup,
        {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "transformers": transformers.__version__,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=["hf_torch", "hf_flax"])
    parser.add_argument("workload")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    {"hf_torch": hf_torch, "hf_flax": hf_flax}[args.peer](
        Workload.from_json(args.workload), args.warmup
    )
