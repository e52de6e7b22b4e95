"""Pretraining: corpus → tokenizer → prepared shards (packed or NSP rows, on disk) → masked
batches → Trainer → HF model dir. A raw corpus spec is prepared into workdir/dataset first.

`train_and_evaluate(config, workdir)` is what `bert-jax pretrain` runs; tests and notebooks call it
directly. Rerunning it with the same workdir resumes from the newest checkpoint.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from bert_jax.data.baselines import batches_unigram_baseline
from bert_jax.data.masking import MaskingConfig
from bert_jax.data.pipeline import PretrainBatches, eval_batches, pretrain_rows
from bert_jax.data.prepare import prepare_for_training, training_documents
from bert_jax.data.shards import PreparedDataset, is_prepared
from bert_jax.data.sources import load_corpus
from bert_jax.errors import BertJaxError
from bert_jax.io import staged_dir, write_json
from bert_jax.model import BertForMaskedLM, BertForPreTraining, model_class_for
from bert_jax.model.config import BertConfig
from bert_jax.model.device import describe_dtype, enable_compilation_cache, resolve_dtype
from bert_jax.model.forward import jit_forward
from bert_jax.tokenizer import BertTokenizer
from bert_jax.training import sharding
from bert_jax.training.objectives import MaskedLMObjective
from bert_jax.training.trainer import Trainer
from bert_jax.training.trainer_config import TrainerConfig
from bert_jax.training.workdir import claims_workdir

# What `BertTokenizer.save_pretrained` writes (cf. bert_jax.model.hf.SAVED_FILES): a
# workdir/tokenizer holding only these may be replaced.
TOKENIZER_FILES = frozenset(
    {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}
)


def build_tokenizer(cfg, train_docs, workdir: str) -> BertTokenizer:
    """`data.tokenizer = "train"` trains a WordPiece vocab on the training documents (a list, or a
    callable returning a fresh iterable) once and keeps it in workdir/tokenizer (so a resumed run
    uses the very same vocab); otherwise it is a dir."""
    spec = cfg.data.tokenizer
    if spec != "train":
        return BertTokenizer.from_pretrained(spec)
    path = os.path.join(workdir, "tokenizer")
    # WordPiece training is not deterministic (huggingface/tokenizers#1794: ids of tied tokens
    # follow hash-map order), so only process 0 trains; the others wait and read its files from
    # the shared workdir, as every process must use the very same ids.
    if jax.process_index() == 0 and not os.path.isfile(os.path.join(path, "tokenizer.json")):
        # A callable gives a fresh stream per pass: training reads the corpus twice, in O(1) RAM.
        docs = train_docs if callable(train_docs) else (lambda: train_docs)
        lines = lambda: (line for doc in docs() for line in doc)
        tokenizer = BertTokenizer.train(
            lines, vocab_size=int(cfg.data.vocab_size), lowercase=cfg.data.lowercase
        )
        tokenizer.model_max_length = int(cfg.data.max_length)
        with staged_dir(path, owned=TOKENIZER_FILES) as tmp:  # replaces a killed run's partial dir
            tokenizer.save_pretrained(tmp)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("bert_jax.training.pretrain.tokenizer")
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise BertJaxError(
            f"{path}: process 0 wrote no tokenizer here; the workdir must be on a "
            "file system shared by all processes"
        )
    return BertTokenizer.from_pretrained(path)


def pretraining_model(cfg, tokenizer: BertTokenizer) -> nnx.Module:
    """BertForMaskedLM (BertForPreTraining in nsp layout): fresh of `model.size`, or continued from
    the HF-format dir `model.init_from`."""
    cls = BertForPreTraining if cfg.data.layout == "nsp" else BertForMaskedLM
    m = cfg.model
    if m.init_from:
        model = cls.from_pretrained(m.init_from, dtype=resolve_dtype(m.dtype))
        config = model.config
    else:
        config = BertConfig.preset(
            m.size,
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=int(m.max_position_embeddings),
            hidden_dropout_prob=float(m.hidden_dropout_prob),
            attention_probs_dropout_prob=float(m.attention_probs_dropout_prob),
            pad_token_id=tokenizer.pad_id,
            dtype=resolve_dtype(m.dtype),
        )
        model = cls(config, rngs=nnx.Rngs(int(cfg.train.seed)))
    if config.vocab_size < tokenizer.vocab_size:
        raise BertJaxError(
            f"model vocab_size {config.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size}"
        )
    if int(cfg.data.max_length) > config.max_position_embeddings:
        raise BertJaxError(
            f"data.max_length {cfg.data.max_length} exceeds the model's max_position_embeddings "
            f"{config.max_position_embeddings}"
        )
    return model


def _masking(cfg, tokenizer) -> MaskingConfig:
    d = cfg.data
    return MaskingConfig.for_tokenizer(
        tokenizer,
        mask_rate=float(d.mask_rate),
        max_predictions=int(d.max_predictions),
        whole_word=bool(d.whole_word),
    )


def prepared_dataset(config, workdir: str, tokenizer: BertTokenizer) -> PreparedDataset:
    """`data.corpus` as a prepared dataset: a dir `bert-jax prepare` wrote, or a corpus spec
    prepared into workdir/dataset first (once: a rerun finds it done), every process preparing
    its share of the shards. Its tokenizer and settings must match the config's."""
    d = config.data
    path = d.corpus
    if not is_prepared(path):
        path = os.path.join(workdir, "dataset")
        multihost = jax.process_count() > 1
        prepare_for_training(
            d.corpus,
            tokenizer,
            path,
            process=(jax.process_index(), jax.process_count()),
            barrier=multihost_utils.sync_global_devices if multihost else None,
            workers=int(d.get("prepare_workers", 0)),
            progress=bool(config.train.progress) and jax.process_index() == 0,
            max_length=int(d.max_length),
            layout=d.layout,
            eval_fraction=float(d.eval_fraction),
            text_field=d.get("text_field", "text"),
            shard_mb=float(d.get("shard_mb", 0.0)),
        )
    dataset = PreparedDataset(path)
    dataset.check_tokenizer(tokenizer, f"data.tokenizer={d.tokenizer}")
    init_from = config.model.init_from
    own = init_from and BertTokenizer.from_pretrained_if_present(init_from)
    if own:  # continuing a model: its vocabulary must be the one the ids come from
        dataset.check_tokenizer(own, f"model.init_from={init_from}")
    dataset.check_settings(max_length=int(d.max_length), layout=d.layout)
    return dataset


@claims_workdir("pretrain")  # checks the config, locks the workdir, remembers the config
def train_and_evaluate(config, workdir: str) -> dict:
    """Pretrain per `config` (configs/pretrain/*.py) in `workdir`; returns the final eval metrics.

    Writes workdir/metrics.jsonl, workdir/checkpoints/, workdir/tokenizer/ (a trained vocab),
    workdir/dataset/ (a raw corpus, prepared) and, at the end, an
    HF-format workdir/model/ (BertForMaskedLM, or BertForPreTraining in nsp layout) + tokenizer.
    """
    sharding.maybe_initialize_distributed()
    enable_compilation_cache()
    if config.data.layout not in ("packed", "nsp"):
        raise BertJaxError(f"data.layout must be 'packed' or 'nsp', got {config.data.layout!r}")
    os.makedirs(workdir, exist_ok=True)
    d = config.data
    if is_prepared(d.corpus) and d.tokenizer == "train":
        tokenizer = PreparedDataset(d.corpus).tokenizer()  # the ids' own vocabulary
    else:
        text_field = d.get("text_field", "text")
        docs = lambda: training_documents(d.corpus, float(d.eval_fraction), text_field)
        tokenizer = build_tokenizer(config, docs, workdir)
    model = pretraining_model(config, tokenizer)
    if jax.process_index() == 0:
        print(describe_dtype(config.model.dtype, model.config.dtype), file=sys.stderr)
    dataset = prepared_dataset(config, workdir, tokenizer)
    nsp = config.data.layout == "nsp"
    seed = int(config.train.seed)
    masking = _masking(config, tokenizer)
    batches = PretrainBatches(
        dataset.split("train"), batch_size=int(config.train.batch_size), seed=seed, masking=masking
    )
    trainer = Trainer(model, MaskedLMObjective(nsp), TrainerConfig.from_config(config), workdir)
    eval_fn = _held_out_evaluation(config, dataset, trainer, masking, tokenizer)
    try:
        state, final = trainer.fit(
            batches,
            eval_fn=eval_fn,
            tokens_per_batch=lambda b: int(b["attention_mask"].sum()),
        )
        model = trainer.export_model(state["params"])  # on every process: gathers FSDP shards
        if jax.process_index() == 0:
            model.save_pretrained(os.path.join(workdir, "model"), tokenizer)
            write_json(os.path.join(workdir, "eval_results.json"), final)
    finally:
        batches.close()
        trainer.close()
    return final


def _held_out_evaluation(config, dataset, trainer: Trainer, masking, tokenizer):
    """`eval_fn(params)`: MLM loss/accuracy/perplexity on the held-out rows, beside what a
    context-free (unigram) model scores on the same tokens. None when nothing is held out."""
    eval_rows = dataset.split("eval")
    if not len(eval_rows):
        message = f"{dataset.path} holds no held-out rows (eval_fraction 0?): no evaluation"
        warnings.warn(message, stacklevel=3)
        return None
    batch_size, seed = int(config.train.batch_size), int(config.train.seed)
    limit = int(config.train.eval_batches) * batch_size
    held_out = functools.partial(
        eval_batches, eval_rows, batch_size, seed, masking=masking, max_rows=limit
    )
    baseline: dict = {}

    def eval_fn(params):
        result = trainer.evaluate(params, held_out())
        result["perplexity"] = float(np.exp(min(result["mlm_loss"], 50.0)))
        if not baseline:  # over all held-out rows, whichever host computes it
            every_row = held_out(shard_index=0, shard_count=1)
            baseline.update(batches_unigram_baseline(every_row, tokenizer.special_ids))
        return {**result, **baseline}

    return eval_fn


def evaluate_mlm(
    model_dir: str,
    files: str,
    *,
    max_length: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    mask_rate: float = 0.15,
) -> dict:
    """MLM loss / accuracy / perplexity of an HF-format MLM model on any text files."""
    cls = model_class_for(model_dir)
    if cls not in (BertForMaskedLM, BertForPreTraining):
        raise BertJaxError(
            f"{model_dir}: {cls.__name__} has no MLM head (need BertForMaskedLM/BertForPreTraining)"
        )
    model = cls.from_pretrained(model_dir)
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    max_length = min(max_length, model.config.max_position_embeddings)
    rows = pretrain_rows(load_corpus(files), tokenizer, max_length, seed=seed)
    masking = MaskingConfig.for_tokenizer(
        tokenizer, mask_rate=mask_rate, max_predictions=max(1, int(max_length * mask_rate))
    )
    forward = jit_forward(model, _mlm_sums)
    total = np.zeros(3)
    for batch in eval_batches(
        rows, batch_size, seed, masking=masking, shard_index=0, shard_count=1
    ):
        total += np.array([float(x) for x in forward(**batch)])
    loss = total[0] / max(total[2], 1.0)
    return {
        "mlm_loss": loss,
        "mlm_accuracy": total[1] / max(total[2], 1.0),
        "perplexity": float(np.exp(min(loss, 50.0))),
        "masked_tokens": int(total[2]),
    }


def _mlm_sums(model, **batch):
    """(MLM loss sum, hits, masked tokens) of a batch; module-level so `jit_forward` caches it."""
    objective = MaskedLMObjective(nsp=False)
    logits = objective.outputs(model, batch)
    if isinstance(model, BertForPreTraining):  # score its MLM part only
        logits = logits[0]
    terms, metrics = objective.sums(logits, batch)
    return terms["mlm"], metrics["mlm_accuracy"], objective.counts(batch)["mlm"]
