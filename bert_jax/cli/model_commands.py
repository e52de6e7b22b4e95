"""Model files: `convert` (any HF-format checkpoint → ours), `export` (a serving directory) and
`tokenizer train`."""

from __future__ import annotations

import sys

from bert_jax.cli.common import Parser, at_least


def cmd_convert(args) -> None:
    from bert_jax.model import convert
    from bert_jax.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained_if_present(args.src)
    convert(args.src, args.dst, tokenizer, overwrite=args.overwrite)
    print(f"wrote {args.dst}", file=sys.stderr)


def cmd_export(args) -> None:
    from bert_jax.inference.export import export_model

    manifest = export_model(
        args.model, args.out, format=args.format, dtype=args.dtype, overwrite=args.overwrite
    )
    print(f"wrote {args.out} ({manifest['format']}, {manifest['task']})", file=sys.stderr)


def cmd_tokenizer_train(args) -> None:
    from bert_jax.data.sources import corpus_lines
    from bert_jax.tokenizer import train_tokenizer

    texts = lambda: corpus_lines(args.files, args.max_lines, args.text_field)  # streamed per pass
    tok = train_tokenizer(
        texts, args.vocab_size, args.out, lowercase=not args.cased, overwrite=args.overwrite
    )
    print(f"wrote {args.out} (vocab size {tok.vocab_size})", file=sys.stderr)


def register(sub) -> None:
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

    p = sub.add_parser(
        "export",
        help="the inference function (head included) as a self-contained serving directory",
        description="Writes OUT: the model's inference function with symbolic batch and length "
        "(StableHLO through jax.export for CPU/CUDA/TPU, or ONNX through jax2onnx), its "
        "weights, the tokenizer and export.json (task, inputs, outputs, labels). Load it with "
        "bert_jax.load_exported(OUT).",
    )
    p.add_argument("--model", required=True, help="HF-format model directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=["stablehlo", "onnx"], default="stablehlo")
    p.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it holds other files"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(
        dest="tokenizer_command", required=True, metavar="ACTION", parser_class=Parser
    )
    t = tsub.add_parser(
        "train",
        help="train a WordPiece vocabulary from text files",
        description="Train a WordPiece vocab on a corpus, streamed (any `prepare` corpus spec: "
        "text / JSONL globs, .gz/.zst, tfds:NAME); writes tokenizer.json, vocab.txt and configs "
        "to OUT.",
    )
    t.add_argument(
        "--files", required=True, help="corpus spec, e.g. 'corpus/*.txt' or 'wiki/*.jsonl.zst'"
    )
    t.add_argument(
        "--max-lines", type=at_least(1), default=None, help="train on the first N lines only"
    )
    t.add_argument("--text-field", default="text", help="JSONL/TFDS field with the text")
    t.add_argument("--vocab-size", type=at_least(6), default=30522)
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it holds other files"
    )
    t.add_argument(
        "--cased", action="store_true", help="keep case and accents (default: lower-case)"
    )
    t.set_defaults(func=cmd_tokenizer_train)
