"""BERT-base, the original recipe (Devlin et al. 2019) on English Wikipedia, for GPU/TPU pods.

The corpus is prepared once, into sharded files every host streams (README: "Pretraining at
scale"); pass other prepared dirs with --config.data.corpus=DIR (e.g. a bucket mounted by gcsfuse):
    bert-jax tokenizer train --files tfds:wikipedia/20230601.en --max-lines 20000000 \
        --vocab-size 30522 --out data/vocab
    bert-jax prepare --corpus tfds:wikipedia/20230601.en --tokenizer data/vocab --layout nsp \
        --max-length 128 --eval-fraction 0.001 --out data/wiki_nsp128     # and 512: wiki_nsp512
Two phases: 90% of steps at sequence length 128, then 10% at 512 starting from phase 1's model:
    bert-jax pretrain --config configs/pretrain/bert_base.py --workdir runs/base128
    bert-jax pretrain --config configs/pretrain/bert_base.py:phase2 --workdir runs/base512 \
        --config.model.init_from=runs/base128/model
(`:phase2` is passed to get_config.)
"""

import ml_collections

from bert_jax.training.defaults import pretrain_config


def get_config(phase: str = "phase1") -> ml_collections.ConfigDict:
    if phase not in ("phase1", "phase2"):
        raise ValueError(f"phase must be phase1 or phase2, got {phase!r}")
    long = phase == "phase2"
    c = pretrain_config()

    # A `bert-jax prepare` output (its manifest fixes max_length, layout and the held-out split);
    # "train" then means the dataset's own tokenizer (DIR/tokenizer).
    c.data.corpus = f"data/wiki_nsp{512 if long else 128}"
    c.data.tokenizer = "train"
    c.data.vocab_size = 30522
    c.data.max_length = 512 if long else 128
    c.data.layout = "nsp"  # the original objective: MLM + next-sentence prediction
    c.data.max_predictions = 80 if long else 20

    c.model.size = "base"  # phase 2: model.init_from = the phase-1 model dir (runs/base128/model)
    c.model.max_position_embeddings = 512
    c.model.hidden_dropout_prob = 0.1  # as the paper (the demo default is 0)
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
