"""Experiment configs: a Python file with `get_config()` returning an ml_collections ConfigDict
(starting from training/defaults.py), overridden from the command line as
`--config.train.steps=100` (ml_collections' config_flags syntax)."""

from __future__ import annotations

import ast
import importlib.util
import os

import ml_collections

from bert_jax.errors import BertJaxError


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """`file.py` or `file.py:ARG` (ARG is passed to get_config, e.g. a pretraining phase)."""
    arg = None
    if ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    if not os.path.isfile(path):
        raise BertJaxError(f"--config {path}: file not found")
    spec = importlib.util.spec_from_file_location(f"bert_jax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a config file with a syntax error etc.
        raise BertJaxError(f"--config {path}: cannot be loaded ({type(e).__name__}: {e})") from None
    if not hasattr(module, "get_config"):
        raise BertJaxError(f"--config {path}: defines no get_config()")
    call = f"get_config({arg!r})" if arg is not None else "get_config()"
    try:
        config = module.get_config(arg) if arg is not None else module.get_config()
    except Exception as e:  # e.g. an unknown `:phase` (ValueError) or one it takes none of
        raise BertJaxError(f"--config {path}: {call} failed ({type(e).__name__}: {e})") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise BertJaxError(
            f"--config {path}: {call} returned {type(config).__name__}, not a ConfigDict"
        )
    return config


def _parse_value(text: str, current):
    """Parse an override string in the type of the current value."""
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("expected true/false")
    if isinstance(current, int):
        return int(float(text)) if "e" in text.lower() else int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        value = ast.literal_eval(text)
        return type(current)(value if isinstance(value, (tuple, list)) else (value,))
    try:
        return ast.literal_eval(text)  # None placeholders and other types
    except (ValueError, SyntaxError):
        return text


def set_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """config[dotted] = text parsed as the field's type. Unknown keys are an error."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, part in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise BertJaxError(
                f"--config.{dotted}: unknown config key {'.'.join(parents[: i + 1])!r}"
            )
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise BertJaxError(f"--config.{dotted}: unknown config key {dotted!r}")
    current = node[leaf]
    try:
        value = _parse_value(text, current)
    except (ValueError, SyntaxError) as e:
        raise BertJaxError(
            f"--config.{dotted}={text}: expected a {type(current).__name__} ({e})"
        ) from None
    with node.ignore_type():
        node[leaf] = value


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[str]
) -> ml_collections.ConfigDict:
    """Apply `--config.a.b=v` (or `--config.a.b v`) strings."""
    items = list(overrides)
    while items:
        arg = items.pop(0)
        if not arg.startswith("--config."):
            raise BertJaxError(
                f"unrecognised argument {arg!r} (overrides look like --config.train.steps=100)"
            )
        key = arg[len("--config.") :]
        if "=" in key:
            key, value = key.split("=", 1)
        elif items:
            value = items.pop(0)
        else:
            raise BertJaxError(f"{arg}: missing a value")
        set_override(config, key, value)
    return config


def load_config(path: str, overrides: list[str]) -> ml_collections.ConfigDict:
    return apply_overrides(load_config_file(path), overrides)
