#!/usr/bin/env bash
# The main job, offline on bundled data (README "Two commands"):
#   1. pretrain a BERT-tiny with its own WordPiece vocab on the bundled Shakespeare corpus,
#   2. show fill-mask predictions of the result,
#   3. fine-tune the bundled all-MiniLM-L6-v2 on the bundled tweet-sentiment set, print test accuracy.
# Extra overrides for each stage (tests use them to shorten the run):
#   PRETRAIN_ARGS="--config.train.steps=20 ..." FINETUNE_ARGS="..." RUNS=/tmp/runs bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BERT_JAX=${BERT_JAX:-.venv/bin/bert-jax}
RUNS=${RUNS:-runs}

echo "== 1/3 pretraining BERT-tiny on Shakespeare -> $RUNS/tiny_shakespeare"
$BERT_JAX pretrain --config configs/pretrain/tiny_shakespeare.py --workdir "$RUNS/tiny_shakespeare" ${PRETRAIN_ARGS:-}
echo "held-out MLM metrics: $(cat "$RUNS/tiny_shakespeare/eval_results.json" | tr -d '\n ')"

echo "== 2/3 fill-mask with the pretrained model"
for text in "to be or not to [MASK], that is the question" "my lord, the [MASK] is dead" "i love thee [MASK] than my life"; do
  $BERT_JAX fill-mask --model "$RUNS/tiny_shakespeare/model" --top-k 5 "$text"
done

echo "== 3/3 fine-tuning all-MiniLM-L6-v2 on tweet sentiment -> $RUNS/tweet_sentiment"
$BERT_JAX finetune --config configs/finetune/tweet_sentiment.py --workdir "$RUNS/tweet_sentiment" \
  --config.data.max_train_examples=4000 --config.train.epochs=1 ${FINETUNE_ARGS:-}
echo "test-set metrics: $(cat "$RUNS/tweet_sentiment/eval_results.json" | tr -d '\n ')"
$BERT_JAX predict --model "$RUNS/tweet_sentiment/model" "I love my new self-driving car!" "Traffic again, this is awful."
