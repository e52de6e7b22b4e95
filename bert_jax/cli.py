"""`bert-jax` command line: parses arguments and calls the library. No logic of its own.

User mistakes (BertJaxError) print one `error: ...` line and exit with status 2.
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
    from bert_jax import hf
    from bert_jax.tokenizer import BertTokenizer

    cls = cls or hf.model_class_for(directory)
    model = cls.from_pretrained(directory)
    return model, BertTokenizer.from_pretrained(directory)


# ---- subcommands ---------------------------------------------------------------------------------


def cmd_embed(args) -> None:
    from bert_jax.inference import embed
    from bert_jax.model import BertModel

    model, tokenizer = _load_model(args.model, BertModel)
    texts = _read_texts(args)
    vectors = embed(model, tokenizer, texts, pooling=args.pooling, normalize=args.normalize,
                    batch_size=args.batch_size)
    for text, vec in zip(texts, vectors):
        _print_json({"text": text, "embedding": [round(float(v), 7) for v in vec]})


def cmd_fill_mask(args) -> None:
    from bert_jax.inference import fill_mask

    model, tokenizer = _load_model(args.model)
    _print_json({"text": args.text, "masks": fill_mask(model, tokenizer, args.text, top_k=args.top_k)})


def cmd_convert(args) -> None:
    from bert_jax.hf import convert

    convert(args.src, args.dst)
    print(f"wrote {args.dst}", file=sys.stderr)


def cmd_tokenizer_train(args) -> None:
    from bert_jax.tokenizer import train_tokenizer

    tok = train_tokenizer(args.files, args.vocab_size, args.out, lowercase=not args.cased)
    print(f"wrote {args.out} (vocab size {tok.vocab_size})", file=sys.stderr)


def cmd_pretrain(args) -> None:
    from bert_jax.experiment_config import load_config
    from bert_jax.pretrain import train_and_evaluate

    config = load_config(args.config, args.overrides)
    train_and_evaluate(config, args.workdir)


# ---- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bert-jax",
        description="BERT in JAX/Flax NNX: pretrain, fine-tune, embed, and read/write the Hugging Face format.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="sentence embeddings as JSON lines",
                       description="One JSON line per text: {\"text\", \"embedding\"}. Reads stdin lines when no TEXT is given.")
    p.add_argument("--model", required=True, help="HF-format model directory")
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("fill-mask", help="predict the [MASK] tokens of a text",
                       description="JSON with the top-k tokens and scores for each [MASK] in TEXT.")
    p.add_argument("--model", required=True, help="HF-format model directory with an MLM head")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("text", metavar="TEXT")
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("convert", help="rewrite any HF-format BERT checkpoint as config.json + model.safetensors",
                       description="Reads model.safetensors, sharded safetensors or pytorch_model.bin (with or "
                       "without the bert. prefix, legacy gamma/beta names) and writes DST losslessly.")
    p.add_argument("src", metavar="SRC_DIR")
    p.add_argument("dst", metavar="DST_DIR")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    t = tsub.add_parser("train", help="train a WordPiece vocabulary from text files",
                        description="Train a WordPiece vocab; writes tokenizer.json, vocab.txt and configs to OUT.")
    t.add_argument("--files", required=True, help="glob of UTF-8 text files, e.g. 'corpus/*.txt'")
    t.add_argument("--vocab-size", type=int, default=30522)
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--cased", action="store_true", help="keep case and accents (default: lower-case)")
    t.set_defaults(func=cmd_tokenizer_train)

    p = sub.add_parser("pretrain", help="pretrain a BERT (MLM, optional NSP)",
                       description="Runs train_and_evaluate(config, workdir); rerunning resumes from the latest "
                       "checkpoint. Override any config field with --config.a.b=value.")
    p.add_argument("--config", required=True, help="configs/pretrain/<name>.py")
    p.add_argument("--workdir", required=True)
    p.set_defaults(func=cmd_pretrain, accepts_overrides=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bert_jax.errors import BertJaxError

    parser = build_parser()
    args, extra = parser.parse_known_args(None if argv is None else [str(a) for a in argv])
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        args.func(args)
    except BertJaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
