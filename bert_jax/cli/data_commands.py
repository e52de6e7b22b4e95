"""Data: `prepare` (a corpus -> sharded ArrayRecord files + manifest, once, before pretraining)."""

from __future__ import annotations

import argparse

from bert_jax.cli.common import at_least, print_json
from bert_jax.errors import BertJaxError


def _part(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    try:
        part = (int(i), int(n))
    except ValueError:
        part = None
    if not sep or part is None or not 0 <= part[0] < part[1]:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return part


def cmd_prepare(args) -> None:
    settings = dict(
        max_length=args.max_length,
        layout=args.layout,
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        text_field=args.text_field,
        shard_mb=args.shard_mb,
        block_mb=args.block_mb,
    )
    if args.beam:
        from bert_jax.data.beam_pipeline import run_beam

        result = run_beam(args.corpus, args.tokenizer, args.out, args.overrides, **settings)
    else:
        if args.overrides:
            raise BertJaxError(f"unrecognized arguments: {' '.join(args.overrides)}")
        from bert_jax.data.prepare import prepare

        result = prepare(
            args.corpus,
            args.tokenizer,
            args.out,
            workers=args.workers,
            part=args.shard,
            progress=not args.quiet,
            **settings,
        )
    print_json(result.get("totals", result) | {"out": args.out})


def register(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="tokenize a corpus once into sharded ArrayRecord files for `pretrain`",
        description="Streams the corpus (a glob of text / JSONL files, .gz or .zst; "
        "tfds:NAME[:SPLIT]; shakespeare) through the tokenizer into packed rows or NSP pairs, "
        "written as OUT/shard-*.arrayrecord + manifest.json: byte-identical whatever --workers "
        "or --shard; rerun to resume. Pass OUT as data.corpus to pretrain. With --beam, runs "
        "the same work as an Apache Beam pipeline; arguments after -- are Beam options.",
    )
    p.add_argument("--corpus", required=True, help="corpus spec, e.g. 'wiki/*.txt.gz'")
    p.add_argument("--tokenizer", required=True, help="tokenizer (or model) directory")
    p.add_argument("--max-length", type=at_least(5), required=True, help="tokens per row")
    p.add_argument("--out", required=True, help="output directory (new, or one to resume)")
    p.add_argument("--layout", choices=["packed", "nsp"], default="packed")
    p.add_argument("--eval-fraction", type=float, default=0.0, help="documents held out")
    p.add_argument("--seed", type=int, default=0, help="NSP pairing seed")
    p.add_argument("--text-field", default="text", help="JSONL/TFDS field with the text")
    p.add_argument(
        "--shard-mb", type=float, default=0.0, help="input MB per shard (0: corpus / 256)"
    )
    p.add_argument(
        "--block-mb",
        type=float,
        default=4.0,
        help="text tokenized at once; NSP draws random next segments from it (default 4)",
    )
    p.add_argument(
        "--workers", type=at_least(0), default=0, help="processes (default 0: all cores)"
    )
    p.add_argument(
        "--shard", type=_part, default=(0, 1), metavar="I/N", help="prepare part I of N only"
    )
    p.add_argument("--beam", action="store_true", help="run on Apache Beam (pip bert-jax[beam])")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare, accepts_overrides=True)
