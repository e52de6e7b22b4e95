"""Using a model: `embed`, `fill-mask`, `predict`, `explain`, and `plot` for training curves."""

from __future__ import annotations

import sys

from bert_jax.cli.common import POSITIVE, at_least, print_json, read_records, read_texts


def _load(directory, cls=None):
    from bert_jax.model import model_class_for
    from bert_jax.tokenizer import BertTokenizer

    model = (cls or model_class_for(directory)).from_pretrained(directory)
    return model, BertTokenizer.from_pretrained(directory)


def cmd_embed(args) -> None:
    from bert_jax.inference.embed import embed
    from bert_jax.model.auto import encoder_class_for

    model, tokenizer = _load(args.model, encoder_class_for(args.model))  # the family's encoder
    texts = read_texts(args)
    vectors = embed(
        model,
        tokenizer,
        texts,
        pooling=args.pooling,
        normalize=args.normalize,
        batch_size=args.batch_size,
    )
    for text, vec in zip(texts, vectors):
        print_json({"text": text, "embedding": [round(float(v), 7) for v in vec]})


def cmd_fill_mask(args) -> None:
    from bert_jax.inference.embed import fill_mask

    model, tokenizer = _load(args.model)
    masks = fill_mask(model, tokenizer, args.text, top_k=args.top_k)
    print_json({"text": args.text, "masks": masks})


def cmd_predict(args) -> None:
    from bert_jax.inference.predict import Predictor

    predictor = Predictor.from_pretrained(
        args.model, batch_size=args.batch_size, max_length=args.max_length
    )
    if predictor.task == "qa" and args.question is None:
        args.jsonl = True  # QA input is {"question", "context"} per line
    records = read_records(args)
    results = predictor.predict(records) if records else []
    for rec, result in zip(records, results):
        if isinstance(rec, dict):
            head = {k: rec[k] for k in ("text", "text_pair", "question") if k in rec}
        else:
            head = {"text": rec}
        print_json({**head, **result})


def cmd_explain(args) -> None:
    from bert_jax.inference.explain import explain

    texts = read_texts(args)
    for result in explain(
        args.model,
        texts,
        method=args.method,
        steps=args.steps,
        target=args.target,
        baseline=args.baseline,
        batch_size=args.batch_size,
    ):
        print_json(result)


def cmd_plot(args) -> None:
    from bert_jax.inference.curves import plot_runs

    out = plot_runs(args.workdirs, args.out)
    print(f"wrote {out}", file=sys.stderr)


def register(sub) -> None:
    _add_embed(sub)
    _add_fill_mask(sub)
    _add_predict(sub)
    _add_explain(sub)
    _add_plot(sub)


def _add_embed(sub) -> None:
    p = sub.add_parser(
        "embed",
        help="sentence embeddings as JSON lines",
        description='One JSON line per text: {"text", "embedding"}. Reads stdin lines when no '
        "TEXT is given.",
    )
    p.add_argument("--model", required=True, help="HF-format model directory")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.set_defaults(func=cmd_embed)


def _add_fill_mask(sub) -> None:
    p = sub.add_parser(
        "fill-mask",
        help="predict the [MASK] tokens of a text",
        description="JSON with the top-k tokens and scores for each [MASK] in TEXT.",
    )
    p.add_argument("--model", required=True, help="HF-format model directory with an MLM head")
    p.add_argument("--top-k", type=POSITIVE, default=5)
    p.add_argument("text", metavar="TEXT")
    p.set_defaults(func=cmd_fill_mask)


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predictions of a fine-tuned model as JSON lines",
        description="One JSON line per input: label/score/scores (classification), value "
        "(regression), entities (NER) or answer/start/end/score (QA). Reads TEXT arguments, "
        '--input FILE or stdin lines; JSON lines ({"text"[, "text_pair"]} or '
        '{"question", "context"}) with --jsonl, a .jsonl file, or a QA model.',
    )
    p.add_argument("--model", required=True, help="fine-tuned HF-format model directory")
    p.add_argument("--input", help="file with one input per line")
    p.add_argument("--jsonl", action="store_true", help="inputs are JSON objects, one per line")
    p.add_argument("--question", help="QA: the question (with --context)")
    p.add_argument("--context", help="QA: the passage to answer from")
    p.add_argument("--batch-size", type=POSITIVE, default=64)
    p.add_argument(
        "--max-length",
        type=at_least(3),
        default=None,
        help="tokens per input (default: the model's)",
    )
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.set_defaults(func=cmd_predict)


def _add_explain(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="word attributions for a classifier's predictions (JSON lines)",
        description="One JSON line per text: integrated-gradients (default) or attention-rollout "
        "word attributions. Reads stdin lines when no TEXT is given.",
    )
    p.add_argument("--model", required=True, help="HF-format sequence or token classifier dir")
    p.add_argument("--method", choices=["ig", "rollout"], default="ig")
    p.add_argument(
        "--steps",
        type=at_least(2),
        default=50,
        help="ig integration points (more: smaller 'delta')",
    )
    p.add_argument(
        "--target", default=None, help="label name or index to explain (default: the prediction)"
    )
    p.add_argument("--baseline", choices=["pad", "zero"], default="pad")
    p.add_argument("--batch-size", type=POSITIVE, default=32, help="interpolation points per batch")
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.set_defaults(func=cmd_explain)


def _add_plot(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="PNG of the loss/accuracy curves of one or more runs",
        description="Reads WORKDIR/metrics.jsonl of each run and draws train/eval loss and the "
        "eval scores against step.",
    )
    p.add_argument("workdirs", nargs="+", metavar="WORKDIR")
    p.add_argument("--out", default="curves.png", help="PNG to write (default: curves.png)")
    p.set_defaults(func=cmd_plot)
