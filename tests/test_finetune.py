"""Fine-tuning end to end: MiniLM on bundled tweets through the CLI, regression, NER and QA on a
tiny random BERT; saved models against transformers; Predictor batching; resume; CLI error lines."""

from __future__ import annotations

import json
import math
import os
import re
import sys

import numpy as np
import pytest
from flax import nnx

from bert_jax.cli import main
from bert_jax.inference.predict import Predictor
from bert_jax.model.config import BertConfig
from bert_jax.model.modeling import BertModel
from bert_jax.tasks.batching import length_buckets, sorted_batches
from bert_jax.tasks.datasets import load_task_data
from bert_jax.tokenizer import BertTokenizer
from bert_jax.training.epoch_batches import EpochBatches
from bert_jax.training.experiment_config import load_config
from bert_jax.training.finetune import finetune

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "finetune")
QUIET = "--config.train.progress=false"
TWEETS = [
    "--config.data.max_train_examples=256",
    "--config.data.max_eval_examples=128",
    "--config.data.max_length=32",
    "--config.train.epochs=1",
    "--config.optimizer.learning_rate=1e-4",
    QUIET,
]


def config_path(name: str) -> str:
    return os.path.join(CONFIGS, f"{name}.py")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def assert_matches_transformers(model_dir, head: str, texts, pairs=None):
    """transformers loads `model_dir` as `head` with no missing/unexpected keys and gives our
    logits (≤1e-4)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref, info = getattr(transformers, head).from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
    enc = tok(texts, pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = ref.eval()(**enc)
    expected = (
        [out.start_logits, out.end_logits] if head.endswith("QuestionAnswering") else [out.logits]
    )

    from bert_jax.model import load_model

    ours = load_model(model_dir)
    ours.eval()
    got = ours(**{k: enc[k].numpy() for k in ("input_ids", "token_type_ids", "attention_mask")})
    got = list(got) if isinstance(got, tuple) else [got]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.asarray(g), e.numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, minilm_dir):
    """A random 2-layer BERT with MiniLM's vocabulary (fast to fine-tune)."""
    tok = BertTokenizer.from_pretrained(minilm_dir)
    d = str(tmp_path_factory.mktemp("tiny") / "model")
    config = BertConfig.tiny(vocab_size=tok.vocab_size, max_position_embeddings=128)
    BertModel(config, rngs=nnx.Rngs(0)).save_pretrained(d, tok)
    return d


# ---- classification from MiniLM, through the CLI -------------------------------------------------


@pytest.fixture(scope="module")
def tweet_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tweets"))
    code = main(
        ["finetune", "--config", config_path("tweet_sentiment"), "--workdir", workdir, *TWEETS]
    )
    assert code == 0
    return workdir


def test_tweet_finetune_beats_majority(tweet_run, minilm_dir):
    results = read_json(os.path.join(tweet_run, "eval_results.json"))
    assert {"accuracy", "macro_f1", "mcc", "loss", "step"} <= set(results)
    config = load_config(config_path("tweet_sentiment"), TWEETS)
    labels = load_task_data(
        config, BertTokenizer.from_pretrained(minilm_dir), train=False
    ).reference
    majority = np.bincount(labels).max() / len(labels)
    # A few steps from MiniLM beat always-"negative", or at least the untrained head's loss (ln 3).
    assert results["accuracy"] > majority or results["loss"] < math.log(3) - 0.02, (
        results,
        majority,
    )
    model_config = read_json(os.path.join(tweet_run, "model", "config.json"))
    assert model_config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert model_config["architectures"] == ["BertForSequenceClassification"]


def test_tweet_model_matches_transformers(tweet_run, real_sentences):
    assert_matches_transformers(
        os.path.join(tweet_run, "model"), "BertForSequenceClassification", real_sentences[:5]
    )


def test_predict_batch_equals_one_by_one(tweet_run, real_sentences, capsys, tmp_path):
    model_dir = os.path.join(tweet_run, "model")
    predictor = Predictor.from_pretrained(model_dir)
    texts = real_sentences  # mixed lengths: one word to ~300 tokens
    batch = predictor.predict(texts)
    single = [predictor.predict(t) for t in texts]
    for b, s in zip(batch, single):
        assert b["label"] == s["label"] and set(b["scores"]) == {"negative", "neutral", "positive"}
        np.testing.assert_allclose(
            list(b["scores"].values()), list(s["scores"].values()), atol=1e-5
        )
        assert b["score"] == max(b["scores"].values())

    path = tmp_path / "in.txt"  # the CLI: a file of lines in, JSON lines out, same predictions
    path.write_text("\n".join(texts[8:14]) + "\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "predict", "--model", model_dir, "--input", path)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == texts[8:14]
    assert [r["label"] for r in rows] == [b["label"] for b in batch[8:14]]


def test_explain_completeness_on_the_fine_tuned_minilm(tweet_run, real_sentences, capsys):
    """Integrated gradients on the briefly fine-tuned MiniLM, through the CLI: the attributions sum
    to the target logit's change from the [PAD] baseline within 1%."""
    model_dir = os.path.join(tweet_run, "model")
    texts = [real_sentences[0], real_sentences[9], "I love my new self-driving car!"]
    code, out, _ = run_cli(capsys, "explain", "--model", model_dir, "--steps", "128", *texts)
    assert code == 0
    for text, line in zip(texts, out.splitlines()):
        result = json.loads(line)
        assert result["text"] == text and result["label"] in ("negative", "neutral", "positive")
        total = sum(w["attribution"] for w in result["words"])
        change = result["logit"] - result["baseline_logit"]
        assert abs(total - change) <= 0.01 * abs(change) + 1e-6, (total, change)
    code, out, _ = run_cli(capsys, "explain", "--model", model_dir, "--method", "rollout", texts[2])
    rollout = json.loads(out)
    # BERT words: I love my new self - driving car !
    assert (
        code == 0
        and len(rollout["words"]) == 9
        and all(w["attribution"] >= 0 for w in rollout["words"])
    )


def test_evaluate_cli_reproduces_eval_results(tweet_run, capsys):
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--model",
        os.path.join(tweet_run, "model"),
        "--config",
        config_path("tweet_sentiment"),
        *TWEETS,
    )
    assert code == 0
    metrics, saved = json.loads(out), read_json(os.path.join(tweet_run, "eval_results.json"))
    for key in ("accuracy", "macro_f1", "mcc"):
        assert metrics[key] == pytest.approx(saved[key], abs=1e-6)
    assert metrics["loss"] == pytest.approx(saved["loss"], abs=1e-4)


# ---- regression, NER, QA on a tiny random BERT ---------------------------------------------------


def test_regression_from_csv(tiny_dir, tmp_path):
    rng = np.random.default_rng(0)
    words = ["good", "great", "bad", "awful", "fine", "movie", "plot", "actors", "the", "was"]
    rows = ["text,score"]
    for _ in range(64):
        ws = list(rng.choice(words, size=rng.integers(3, 12)))
        rows.append(f"{' '.join(ws)},{ws.count('good') + ws.count('great') - ws.count('bad'):.1f}")
    (tmp_path / "train.csv").write_text("\n".join(rows[:49]) + "\n", encoding="utf-8")
    (tmp_path / "eval.csv").write_text("\n".join(rows[:1] + rows[49:]) + "\n", encoding="utf-8")
    config = load_config(
        config_path("classify_csv"),
        [
            f"--config.model={tiny_dir}",
            f"--config.data.train_file={tmp_path / 'train.csv'}",
            f"--config.data.eval_file={tmp_path / 'eval.csv'}",
            "--config.data.label_column=score",
            "--config.data.regression=true",
            "--config.data.max_length=16",
            "--config.train.epochs=2",
            "--config.train.batch_size=16",
            "--config.optimizer.learning_rate=1e-3",
            QUIET,
        ],
    )
    results = finetune(config, str(tmp_path / "run"))
    assert results["best_metric"] == "pearson"
    assert all(math.isfinite(results[k]) for k in ("pearson", "spearman", "mse"))
    model_dir = str(tmp_path / "run" / "model")
    assert read_json(os.path.join(model_dir, "config.json"))["problem_type"] == "regression"
    assert_matches_transformers(model_dir, "BertForSequenceClassification", ["good plot", "bad"])
    assert set(Predictor.from_pretrained(model_dir).predict("great actors")) == {"value"}


@pytest.fixture(scope="module")
def ner_run(tiny_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ner"))
    config = load_config(
        config_path("wnut_ner"),
        [
            f"--config.model={tiny_dir}",
            "--config.data.max_train_examples=128",
            "--config.data.max_eval_examples=64",
            "--config.data.max_length=32",
            "--config.train.epochs=1",
            QUIET,
        ],
    )
    return finetune(config, workdir), workdir


def test_ner_finetune_and_parity(ner_run):
    results, workdir = ner_run
    assert {"precision", "recall", "f1", "num_true"} <= set(results) and results["num_true"] > 0
    model_dir = os.path.join(workdir, "model")
    labels = read_json(os.path.join(model_dir, "config.json"))["id2label"]
    assert labels["0"] == "O" and "B-person" in labels.values()
    assert_matches_transformers(
        model_dir, "BertForTokenClassification", ["@jim is in New York with Apple", "lol"]
    )


def test_ner_predict_entities(ner_run, real_sentences):
    predictor = Predictor.from_pretrained(os.path.join(ner_run[1], "model"))
    texts = real_sentences[8:15] + ["Barack Obama visited Paris, France!"]
    batch = predictor.predict(texts)
    single = [predictor.predict(t) for t in texts]
    assert any(r["entities"] for r in batch)  # an untrained tagger still predicts plenty
    for text, b, s in zip(texts, batch, single):
        assert [(e["label"], e["start"], e["end"]) for e in b["entities"]] == [
            (e["label"], e["start"], e["end"]) for e in s["entities"]
        ]
        for e, f in zip(b["entities"], s["entities"]):
            assert e["text"] == text[e["start"] : e["end"]] and abs(e["score"] - f["score"]) <= 1e-5


def _squad(paragraphs) -> dict:
    """SQuAD v1.1 JSON from [(context, [(id, question, answer)])]; answer_start found in context."""
    return {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": c,
                        "qas": [
                            {
                                "id": i,
                                "question": q,
                                "answers": [{"text": a, "answer_start": c.index(a)}],
                            }
                            for i, q, a in qas
                        ],
                    }
                    for c, qas in paragraphs
                ],
            }
        ],
    }


SQUAD = _squad(
    [
        (
            "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
            "France. It is named after the engineer Gustave Eiffel, whose company designed and "
            "built the tower from 1887 to 1889.",
            [
                ("a", "Where is the Eiffel Tower?", "Paris"),
                ("b", "Who is it named after?", "Gustave Eiffel"),
            ],
        ),
        ("Marie Curie won two Nobel Prizes.", [("c", "How many Nobel Prizes did she win?", "two")]),
    ]
)


def test_qa_finetune_parity_and_predict(tiny_dir, tmp_path, capsys):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    config = load_config(
        config_path("squad"),
        [
            f"--config.model={tiny_dir}",
            f"--config.data.train_file={path}",
            f"--config.data.eval_file={path}",
            "--config.data.max_length=32",
            "--config.data.doc_stride=8",
            "--config.train.steps=2",
            "--config.train.batch_size=4",
            QUIET,
        ],
    )
    results = finetune(config, str(tmp_path / "run"))
    assert {"exact_match", "f1", "total"} <= set(results) and results["total"] == 3
    model_dir = str(tmp_path / "run" / "model")
    assert_matches_transformers(
        model_dir,
        "BertForQuestionAnswering",
        ["Where is it?", "Who?"],
        ["In Paris, France.", "Marie Curie did."],
    )

    predictor = Predictor.from_pretrained(model_dir, max_length=32, doc_stride=8)
    paragraphs = SQUAD["data"][0]["paragraphs"]
    questions = [q["question"] for p in paragraphs for q in p["qas"]]
    contexts = [p["context"] for p in paragraphs for _ in p["qas"]]
    batch = predictor.predict(questions=questions, contexts=contexts)
    for q, c, b in zip(questions, contexts, batch):
        s = predictor.predict(questions=q, contexts=c)
        assert (b["answer"], b["start"], b["end"]) == (s["answer"], s["start"], s["end"])
        assert abs(b["score"] - s["score"]) <= 1e-5 and b["answer"] == c[b["start"] : b["end"]]

    code, out, _ = run_cli(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--question",
        questions[2],
        "--context",
        contexts[2],
    )
    assert code == 0 and {"question", "answer", "start", "end", "score"} <= set(json.loads(out))


# ---- resume --------------------------------------------------------------------------------------


def test_interrupted_finetune_resumes_to_the_same_result(tiny_dir, tmp_path):
    from safetensors.numpy import load_file

    base = [
        f"--config.model={tiny_dir}",
        "--config.data.max_train_examples=64",
        "--config.data.max_eval_examples=32",
        "--config.data.max_length=16",
        "--config.train.epochs=2",
        "--config.train.batch_size=16",
        "--config.train.log_every=1",
        "--config.optimizer.learning_rate=1e-3",
        QUIET,
    ]
    path = config_path("tweet_sentiment")
    full = finetune(load_config(path, base), str(tmp_path / "full"))
    # 64 examples / 16 = 4 steps per epoch: stop after the first epoch, then run again.
    assert finetune(
        load_config(path, base + ["--config.train.stop_after=4"]), str(tmp_path / "cut")
    ) == {"stopped_at_step": 4}
    assert os.path.exists(tmp_path / "cut" / "eval_results.json")  # epoch 1's model is kept
    resumed = finetune(load_config(path, base), str(tmp_path / "cut"))
    assert resumed == full

    def lines(run):
        rows = [json.loads(x) for x in open(tmp_path / run / "metrics.jsonl", encoding="utf-8")]
        return [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in rows]

    assert lines("cut") == lines("full") and len(lines("full")) == 8 + 2
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_epoch_batches_fixed_shapes_and_state():
    rng = np.random.default_rng(0)
    features = [
        {"input_ids": list(range(n)), "token_type_ids": [0] * n, "labels": i % 3}
        for i, n in enumerate(rng.integers(3, 60, size=50))
    ]
    it = EpochBatches(features, batch_size=8, buckets=[16, 32, 64], pad_id=0, seed=1)
    assert it.steps_per_epoch == 7
    epoch = [next(it) for _ in range(7)]
    assert {b["input_ids"].shape for b in epoch} <= {(8, 16), (8, 32), (8, 64)}
    assert sum(b["weights"].sum() for b in epoch) == 50  # each example once; padding rows weigh 0
    state = it.get_state()
    nxt = next(it)
    it.set_state(state)
    again = next(it)
    assert all(np.array_equal(nxt[k], again[k]) for k in nxt)
    assert (
        not np.array_equal(it.batch_at(0)["input_ids"], it.batch_at(7)["input_ids"])
        or it.batch_at(0)["input_ids"].shape != it.batch_at(7)["input_ids"].shape
    )  # reshuffled


def test_length_buckets_and_prediction_batches():
    assert length_buckets(64) == [16, 24, 32, 48, 64]
    assert length_buckets(100) == [16, 24, 32, 48, 64, 96, 100]
    fine = length_buckets(512, per_octave=4)
    assert fine[:8] == [16, 24, 32, 40, 48, 56, 64, 80] and fine[-3:] == [384, 448, 512]
    assert all(b % 8 == 0 for b in fine)

    # 20 short texts and one long outlier: prediction batches cut before the outlier, so the
    # short texts are not padded to its length; evaluation batches keep `batch_size` rows.
    lengths = [10 + i % 9 for i in range(20)] + [300]
    features = [{"input_ids": [1] * n, "token_type_ids": [0] * n} for n in lengths]
    shapes = [
        (b["input_ids"].shape, len(i))
        for i, b in sorted_batches(features, 32, fine, 0, fixed_rows=False)
    ]
    assert shapes == [((32, 24), 20), ((1, 320), 1)]
    batches = list(sorted_batches(features, 8, fine, 0))
    assert [b["input_ids"].shape for _, b in batches] == [(8, 16), (8, 16), (8, 320)]
    assert sorted(np.concatenate([i for i, _ in batches])) == list(range(21))


# ---- CLI error lines -----------------------------------------------------------------------------


def _bad_inputs(d):
    """case → (config, {data field: value}, message pattern)."""
    (d / "nolabel.csv").write_text("text,stars\nnice,5\n", encoding="utf-8")
    (d / "train.csv").write_text("text,label\ngood,pos\nbad,neg\n", encoding="utf-8")
    (d / "eval.csv").write_text("text,label\nfine,pos\nodd,maybe\n", encoding="utf-8")
    (d / "empty.csv").write_text("", encoding="utf-8")
    (d / "train.conll").write_text("Paris\tB-loc\nis\tO\n\nnice\n", encoding="utf-8")
    (d / "good.conll").write_text("Paris\tB-loc\nis\tO\n", encoding="utf-8")
    (d / "eval.conll").write_text("Rome\tB-loc\n\nBob\tB-person\n", encoding="utf-8")
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] = 3
    (d / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    csv, ner, squad = config_path("classify_csv"), config_path("wnut_ner"), config_path("squad")
    return {
        "missing column": (
            csv,
            {"train_file": d / "nolabel.csv"},
            r"nolabel.csv: column 'label' is missing",
        ),
        "unknown eval label": (
            csv,
            {"train_file": d / "train.csv", "eval_file": d / "eval.csv"},
            r"eval.csv line 3: unknown label 'maybe'",
        ),
        "empty file": (csv, {"train_file": d / "empty.csv"}, r"empty.csv: no data rows"),
        "conll without tag": (
            ner,
            {"source": "files", "train_file": d / "train.conll", "eval_file": d / "good.conll"},
            r"train.conll line 4: expected",
        ),
        "unknown eval tag": (
            ner,
            {"source": "files", "train_file": d / "good.conll", "eval_file": d / "eval.conll"},
            r"eval.conll line 3: unknown tag 'B-person'",
        ),
        "squad answer mismatch": (
            squad,
            {"train_file": d / "bad.json", "eval_file": d / "bad.json"},
            r"bad.json question id 'c': answer 'two' does not match",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing column",
        "unknown eval label",
        "empty file",
        "conll without tag",
        "unknown eval tag",
        "squad answer mismatch",
    ],
)
def test_cli_bad_input_is_one_error_line(case, tiny_dir, tmp_path, capsys):
    config, fields, message = _bad_inputs(tmp_path)[case]
    overrides = [f"--config.data.{k}={v}" for k, v in fields.items()]
    code, _, err = run_cli(
        capsys,
        "finetune",
        "--config",
        config,
        "--workdir",
        tmp_path / "run",
        f"--config.model={tiny_dir}",
        *overrides,
    )
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]


def test_cli_glue_without_tfds_and_mlm_without_files(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    code, _, err = run_cli(
        capsys,
        "finetune",
        "--config",
        config_path("glue"),
        "--workdir",
        tmp_path,
        f"--config.model={tiny_dir}",
        "--config.data.glue_task=mrpc",
    )
    assert code == 2 and err.strip() == (
        "error: glue/mrpc needs tensorflow-datasets: pip install 'bert-jax[tfds]'"
    )
    code, _, err = run_cli(capsys, "evaluate", "--model", tiny_dir, "--task", "mlm")
    assert code == 2 and err.startswith("error: --task mlm needs --files")


def test_tfds_classification_source_under_mock_data(minilm_dir):
    """`data.source=tfds:NAME` (GLUE goes the same way) through tfds.data_source, no TensorFlow."""
    tfds = pytest.importorskip("tensorflow_datasets")
    config = load_config(
        config_path("classify_csv"),
        ["--config.data.source=tfds:imdb_reviews", "--config.data.max_length=32"],
    )
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    with tfds.testing.mock_data(num_examples=6):
        data = load_task_data(config, tokenizer)
        assert data.label_names == ["neg", "pos"] and len(data.train) == len(data.eval) == 6
        config.data.label_column = "stars"
        with pytest.raises(Exception, match="imdb_reviews has no feature 'stars'"):
            load_task_data(config, tokenizer)
