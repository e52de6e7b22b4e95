"""`bert-jax` command line: parses arguments and calls the library. No logic of its own.

One module per group of subcommands, each with `register(subparsers)`: model files (convert,
export, tokenizer), inference (embed, fill-mask, predict, explain, plot), data (prepare),
training (pretrain,
finetune, evaluate, sweep). User mistakes (BertJaxError, bad arguments, and OSErrors such as a
full disk or a read-only directory) print one `error: ...` line and exit with status 2; internal
bugs keep their traceback. Subcommands import the library inside their function: `bert-jax
--help` should not pay for loading JAX.
"""

from __future__ import annotations

import os
import sys
import warnings

from bert_jax.cli import data_commands, inference_commands, model_commands, training_commands
from bert_jax.cli.common import Parser
from bert_jax.errors import BertJaxError

GROUPS = (model_commands, inference_commands, data_commands, training_commands)


def build_parser() -> Parser:
    parser = Parser(
        prog="bert-jax",
        description="BERT in JAX/Flax NNX: pretrain, fine-tune, embed, and read/write the "
        "Hugging Face format.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
