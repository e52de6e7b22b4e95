"""BERT-large with LAMB and huge batches (You et al. 2020, "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes"): batch 65,536 at length 128, then 32,768 at 512.

    bert-jax pretrain --config configs/pretrain/bert_large_lamb.py --workdir runs/large128
    bert-jax pretrain --config configs/pretrain/bert_large_lamb.py:phase2 --workdir runs/large512 \
        --config.model.init_from=runs/large128/model
Set `train.grad_accumulation` so that batch_size / grad_accumulation fits your devices' memory;
accumulation is exact. `train.fsdp` shards parameters and optimizer state over devices.
"""

import ml_collections


def get_config(phase: str = "phase1") -> ml_collections.ConfigDict:
    if phase not in ("phase1", "phase2"):
        raise ValueError(f"phase must be phase1 or phase2, got {phase!r}")
    long = phase == "phase2"
    c = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    c.data.corpus = "tfds:wikipedia/20230601.en"
    c.data.eval_fraction = 0.001
    c.data.tokenizer = "train"
    c.data.vocab_size = 30522
    c.data.lowercase = True
    c.data.max_length = 512 if long else 128
    c.data.layout = "nsp"
    c.data.mask_rate = 0.15
    c.data.max_predictions = 80 if long else 20
    c.data.whole_word = True  # the whole-word-masking variant of BERT-large

    c.model = ml_collections.ConfigDict()
    c.model.size = "large"
    c.model.init_from = ""
    c.model.max_position_embeddings = 512
    c.model.hidden_dropout_prob = 0.1
    c.model.attention_probs_dropout_prob = 0.0  # keeps the fused attention kernel
    c.model.dtype = "bfloat16"

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "lamb"
    c.optimizer.learning_rate = 4e-3 if long else 6e-3
    c.optimizer.weight_decay = 0.01
    c.optimizer.warmup_steps = 200 if long else 2_000
    c.optimizer.decay = "linear"
    c.optimizer.clip_norm = 1.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-6

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1_563 if long else 7_038
    c.train.batch_size = 32_768 if long else 65_536
    c.train.grad_accumulation = 64  # micro-batch 1024 / 512 rows
    c.train.seed = 0
    c.train.log_every = 10
    c.train.eval_every = 500
    c.train.eval_batches = 4
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 3
    c.train.fsdp = 1
    c.train.progress = True
    return c
