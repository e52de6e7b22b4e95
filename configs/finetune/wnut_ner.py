"""Named-entity recognition on the bundled WNUT-2016 tweets (10 entity types, BIO tags), from
MiniLM.

2,394 sentences split 80/20 (seeded). Labels sit on each word's first sub-token; evaluation maps
predictions back to words and scores entities (seqeval rules). Entity F1 is modest on this noisy,
small set: tens of percent, not CoNLL's 90s.
"""

from bert_jax.training.defaults import finetune_config


def get_config():
    c = finetune_config()
    c.task = "ner"
    c.data.source = "wnut"  # bundled; or "files" with CoNLL data.train_file / data.eval_file
    c.data.max_length = 64  # word pieces per tweet
    c.optimizer.learning_rate = 1e-4  # a small set: a higher rate converges within a few epochs
    c.train.epochs = 5
    c.train.best_metric = "f1"  # entity-level F1
    return c
