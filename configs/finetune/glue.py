"""A GLUE task from TensorFlow Datasets (`glue/<task>`): pip install 'bert-jax[tfds]' and prepare
the dataset once where downloads work (`tfds build glue/sst2`, array_record format).

    bert-jax finetune --config configs/finetune/glue.py --workdir runs/mrpc \
        --config.data.glue_task=mrpc

Pairs (mrpc, qqp, stsb, mnli, qnli, rte, wnli) use both sentences; stsb is regression (Pearson);
cola keeps the best model by MCC, the others by accuracy. mnli evaluates on validation_matched.
"""

from bert_jax.training.defaults import finetune_config


def get_config():
    c = finetune_config()
    c.data.source = "glue"  # data.glue_task: cola sst2 (default) mrpc qqp stsb mnli qnli rte wnli
    c.optimizer.learning_rate = 2e-5  # the BERT paper's GLUE range is 2e-5..5e-5
    return c
