#!/usr/bin/env bash
# The main job, offline on bundled data (README "Two commands"):
#   1. pretrain a BERT-tiny with its own WordPiece vocab on the bundled Shakespeare corpus,
#   2. show fill-mask predictions of the result,
#   3. fine-tune the bundled all-MiniLM-L6-v2 on the bundled tweet-sentiment set, print test accuracy,
#   4. label two showcase texts, and draw each stage's curves to runs/*/curves.png.
# Each score is printed beside what a model that learnt nothing scores (unigram / majority class).
# Extra overrides for each stage (tests use them to shorten the run):
#   PRETRAIN_ARGS="--config.train.steps=20 ..." FINETUNE_ARGS="..." RUNS=/tmp/runs bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BERT_JAX=${BERT_JAX:-.venv/bin/bert-jax}
PYTHON=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs}

report() {  # report FILE SCORE BASELINE_SCORE LOSS BASELINE_LOSS: one line of numbers and meaning
  "$PYTHON" - "$@" <<'PY'
import json, sys
path, score, base, loss, base_loss = sys.argv[1:]
r = json.load(open(path))
line = f"  {score} {r[score]:.3f} (a model that ignores the text: {r[base]:.3f})"
if loss in r and base_loss in r:
    gap = r[base_loss] - r[loss]
    line += f"; loss {r[loss]:.3f} nats, {gap:.2f} below the unigram entropy {r[base_loss]:.3f}"
print(line)
PY
}

echo "== 1/4 pretraining BERT-tiny on Shakespeare -> $RUNS/tiny_shakespeare"
$BERT_JAX pretrain --config configs/pretrain/tiny_shakespeare.py --workdir "$RUNS/tiny_shakespeare" ${PRETRAIN_ARGS:-}
echo "held-out MLM:"
report "$RUNS/tiny_shakespeare/eval_results.json" mlm_accuracy unigram_accuracy mlm_loss unigram_loss

echo "== 2/4 fill-mask with the pretrained model"
for text in "to be or not to [MASK], that is the question" "my lord, the [MASK] is dead" "i love thee [MASK] than my life"; do
  $BERT_JAX fill-mask --model "$RUNS/tiny_shakespeare/model" --top-k 5 "$text"
done

echo "== 3/4 fine-tuning all-MiniLM-L6-v2 on tweet sentiment -> $RUNS/tweet_sentiment"
$BERT_JAX finetune --config configs/finetune/tweet_sentiment.py --workdir "$RUNS/tweet_sentiment" \
  --config.data.max_train_examples=${DEMO_TRAIN_EXAMPLES:-12000} --config.train.epochs=1 ${FINETUNE_ARGS:-} > /dev/null
echo "test set:"
report "$RUNS/tweet_sentiment/eval_results.json" accuracy majority_accuracy loss none

echo "== 4/4 predictions and curves"
$BERT_JAX predict --model "$RUNS/tweet_sentiment/model" "I love my new self-driving car!" "Traffic again, this is awful."
for run in tiny_shakespeare tweet_sentiment; do
  $BERT_JAX plot "$RUNS/$run" --out "$RUNS/$run/curves.png"
done
