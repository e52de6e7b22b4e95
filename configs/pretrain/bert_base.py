"""BERT-base, the original recipe (Devlin et al. 2019) on TFDS Wikipedia, for GPU/TPU pods.

Two phases: 90% of steps at sequence length 128, then 10% at 512 starting from phase 1's model:
    bert-jax pretrain --config configs/pretrain/bert_base.py --workdir runs/base128
    bert-jax pretrain --config configs/pretrain/bert_base.py:phase2 --workdir runs/base512 \
        --config.model.init_from=runs/base128/model
(`:phase2` is passed to get_config.) Needs `pip install 'bert-jax[tfds]'` and the prepared dataset.
"""

import ml_collections

from bert_jax.training.defaults import pretrain_config


def get_config(phase: str = "phase1") -> ml_collections.ConfigDict:
    if phase not in ("phase1", "phase2"):
        raise ValueError(f"phase must be phase1 or phase2, got {phase!r}")
    long = phase == "phase2"
    c = pretrain_config()

    c.data.corpus = "tfds:wikipedia/20230601.en"  # TFDS name[:split]; or file globs
    c.data.eval_fraction = 0.001
    c.data.vocab_size = 30522  # data.tokenizer may also be an existing uncased BERT vocab dir
    c.data.max_length = 512 if long else 128
    c.data.layout = "nsp"  # the original objective: MLM + next-sentence prediction
    c.data.max_predictions = 80 if long else 20

    c.model.size = "base"  # phase 2: model.init_from = the phase-1 model dir (runs/base128/model)
    c.model.max_position_embeddings = 512
    c.model.attention_probs_dropout_prob = 0.1  # as the paper; 0.0 keeps the fused kernel
    c.model.dtype = "bfloat16"  # compute dtype; params, LayerNorm, softmax, losses stay fp32

    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_steps = 1_000 if long else 10_000

    c.train.steps = 100_000 if long else 900_000
    c.train.batch_size = 256
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.eval_batches = 50
    c.train.eval_at_start = False
    c.train.checkpoint_every = 5_000
    c.train.keep_checkpoints = 3
    return c
