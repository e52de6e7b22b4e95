"""A GLUE task from TensorFlow Datasets (`glue/<task>`): pip install 'bert-jax[tfds]' and prepare
the dataset once where downloads work (`tfds build glue/sst2`, array_record format).

    bert-jax finetune --config configs/finetune/glue.py --workdir runs/mrpc --config.data.glue_task=mrpc

Pairs (mrpc, qqp, stsb, mnli, qnli, rte, wnli) use both sentences; stsb is regression (Pearson);
cola keeps the best model by MCC, the others by accuracy. mnli evaluates on validation_matched.
"""

from bert_jax.training.finetune import default_config


def get_config():
    c = default_config()
    c.task = "classification"
    c.model = ""  # HF-format BERT dir; "" = the bundled all-MiniLM-L6-v2
    c.data.source = "glue"
    c.data.glue_task = "sst2"  # cola sst2 mrpc qqp stsb mnli qnli rte wnli
    c.data.regression = False  # stsb is always regression (float labels, Pearson/Spearman)
    c.data.max_length = 128
    c.optimizer.learning_rate = 2e-5  # the BERT paper's GLUE range is 2e-5..5e-5
    c.train.epochs = 3
    c.train.batch_size = 32
    c.train.best_metric = ""  # "" = mcc for cola, pearson for regression, else accuracy
    return c
