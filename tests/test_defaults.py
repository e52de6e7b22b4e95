"""training/defaults.py and the configs built on it: loading them imports no jax, every config has
exactly the default fields, and each config's values are those its file set before the configs
were rewritten to state only what differs from the defaults."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from bert_jax.training.defaults import finetune_config, pretrain_config
from bert_jax.training.experiment_config import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
PHASED = ("bert_base.py", "bert_large_lamb.py")  # get_config("phase2") too

# configs/pretrain/tiny_shakespeare.py as it was: every field written out.
TINY = {
    "data.corpus": "shakespeare", "data.eval_fraction": 0.02, "data.tokenizer": "train",
    "data.vocab_size": 8192, "data.lowercase": True, "data.max_length": 128,
    "data.layout": "packed", "data.mask_rate": 0.15, "data.max_predictions": 20,
    "data.whole_word": False,
    "model.size": "tiny", "model.init_from": "", "model.max_position_embeddings": 128,
    "model.hidden_dropout_prob": 0.0,  # since: the demo learns more without dropout
    "model.attention_probs_dropout_prob": 0.0,
    "model.dtype": "auto",  # since: bfloat16 where native
    "optimizer.name": "adamw", "optimizer.learning_rate": 2e-3, "optimizer.weight_decay": 0.01,
    "optimizer.warmup_steps": 100, "optimizer.decay": "linear", "optimizer.clip_norm": 1.0,
    "optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.eps": 1e-6,
    "train.steps": 1800,  # since: 1200 with dropout
    "train.batch_size": 64, "train.grad_accumulation": 1, "train.seed": 0,
    "train.log_every": 50, "train.eval_every": 600, "train.eval_batches": 8,
    "train.eval_at_start": True, "train.checkpoint_every": 600, "train.keep_checkpoints": 2,
    "train.fsdp": 1, "train.progress": True,
    "train.tensorboard": False,  # added since
}  # fmt: skip
# What the BERT recipes set differently from TINY (eval_at_start: they had none, the code's
# default was False). Since: they read Wikipedia prepared by `bert-jax prepare` (README).
WIKIPEDIA = {
    "data.corpus": "data/wiki_nsp128",
    "data.vocab_size": 30522, "data.layout": "nsp", "model.max_position_embeddings": 512,
    "model.dtype": "bfloat16", "train.keep_checkpoints": 3, "train.eval_at_start": False,
    "model.hidden_dropout_prob": 0.1,
}  # fmt: skip
LONG = {"data.max_length": 512, "data.max_predictions": 80, "data.corpus": "data/wiki_nsp512"}
BASE = {
    **WIKIPEDIA, "model.size": "base", "model.attention_probs_dropout_prob": 0.1,
    "optimizer.learning_rate": 1e-4, "optimizer.warmup_steps": 10_000,
    "train.steps": 900_000, "train.batch_size": 256, "train.log_every": 100,
    "train.eval_every": 10_000, "train.eval_batches": 50, "train.checkpoint_every": 5_000,
}  # fmt: skip
LARGE = {
    **WIKIPEDIA, "data.whole_word": True, "model.size": "large", "optimizer.name": "lamb",
    "optimizer.learning_rate": 6e-3, "optimizer.warmup_steps": 2_000, "train.steps": 7_038,
    "train.batch_size": 65_536, "train.grad_accumulation": 64, "train.log_every": 10,
    "train.eval_every": 500, "train.eval_batches": 4, "train.checkpoint_every": 200,
}  # fmt: skip

# finetune.default_config() as it was: every field written out.
FINETUNE = {
    "task": "classification", "model": "",
    "dtype": "auto",  # since: bfloat16 where the hardware runs it natively
    "data.length_buckets": 6,  # since: padded lengths fitted to the data
    "data.source": "files", "data.glue_task": "sst2", "data.train_split": "train",
    "data.eval_split": "", "data.train_file": "", "data.eval_file": "", "data.text_column": "text",
    "data.text_pair_column": "", "data.label_column": "label", "data.labels": (),
    "data.regression": False, "data.max_length": 128, "data.doc_stride": 128,
    "data.max_query_length": 64, "data.max_train_examples": 0, "data.max_eval_examples": 0,
    "data.eval_fraction": 0.2, "data.split_seed": 0,
    "qa.n_best": 20, "qa.max_answer_length": 30, "qa.version_2": False, "qa.null_threshold": 0.0,
    "optimizer.name": "adamw", "optimizer.learning_rate": 5e-5, "optimizer.weight_decay": 0.01,
    "optimizer.warmup_fraction": 0.1, "optimizer.warmup_steps": -1, "optimizer.decay": "linear",
    "optimizer.clip_norm": 1.0, "optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.eps": 1e-8,
    "train.epochs": 3, "train.steps": 0, "train.batch_size": 32, "train.eval_batch_size": 0,
    "train.grad_accumulation": 1, "train.seed": 0, "train.best_metric": "", "train.eval_every": 0,
    "train.checkpoint_every": 0, "train.keep_checkpoints": 1, "train.stop_after": 0,
    "train.log_every": 10, "train.fsdp": 1, "train.progress": True,
    "train.tensorboard": False,  # added since
}  # fmt: skip

EXPECTED = {
    "pretrain/tiny_shakespeare.py": TINY,
    "pretrain/bert_base.py": {**TINY, **BASE},
    "pretrain/bert_base.py:phase2": {
        **TINY, **BASE, **LONG, "optimizer.warmup_steps": 1_000, "train.steps": 100_000,
    },
    "pretrain/bert_large_lamb.py": {**TINY, **LARGE},
    "pretrain/bert_large_lamb.py:phase2": {
        **TINY, **LARGE, **LONG, "optimizer.learning_rate": 4e-3, "optimizer.warmup_steps": 200,
        "train.steps": 1_563, "train.batch_size": 32_768,
    },
    "finetune/classify_csv.py": FINETUNE,
    "finetune/glue.py": {**FINETUNE, "data.source": "glue", "optimizer.learning_rate": 2e-5},
    "finetune/squad.py": {
        **FINETUNE, "task": "qa", "data.max_length": 384, "train.epochs": 2,
        "train.best_metric": "f1",
    },
    "finetune/tweet_sentiment.py": {
        **FINETUNE, "data.source": "tweet_sentiment", "data.max_length": 64,
        "train.best_metric": "accuracy",
    },
    "finetune/wnut_ner.py": {
        **FINETUNE, "task": "ner", "data.source": "wnut", "data.max_length": 64,
        "optimizer.learning_rate": 1e-4, "train.epochs": 5, "train.best_metric": "f1",
    },
}  # fmt: skip


def _config_names() -> list[str]:
    names = []
    for path in sorted(glob.glob(os.path.join(CONFIGS, "*", "*.py"))):
        name = os.path.relpath(path, CONFIGS)
        names += [name, f"{name}:phase2"] if os.path.basename(path) in PHASED else [name]
    return names


def _flat(config, prefix="") -> dict:
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_config_is_listed():
    assert sorted(EXPECTED) == _config_names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_values_are_what_the_file_set(name):
    config = _flat(load_config_file(os.path.join(CONFIGS, name)))
    expected = EXPECTED[name]
    assert {k: config.get(k, "MISSING") for k in expected} == expected
    assert all(type(config[k]) is type(v) for k, v in expected.items()), name
    defaults = pretrain_config() if name.startswith("pretrain") else finetune_config()
    assert config.keys() == _flat(defaults).keys()  # started from the defaults, nothing added


def test_defaults_and_configs_load_without_jax():
    code = f"""
import glob, json, sys
import bert_jax.training.defaults
from bert_jax.training.experiment_config import load_config_file
for name in {_config_names()!r}:
    load_config_file({CONFIGS!r} + "/" + name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "optax"))))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
