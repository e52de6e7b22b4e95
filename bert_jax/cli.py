"""`bert-jax` command line: parses arguments and calls the library. No logic of its own.

User mistakes (BertJaxError, bad arguments, and OSErrors such as a full disk or a read-only
directory) print one `error: ...` line and exit with status 2; internal bugs keep their traceback.
Subcommands import the library inside their function: `bert-jax --help` should not pay for
loading JAX.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings


def _read_texts(args) -> list[str]:
    texts = list(args.text)
    if getattr(args, "input", None):
        from bert_jax.errors import BertJaxError

        try:
            with open(args.input, encoding="utf-8") as f:
                texts += [line.rstrip("\n") for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise BertJaxError(f"--input {args.input}: cannot read ({e})") from None
    if not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return texts


def _print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _load_model(directory, cls=None):
    from bert_jax.model import model_class_for
    from bert_jax.tokenizer import BertTokenizer

    cls = cls or model_class_for(directory)
    model = cls.from_pretrained(directory)
    return model, BertTokenizer.from_pretrained(directory)


# ---- subcommands ---------------------------------------------------------------------------------


def cmd_embed(args) -> None:
    from bert_jax.inference.embed import embed
    from bert_jax.model.modeling import BertModel

    model, tokenizer = _load_model(args.model, BertModel)
    texts = _read_texts(args)
    vectors = embed(
        model,
        tokenizer,
        texts,
        pooling=args.pooling,
        normalize=args.normalize,
        batch_size=args.batch_size,
    )
    for text, vec in zip(texts, vectors):
        _print_json({"text": text, "embedding": [round(float(v), 7) for v in vec]})


def cmd_fill_mask(args) -> None:
    from bert_jax.inference.embed import fill_mask

    model, tokenizer = _load_model(args.model)
    _print_json(
        {"text": args.text, "masks": fill_mask(model, tokenizer, args.text, top_k=args.top_k)}
    )


def cmd_convert(args) -> None:
    from bert_jax.model import convert
    from bert_jax.tokenizer import BertTokenizer

    convert(
        args.src,
        args.dst,
        BertTokenizer.from_pretrained_if_present(args.src),
        overwrite=args.overwrite,
    )
    print(f"wrote {args.dst}", file=sys.stderr)


def cmd_tokenizer_train(args) -> None:
    from bert_jax.tokenizer import train_tokenizer

    tok = train_tokenizer(
        args.files, args.vocab_size, args.out, lowercase=not args.cased, overwrite=args.overwrite
    )
    print(f"wrote {args.out} (vocab size {tok.vocab_size})", file=sys.stderr)


def cmd_pretrain(args) -> None:
    from bert_jax.training.experiment_config import load_config
    from bert_jax.training.pretrain import train_and_evaluate

    config = load_config(args.config, args.overrides)
    train_and_evaluate(config, args.workdir)


def cmd_finetune(args) -> None:
    from bert_jax.training.experiment_config import load_config
    from bert_jax.training.finetune import finetune

    config = load_config(args.config, args.overrides)
    result = finetune(config, args.workdir)
    _print_json(result)


def cmd_evaluate(args) -> None:
    from bert_jax.errors import BertJaxError

    if args.task == "mlm":
        from bert_jax.training.pretrain import evaluate_mlm

        if not args.files:
            raise BertJaxError("--task mlm needs --files GLOB (text files to score)")
        _print_json(evaluate_mlm(args.model, args.files))
        return
    if not args.config:
        raise BertJaxError(
            "evaluate needs --config configs/finetune/<task>.py (or --task mlm --files GLOB)"
        )
    from bert_jax.training.experiment_config import load_config
    from bert_jax.training.finetune import evaluate

    _print_json(evaluate(args.model, load_config(args.config, args.overrides)))


def _read_records(args) -> list:
    """Predict inputs: JSON objects (QA models, --jsonl, or a .jsonl --input), else text lines."""
    from bert_jax.errors import BertJaxError

    if args.question is not None or args.context is not None:
        if args.question is None or args.context is None:
            raise BertJaxError("--question and --context go together")
        return [{"question": args.question, "context": args.context}]
    as_json = args.jsonl or (args.input or "").lower().endswith(".jsonl")
    if not as_json:
        return _read_texts(args)
    records = []
    for n, line in enumerate(_read_texts(args), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise BertJaxError(
                f"{args.input or 'input'} line {n}: invalid JSON ({e.msg})"
            ) from None
        if not isinstance(rec, dict):
            raise BertJaxError(f"{args.input or 'input'} line {n}: expected a JSON object")
        records.append(rec)
    return records


def cmd_predict(args) -> None:
    from bert_jax.inference.predict import Predictor

    predictor = Predictor.from_pretrained(
        args.model, batch_size=args.batch_size, max_length=args.max_length
    )
    if predictor.task == "qa" and args.question is None:
        args.jsonl = True  # QA input is {"question", "context"} per line
    records = _read_records(args)
    results = predictor.predict(records) if records else []
    for rec, result in zip(records, results):
        if isinstance(rec, dict):
            head = {k: rec[k] for k in ("text", "text_pair", "question") if k in rec}
        else:
            head = {"text": rec}
        _print_json({**head, **result})


def cmd_explain(args) -> None:
    from bert_jax.inference.explain import explain

    texts = _read_texts(args)
    for result in explain(
        args.model,
        texts,
        method=args.method,
        steps=args.steps,
        target=args.target,
        baseline=args.baseline,
        batch_size=args.batch_size,
    ):
        _print_json(result)


def cmd_sweep(args) -> None:
    from bert_jax.training import sweep

    if args.random is not None:
        space = sweep.parse_space(args.space) if args.space else sweep.PAPER_GRID
        trials = sweep.random_trials(space, args.random, args.seed)
    else:
        if args.space:
            raise_error("--space needs --random N")
        trials = sweep.grid_trials(sweep.parse_grid(args.grid) if args.grid else sweep.PAPER_GRID)
    ranked = sweep.run_sweep(
        args.config,
        args.workdir,
        trials,
        base_overrides=args.overrides,
        retry_failed=args.retry_failed,
    )
    print(sweep.summary_table(ranked), file=sys.stderr)
    if ranked and ranked[0]["status"] == "ok":
        _print_json({k: ranked[0][k] for k in ("trial", "settings", "metric", "value")})


def raise_error(message: str):
    from bert_jax.errors import BertJaxError

    raise BertJaxError(message)


# ---- parser --------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one `error:` line (exit 2), like every other
    user mistake, instead of usage + message."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


POSITIVE = _at_least(1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bert-jax",
        description="BERT in JAX/Flax NNX: pretrain, fine-tune, embed, and read/write the Hugging Face format.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    p = sub.add_parser(
        "embed",
        help="sentence embeddings as JSON lines",
        description='One JSON line per text: {"text", "embedding"}. Reads stdin lines when no TEXT is given.',
    )
    p.add_argument("--model", required=True, help="HF-format model directory")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "fill-mask",
        help="predict the [MASK] tokens of a text",
        description="JSON with the top-k tokens and scores for each [MASK] in TEXT.",
    )
    p.add_argument("--model", required=True, help="HF-format model directory with an MLM head")
    p.add_argument("--top-k", type=POSITIVE, default=5)
    p.add_argument("text", metavar="TEXT")
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser(
        "convert",
        help="rewrite any HF-format BERT checkpoint as config.json + model.safetensors",
        description="Reads model.safetensors, sharded safetensors or pytorch_model.bin (with or "
        "without the bert. prefix, legacy gamma/beta names) and writes DST losslessly.",
    )
    p.add_argument("src", metavar="SRC_DIR")
    p.add_argument("dst", metavar="DST_DIR")
    p.add_argument(
        "--overwrite", action="store_true", help="replace DST_DIR even if it holds other files"
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    t = tsub.add_parser(
        "train",
        help="train a WordPiece vocabulary from text files",
        description="Train a WordPiece vocab; writes tokenizer.json, vocab.txt and configs to OUT.",
    )
    t.add_argument("--files", required=True, help="glob of UTF-8 text files, e.g. 'corpus/*.txt'")
    t.add_argument("--vocab-size", type=_at_least(6), default=30522)
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it holds other files"
    )
    t.add_argument(
        "--cased", action="store_true", help="keep case and accents (default: lower-case)"
    )
    t.set_defaults(func=cmd_tokenizer_train)

    p = sub.add_parser(
        "pretrain",
        help="pretrain a BERT (MLM, optional NSP)",
        description="Runs train_and_evaluate(config, workdir); rerunning resumes from the latest "
        "checkpoint. Override any config field with --config.a.b=value.",
    )
    p.add_argument("--config", required=True, help="configs/pretrain/<name>.py")
    p.add_argument("--workdir", required=True)
    p.set_defaults(func=cmd_pretrain, accepts_overrides=True)

    p = sub.add_parser(
        "finetune",
        help="fine-tune a classifier, NER tagger or QA model",
        description="Runs finetune(config, workdir): trains, evaluates each epoch, keeps the "
        "best model in WORKDIR/model (HF format) and its metrics in eval_results.json; "
        "rerunning resumes. Override any config field with --config.a.b=value.",
    )
    p.add_argument("--config", required=True, help="configs/finetune/<task>.py")
    p.add_argument("--workdir", required=True)
    p.set_defaults(func=cmd_finetune, accepts_overrides=True)

    p = sub.add_parser(
        "evaluate",
        help="metrics of a fine-tuned model (or MLM) as JSON",
        description="Scores --model on the evaluation data of --config (label ids from the "
        "model's id2label); --task mlm --files GLOB gives MLM loss/accuracy/perplexity.",
    )
    p.add_argument("--model", required=True, help="HF-format model directory")
    p.add_argument("--config", help="configs/finetune/<task>.py (with --config.data.* overrides)")
    p.add_argument("--task", choices=["mlm"], help="mlm: masked-LM evaluation on --files")
    p.add_argument("--files", help="with --task mlm: glob of UTF-8 text files")
    p.set_defaults(func=cmd_evaluate, accepts_overrides=True)

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
        type=_at_least(3),
        default=None,
        help="tokens per input (default: the model's)",
    )
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser(
        "explain",
        help="word attributions for a classifier's predictions (JSON lines)",
        description="One JSON line per text: integrated-gradients (default) or attention-rollout "
        "word attributions. Reads stdin lines when no TEXT is given.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="HF-format BertForSequenceClassification / BertForTokenClassification directory",
    )
    p.add_argument("--method", choices=["ig", "rollout"], default="ig")
    p.add_argument(
        "--steps",
        type=_at_least(2),
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
    p = sub.add_parser(
        "sweep",
        help="grid or random hyper-parameter search over a fine-tuning config",
        description="Runs each trial through `bert-jax finetune` in DIR/trials/<name>; records "
        "DIR/sweep.jsonl, prints a ranking, copies the best model to DIR/best/. Rerunning skips "
        "finished trials. Default: the BERT paper's grid (lr 5e-5/3e-5/2e-5, batch 16/32, "
        "epochs 2/3/4).",
    )
    p.add_argument("--config", required=True, help="configs/finetune/<task>.py")
    p.add_argument("--workdir", required=True)
    p.add_argument(
        "--grid", nargs="+", default=[], metavar="KEY=V1,V2", help="grid values per config key"
    )
    p.add_argument(
        "--random", type=POSITIVE, default=None, metavar="N", help="random search with N trials"
    )
    p.add_argument(
        "--space", nargs="+", default=[], metavar="KEY=LO:HI[:log]", help="ranges for --random"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random search")
    p.add_argument("--retry-failed", action="store_true", help="rerun trials recorded as failed")
    p.set_defaults(func=cmd_sweep, accepts_overrides=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bert_jax.errors import BertJaxError

    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(None if argv is None else [str(a) for a in argv])
        if extra and not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0) or a bad argument (2, its error line already printed)
        return int(e.code or 0)
    args.overrides = extra
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        args.func(args)
    except BertJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # permission, no space left, not a directory: the path says what to fix
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
