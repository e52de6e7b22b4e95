"""Extractive question answering from SQuAD-format JSON (v1.1 or v2.0; or HF-style JSON lines).

    bert-jax finetune --config configs/finetune/squad.py --workdir runs/squad \
        --config.data.train_file=train-v1.1.json --config.data.eval_file=dev-v1.1.json

Long contexts are cut into windows of max_length tokens sharing doc_stride tokens; answers are
decoded over all windows (n-best, max answer length) and scored with the official EM/F1 rules.
For v2.0 set --config.qa.version_2=true (null answer when it beats the best span + threshold).
"""

from bert_jax.training.finetune import default_config


def get_config():
    c = default_config()
    c.task = "qa"
    c.model = ""  # HF-format BERT dir; "" = the bundled all-MiniLM-L6-v2
    c.data.source = "files"
    c.data.train_file = ""  # SQuAD JSON, required
    c.data.eval_file = ""  # SQuAD JSON, required
    c.data.max_length = 384  # tokens per window
    c.data.doc_stride = 128  # context tokens shared by consecutive windows
    c.data.max_query_length = 64
    c.qa.n_best = 20
    c.qa.max_answer_length = 30
    c.qa.version_2 = False
    c.qa.null_threshold = 0.0
    c.optimizer.learning_rate = 5e-5
    c.train.epochs = 2
    c.train.batch_size = 32
    c.train.best_metric = "f1"
    return c
