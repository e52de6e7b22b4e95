"""How each encoder family spells itself in Hugging Face's format: config.json fields, weight keys,
and the one encoder trait that differs. One `Format` per config.json `model_type`.

Our modules are the same for every family (a head's encoder at `.bert` with embeddings, layers,
pooler; heads `mlm`, `classifier`, `qa_outputs`, ...), so a family's format is data: its encoder's
keys sit under HF's `base_model_prefix` (`roberta.`, ...) and these tables give its HF names.
What a family's heads compute differently (activations, dropout placement) its classes say, in
families.py.
"""

from __future__ import annotations

import dataclasses

# Our dotted module path (without the leaf) → HF module name; regexes, first full match wins.
_EMBEDDINGS = (
    (r"embeddings\.word", "embeddings.word_embeddings"),
    (r"embeddings\.position", "embeddings.position_embeddings"),
    (r"embeddings\.token_type", "embeddings.token_type_embeddings"),
    (r"embeddings\.norm", "embeddings.LayerNorm"),
    (r"embeddings_project", "embeddings_project"),  # ELECTRA: embedding_size → hidden_size
)
_BERT_LAYERS = (
    (r"layers\.(\d+)\.attention\.(query|key|value)", r"encoder.layer.\1.attention.self.\2"),
    (r"layers\.(\d+)\.attention\.output", r"encoder.layer.\1.attention.output.dense"),
    (r"layers\.(\d+)\.attention\.norm", r"encoder.layer.\1.attention.output.LayerNorm"),
    (r"layers\.(\d+)\.mlp\.intermediate", r"encoder.layer.\1.intermediate.dense"),
    (r"layers\.(\d+)\.mlp\.output", r"encoder.layer.\1.output.dense"),
    (r"layers\.(\d+)\.mlp\.norm", r"encoder.layer.\1.output.LayerNorm"),
    (r"pooler", "pooler.dense"),
)
_DISTILBERT_LAYERS = (
    (r"layers\.(\d+)\.attention\.query", r"transformer.layer.\1.attention.q_lin"),
    (r"layers\.(\d+)\.attention\.key", r"transformer.layer.\1.attention.k_lin"),
    (r"layers\.(\d+)\.attention\.value", r"transformer.layer.\1.attention.v_lin"),
    (r"layers\.(\d+)\.attention\.output", r"transformer.layer.\1.attention.out_lin"),
    (r"layers\.(\d+)\.attention\.norm", r"transformer.layer.\1.sa_layer_norm"),
    (r"layers\.(\d+)\.mlp\.intermediate", r"transformer.layer.\1.ffn.lin1"),
    (r"layers\.(\d+)\.mlp\.output", r"transformer.layer.\1.ffn.lin2"),
    (r"layers\.(\d+)\.mlp\.norm", r"transformer.layer.\1.output_layer_norm"),
)
_TASK_HEADS = (
    (r"classifier\.(dense|out_proj)", r"classifier.\1"),  # RoBERTa / ELECTRA classification head
    (r"(classifier|qa_outputs)", r"\1"),
)

# Fields BERT-style config.json files share with BertConfig, by the same name.
_BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "initializer_range",
    "classifier_dropout",
)


@dataclasses.dataclass(frozen=True)
class Format:
    model_type: str
    prefix: str  # HF base_model_prefix: where the encoder's keys live in a head checkpoint
    modules: tuple[tuple[str, str], ...]
    # Checkpoint keys that repeat another tensor (tied output embeddings, a bias alias) → that key.
    tied: tuple[tuple[str, str], ...]
    # (our BertConfig field, HF config.json field), both ways.
    fields: tuple[tuple[str, str], ...] = tuple((f, f) for f in _BERT_FIELDS)
    # Our fields the family does not store (DistilBERT: no token types, LayerNorm eps fixed).
    fixed: tuple[tuple[str, object], ...] = ()
    positions_after_padding: bool = False  # RoBERTa: position ids start at pad_token_id + 1


FORMATS: dict[str, Format] = {
    "bert": Format(
        "bert",
        "bert",
        _EMBEDDINGS
        + _BERT_LAYERS
        + (
            (r"mlm\.transform", "cls.predictions.transform.dense"),
            (r"mlm\.norm", "cls.predictions.transform.LayerNorm"),
            (r"mlm", "cls.predictions"),
            (r"nsp", "cls.seq_relationship"),
        )
        + _TASK_HEADS,
        tied=(
            ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
            ("cls.predictions.decoder.bias", "cls.predictions.bias"),
        ),
    ),
    "roberta": Format(
        "roberta",
        "roberta",
        _EMBEDDINGS
        + _BERT_LAYERS
        + (
            (r"mlm\.transform", "lm_head.dense"),
            (r"mlm\.norm", "lm_head.layer_norm"),
            (r"mlm", "lm_head"),
        )
        + _TASK_HEADS,
        tied=(
            ("lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight"),
            ("lm_head.decoder.bias", "lm_head.bias"),
        ),
        positions_after_padding=True,
    ),
    "electra": Format(
        "electra",
        "electra",
        _EMBEDDINGS
        + _BERT_LAYERS
        + (
            (r"mlm\.transform", "generator_predictions.dense"),
            (r"mlm\.norm", "generator_predictions.LayerNorm"),
            (r"mlm", "generator_lm_head"),
            (
                r"discriminator_predictions\.(dense|dense_prediction)",
                r"discriminator_predictions.\1",
            ),
        )
        + _TASK_HEADS,
        tied=(("generator_lm_head.weight", "electra.embeddings.word_embeddings.weight"),),
        fields=tuple((f, f) for f in _BERT_FIELDS) + (("embedding_size", "embedding_size"),),
    ),
    "distilbert": Format(
        "distilbert",
        "distilbert",
        _EMBEDDINGS
        + _DISTILBERT_LAYERS
        + (
            (r"mlm\.transform", "vocab_transform"),
            (r"mlm\.norm", "vocab_layer_norm"),
            (r"mlm", "vocab_projector"),
            (r"classifier\.dense", "pre_classifier"),
            (r"classifier\.out_proj", "classifier"),
        )
        + _TASK_HEADS,
        tied=(("vocab_projector.weight", "distilbert.embeddings.word_embeddings.weight"),),
        fields=(
            ("vocab_size", "vocab_size"),
            ("hidden_size", "dim"),
            ("num_hidden_layers", "n_layers"),
            ("num_attention_heads", "n_heads"),
            ("intermediate_size", "hidden_dim"),
            ("hidden_act", "activation"),
            ("hidden_dropout_prob", "dropout"),
            ("attention_probs_dropout_prob", "attention_dropout"),
            ("max_position_embeddings", "max_position_embeddings"),
            ("pad_token_id", "pad_token_id"),
            ("initializer_range", "initializer_range"),
        ),
        fixed=(("type_vocab_size", 0), ("layer_norm_eps", 1e-12)),
    ),
}
# XLM-RoBERTa is RoBERTa with another vocabulary; its checkpoints use the `roberta.` prefix too.
FORMATS["xlm-roberta"] = dataclasses.replace(FORMATS["roberta"], model_type="xlm-roberta")

# Non-parameter tensors HF checkpoints may hold (buffers).
BUFFER_KEY = r"(\w+\.)?embeddings\.(position_ids|token_type_ids)"
# Keys of the encoder itself (before the prefix is added or after it is removed).
ENCODER_KEY = r"(embeddings|embeddings_project|encoder|transformer|pooler)\."
