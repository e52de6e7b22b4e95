"""`prepare` as an Apache Beam pipeline: the same shards, byte for byte, on any Beam runner.

The driver plans the corpus and writes plan.json and the tokenizer into OUT (`prepare.setup`);
the pipeline fans the unfinished shard indices out to the runner's workers, each of which runs
`prepare.prepare_shard(out, i)` — the very function the local driver runs, hence the same bytes;
the driver then checks every shard and writes manifest.json (`prepare.finalize`). A failed or
preempted job is resumed by running it again: finished shards are skipped.

Workers open the corpus and OUT by path, so both must be reachable at the same path on every
worker: a shared or FUSE-mounted file system (gcsfuse on Dataflow/GKE, Filestore/NFS, an HDFS
mount for Flink/Spark). Needs `pip install 'bert-jax[beam]'`:

    bert-jax prepare --corpus '/mnt/corpus/*.txt.zst' --tokenizer vocab --max-length 128 \\
        --out /mnt/data/wiki128 --beam -- --runner=FlinkRunner --flink_master=host:8081
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bert_jax.data.prepare import finalize, prepare_shard, setup, shard_done
from bert_jax.errors import BertJaxError
from bert_jax.io import read_json
from bert_jax.tokenizer import BertTokenizer


def build_pipeline(pipeline, out: str, shards: Sequence[int]):
    """Add the shard-making steps for `shards` of the plan in `out` to a beam.Pipeline."""
    import apache_beam as beam

    return (
        pipeline
        | "ShardIndices" >> beam.Create(list(shards))
        | "Spread" >> beam.Reshuffle()  # one shard per work item, balanced over workers
        | "PrepareShard" >> beam.Map(_prepare_shard, out)
    )


def run_beam(
    corpus: str,
    tokenizer: BertTokenizer | str,
    out: str,
    beam_args: Sequence[str] = (),
    **settings,
) -> dict:
    """Prepare `corpus` into `out` on Beam (`beam_args`: pipeline options such as
    --runner=DataflowRunner); `settings` as for `prepare`. Returns the manifest."""
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise BertJaxError("--beam needs Apache Beam: pip install 'bert-jax[beam]'") from None
    out = os.path.abspath(out)
    plan = setup(corpus, tokenizer, out, **settings)
    if os.path.isfile(os.path.join(out, "manifest.json")):
        return read_json(os.path.join(out, "manifest.json"))
    todo = [i for i in range(len(plan["shards"])) if shard_done(out, plan, i) is None]
    if todo:
        options = PipelineOptions([a for a in beam_args if a != "--"])
        with beam.Pipeline(options=options) as pipeline:
            build_pipeline(pipeline, out, todo)
    return finalize(out)


def _prepare_shard(index: int, out: str) -> dict:
    return prepare_shard(out, index)
