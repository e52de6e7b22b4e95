"""Training: `pretrain`, `finetune`, `evaluate`, `sweep` (configs + `--config.a.b=value`)."""

from __future__ import annotations

import sys

from bert_jax.cli.common import POSITIVE, print_json
from bert_jax.errors import BertJaxError


def cmd_pretrain(args) -> None:
    from bert_jax.training.experiment_config import load_config
    from bert_jax.training.pretrain import train_and_evaluate

    train_and_evaluate(load_config(args.config, args.overrides), args.workdir)


def cmd_finetune(args) -> None:
    from bert_jax.training.experiment_config import load_config
    from bert_jax.training.finetune import finetune

    print_json(finetune(load_config(args.config, args.overrides), args.workdir))


def cmd_evaluate(args) -> None:
    if args.task == "mlm":
        from bert_jax.training.pretrain import evaluate_mlm

        if not args.files:
            raise BertJaxError("--task mlm needs --files GLOB (text files to score)")
        print_json(evaluate_mlm(args.model, args.files))
        return
    if not args.config:
        raise BertJaxError(
            "evaluate needs --config configs/finetune/<task>.py (or --task mlm --files GLOB)"
        )
    from bert_jax.training.experiment_config import load_config
    from bert_jax.training.finetune import evaluate

    print_json(evaluate(args.model, load_config(args.config, args.overrides)))


def cmd_sweep(args) -> None:
    from bert_jax.training import sweep

    if args.random is not None:
        space = sweep.parse_space(args.space) if args.space else sweep.PAPER_GRID
        trials = sweep.random_trials(space, args.random, args.seed)
    else:
        if args.space:
            raise BertJaxError("--space needs --random N")
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
        print_json({k: ranked[0][k] for k in ("trial", "settings", "metric", "value")})


def register(sub) -> None:
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
