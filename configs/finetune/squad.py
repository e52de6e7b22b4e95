"""Extractive question answering from SQuAD-format JSON (v1.1 or v2.0; or HF-style JSON lines).

    bert-jax finetune --config configs/finetune/squad.py --workdir runs/squad \
        --config.data.train_file=train-v1.1.json --config.data.eval_file=dev-v1.1.json

Long contexts are cut into windows of max_length tokens sharing doc_stride tokens; answers are
decoded over all windows (n-best, max answer length) and scored with the official EM/F1 rules.
For v2.0 set --config.qa.version_2=true (null answer when it beats the best span + threshold).
"""

from bert_jax.training.defaults import finetune_config


def get_config():
    c = finetune_config()
    c.task = "qa"
    c.data.max_length = 384  # tokens per window
    c.train.epochs = 2
    c.train.best_metric = "f1"
    return c
