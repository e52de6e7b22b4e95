"""Text classification (or regression) from your own CSV/TSV/JSONL files.

    bert-jax finetune --config configs/finetune/classify_csv.py --workdir runs/mine \
        --config.data.train_file=train.csv --config.data.eval_file=dev.csv \
        --config.data.text_column=review --config.data.label_column=stars

Sentence pairs: --config.data.text_pair_column=hypothesis. Regression on float labels:
--config.data.regression=true (reports Pearson/Spearman).
"""

from bert_jax.training.finetune import default_config


def get_config():
    c = default_config()
    c.task = "classification"
    c.model = ""  # HF-format BERT dir; "" = the bundled all-MiniLM-L6-v2
    c.data.source = "files"
    c.data.train_file = ""  # required
    c.data.eval_file = ""  # "" holds out data.eval_fraction of train_file
    c.data.text_column = "text"
    c.data.text_pair_column = ""  # e.g. "hypothesis" for pairs
    c.data.label_column = "label"
    c.data.regression = False  # True: float labels, MSE, Pearson/Spearman
    c.data.max_length = 128
    c.optimizer.learning_rate = 5e-5
    c.train.epochs = 3
    c.train.batch_size = 32
    return c
