"""What every subcommand shares: the one-line-error parser, checked integers, reading inputs."""

from __future__ import annotations

import argparse
import json
import sys

from bert_jax.errors import BertJaxError
from bert_jax.io import read_text


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one `error:` line (exit 2), like every other
    user mistake, instead of usage + message."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def at_least(low: int):
    """An argparse type: an integer >= `low`, else the flag's error names the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


POSITIVE = at_least(1)


def read_texts(args) -> list[str]:
    """TEXT arguments, then --input FILE lines (if the command has it); else stdin lines."""
    texts = list(args.text)
    if getattr(args, "input", None):
        texts += [line for line in read_text(args.input).splitlines() if line.strip()]
    if not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return texts


def read_records(args) -> list:
    """Predict inputs: JSON objects (QA models, --jsonl, or a .jsonl --input), else text lines."""
    if args.question is not None or args.context is not None:
        if args.question is None or args.context is None:
            raise BertJaxError("--question and --context go together")
        return [{"question": args.question, "context": args.context}]
    as_json = args.jsonl or (args.input or "").lower().endswith(".jsonl")
    if not as_json:
        return read_texts(args)
    records = []
    for n, line in enumerate(read_texts(args), 1):
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


def print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False))
