"""Text classification (or regression) from your own CSV/TSV/JSONL files.

    bert-jax finetune --config configs/finetune/classify_csv.py --workdir runs/mine \
        --config.data.train_file=train.csv --config.data.eval_file=dev.csv \
        --config.data.text_column=review --config.data.label_column=stars

Sentence pairs: --config.data.text_pair_column=hypothesis. Regression on float labels:
--config.data.regression=true (reports Pearson/Spearman).
"""

from bert_jax.training.defaults import finetune_config


def get_config():
    # The defaults are this job; data.train_file (and usually data.eval_file) must be given.
    return finetune_config()
