"""BERT-large with LAMB and huge batches (You et al. 2020, "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes"): batch 65,536 at length 128, then 32,768 at 512.

On corpora prepared once (see configs/pretrain/bert_base.py and the README's "Pretraining at
scale"; --config.data.corpus=DIR for others):
    bert-jax pretrain --config configs/pretrain/bert_large_lamb.py --workdir runs/large128
    bert-jax pretrain --config configs/pretrain/bert_large_lamb.py:phase2 --workdir runs/large512 \
        --config.model.init_from=runs/large128/model
Set `train.grad_accumulation` so that batch_size / grad_accumulation fits your devices' memory;
accumulation is exact. `train.fsdp` shards parameters and optimizer state over devices.
"""

import ml_collections

from bert_jax.training.defaults import pretrain_config


def get_config(phase: str = "phase1") -> ml_collections.ConfigDict:
    if phase not in ("phase1", "phase2"):
        raise ValueError(f"phase must be phase1 or phase2, got {phase!r}")
    long = phase == "phase2"
    c = pretrain_config()

    c.data.corpus = f"data/wiki_nsp{512 if long else 128}"  # `bert-jax prepare` outputs
    c.data.tokenizer = "train"  # with a prepared dir: the dataset's own tokenizer
    c.data.vocab_size = 30522
    c.data.max_length = 512 if long else 128
    c.data.layout = "nsp"
    c.data.max_predictions = 80 if long else 20
    c.data.whole_word = True  # the whole-word-masking variant of BERT-large

    c.model.size = "large"
    c.model.max_position_embeddings = 512
    c.model.hidden_dropout_prob = 0.1  # as the paper (the demo default is 0)
    c.model.dtype = "bfloat16"

    c.optimizer.name = "lamb"
    c.optimizer.learning_rate = 4e-3 if long else 6e-3
    c.optimizer.warmup_steps = 200 if long else 2_000

    c.train.steps = 1_563 if long else 7_038
    c.train.checkpoint_every = 200
    c.train.batch_size = 32_768 if long else 65_536
    c.train.grad_accumulation = 64  # micro-batch 1024 / 512 rows
    c.train.log_every = 10
    c.train.eval_every = 500
    c.train.eval_batches = 4
    c.train.eval_at_start = False
    c.train.keep_checkpoints = 3
    return c
