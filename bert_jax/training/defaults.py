"""Every experiment-config field with its default: configs/*/*.py start from these and set only what
differs; `--config.a.b=v` can override any of them.

ml_collections only (no jax, no flax): loading a config stays cheap, e.g. to validate a sweep's
overrides before anything runs. The Trainer reads `train` and `optimizer` through
`trainer_config.TrainerConfig.from_config`.
"""

from __future__ import annotations

import ml_collections


def _optimizer(learning_rate: float, eps: float) -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    o.name = "adamw"  # adamw | lamb
    o.learning_rate = learning_rate  # peak, after warmup
    o.weight_decay = 0.01  # not applied to biases and LayerNorm
    o.decay = "linear"  # linear | cosine | constant (after warmup)
    o.end_lr_fraction = 0.0  # learning rate at the last step, as a share of the peak
    o.clip_norm = 1.0  # global-norm clipping; 0 disables
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = eps
    return o


def pretrain_config() -> ml_collections.ConfigDict:
    """Every field `pretrain.train_and_evaluate` reads. The defaults are the README's quick job
    (configs/pretrain/tiny_shakespeare.py): a WordPiece vocab and a BERT-tiny on the bundled
    Shakespeare corpus, about 10 minutes on 2 CPU cores."""
    c = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    # A `bert-jax prepare` output dir, or a corpus spec prepared into workdir/dataset first:
    # "shakespeare" | "tfds:NAME[:SPLIT]" | comma-separated globs (.txt/.jsonl, also .gz/.zst)
    c.data.corpus = "shakespeare"
    c.data.eval_fraction = 0.02  # share of documents held out for evaluation (by a text hash)
    c.data.text_field = "text"  # JSONL / TFDS field holding a document
    c.data.shard_mb = 0.0  # input per prepared shard; 0 = corpus / 256, clamped to 2..256 MiB
    c.data.prepare_workers = 0  # processes preparing a raw corpus, per host (0: all cores)
    c.data.tokenizer = "train"  # "train": learn a WordPiece vocab on the corpus; else a dir
    c.data.vocab_size = 8192  # for a trained vocab
    c.data.lowercase = True
    c.data.max_length = 128  # tokens per row
    c.data.layout = "packed"  # "packed": documents packed, no cross-document attention | "nsp"
    c.data.mask_rate = 0.15
    c.data.max_predictions = 20  # masked positions per row (the MLM head runs only there)
    c.data.whole_word = False  # mask whole words rather than single WordPieces

    c.model = ml_collections.ConfigDict()
    c.model.size = "tiny"  # tiny | mini | small | medium | base | large (Google's BERT presets)
    c.model.init_from = ""  # an HF-format directory to continue pretraining from, instead of size
    c.model.max_position_embeddings = 128
    # No dropout: a short run on a small corpus underfits, it does not overfit (as Cramming
    # found); measured on the demo, 1800 steps reach held-out MLM accuracy 0.234 without it
    # against 0.183 at 1200 steps with 0.1 (docs/benchmarks.md).
    c.model.hidden_dropout_prob = 0.0
    c.model.attention_probs_dropout_prob = 0.0  # 0 keeps the fused attention kernel in training
    # "auto" = bfloat16 (fp32 accumulation) where matmuls run natively in bf16 (GPU, TPU,
    # AVX512-BF16/AMX CPUs), else float32; params, LayerNorm and softmax stay float32.
    c.model.dtype = "auto"

    c.optimizer = _optimizer(learning_rate=2e-3, eps=1e-6)  # small models like a high rate
    c.optimizer.warmup_steps = 100

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1800
    c.train.batch_size = 64  # global, over all devices and hosts
    c.train.grad_accumulation = 1  # micro-batches per step (exact: same as one bigger batch)
    c.train.seed = 0  # model init, data order, masking, dropout
    c.train.log_every = 50  # steps between train lines in metrics.jsonl
    c.train.eval_every = 600  # steps between evaluations (and at the end)
    c.train.eval_batches = 8  # held-out batches per evaluation
    c.train.eval_at_start = True  # also evaluate the untrained model (step 0 of the curves)
    c.train.checkpoint_every = 600  # steps between checkpoints (and at the end)
    c.train.keep_checkpoints = 2
    c.train.fsdp = 1  # >1 shards parameters over that many devices (FSDP)
    c.train.progress = True  # tqdm bar
    c.train.tensorboard = False  # also TensorBoard scalars in workdir/tensorboard (tensorboardX)
    return c


def finetune_config() -> ml_collections.ConfigDict:
    """Every field `finetune.finetune` reads: text classification (or regression) of CSV/TSV/JSONL
    files (configs/finetune/classify_csv.py) from the bundled all-MiniLM-L6-v2."""
    c = ml_collections.ConfigDict()
    c.task = "classification"  # classification (incl. pairs, regression) | ner | qa
    c.model = ""  # HF-format BERT dir (e.g. a `bert-jax pretrain` workdir/model); "" = MiniLM
    # Compute dtype: "auto" = bfloat16 (fp32 accumulation) where matmuls run natively in bf16
    # (GPU, TPU, CPUs with AVX512-BF16/AMX), else float32; params stay float32 either way.
    c.dtype = "auto"

    c.data = ml_collections.ConfigDict()
    c.data.source = "files"  # files | tweet_sentiment | wnut | glue | tfds:NAME (classification)
    c.data.glue_task = "sst2"  # with source=glue: cola sst2 mrpc qqp stsb mnli qnli rte wnli
    c.data.train_split = "train"  # TFDS sources
    c.data.eval_split = ""  # TFDS sources; "" = validation (validation_matched for mnli) / test
    c.data.train_file = ""  # CSV/TSV/JSONL (classification), CoNLL (ner) or SQuAD JSON (qa)
    c.data.eval_file = ""  # same format; "" holds out eval_fraction of train_file (classification)
    c.data.text_column = "text"  # (TFDS: feature names)
    c.data.text_pair_column = ""  # second segment for sentence pairs; "" for single texts
    c.data.label_column = "label"
    c.data.labels = ()  # label names in id order; () = sorted distinct training labels
    c.data.regression = False  # float labels, one output, MSE loss (num_labels = 1)
    c.data.max_length = 128  # tokens per example (QA: per window), truncated longest-first
    c.data.length_buckets = 6  # padded lengths fitted to the data (compiled shapes); 0 = a ladder
    c.data.doc_stride = 128  # qa: context tokens shared by consecutive windows
    c.data.max_query_length = 64  # qa: question tokens kept
    c.data.max_train_examples = 0  # >0: a seeded random subset (quick runs, tests)
    c.data.max_eval_examples = 0
    c.data.eval_fraction = 0.2  # held-out share for bundled sets / a missing eval_file
    c.data.split_seed = 0  # seed of that split

    c.qa = ml_collections.ConfigDict()
    c.qa.n_best = 20  # start/end candidates per window
    c.qa.max_answer_length = 30  # tokens
    c.qa.version_2 = False  # SQuAD v2: questions may have no answer
    c.qa.null_threshold = 0.0  # v2: predict "" when null score > best span score + this

    c.optimizer = _optimizer(learning_rate=5e-5, eps=1e-8)
    c.optimizer.warmup_fraction = 0.1  # share of all steps spent warming up
    c.optimizer.warmup_steps = -1  # >=0 overrides warmup_fraction

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 3
    c.train.steps = 0  # >0 overrides epochs x steps per epoch
    c.train.batch_size = 32  # global, over all devices and hosts
    c.train.eval_batch_size = 0  # 0 = batch_size
    c.train.grad_accumulation = 1  # micro-batches per step (exact)
    c.train.seed = 0  # head init, shuffling, dropout, data subsets
    c.train.best_metric = ""  # kept model's metric; "" = accuracy / pearson / mcc (cola) / f1
    c.train.eval_every = 0  # steps; 0 = once per epoch (and always at the end)
    c.train.eval_at_start = False  # also evaluate the model before any training step
    c.train.checkpoint_every = 0  # steps; 0 = at every evaluation
    c.train.keep_checkpoints = 1
    c.train.stop_after = 0  # >0: stop after this many steps; rerunning resumes (tests, drills)
    c.train.log_every = 10
    c.train.fsdp = 1  # >1 shards parameters over that many devices
    c.train.progress = True  # tqdm bar
    c.train.tensorboard = False  # also TensorBoard scalars in workdir/tensorboard (tensorboardX)
    return c
