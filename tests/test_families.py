"""RoBERTa, XLM-R, ELECTRA and DistilBERT against transformers (PyTorch), the oracle.

For every family and head: a randomly initialised transformers model (every weight perturbed, so a
mis-mapped bias or LayerNorm shows) saved to disk loads here with the same hidden states and head
outputs in a padded batch (right- and left-padded rows), the same gradients of a loss on those
outputs, and our saved directory loads back in transformers with exactly its keys.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file  # noqa: E402

from bert_jax.errors import BertJaxError  # noqa: E402
from bert_jax.model import hf, load_model  # noqa: E402
from bert_jax.model.auto import class_for_task, model_class_for  # noqa: E402
from bert_jax.model.modeling import BertForMaskedLM  # noqa: E402

SIZES = dict(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=48,
)
HEADS = (
    "Model",
    "ForMaskedLM",
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
)
CASES = [
    (family, head)
    for family in ("Roberta", "XLMRoberta", "Electra", "DistilBert")
    for head in HEADS + (("ForPreTraining",) if family == "Electra" else ())
] + [("ElectraUnprojected", "Model"), ("ElectraUnprojected", "ForMaskedLM")]


def hf_config(family: str, head: str):
    labels = 2 if head == "ForQuestionAnswering" else 3
    t = transformers
    if family == "Roberta":
        return t.RobertaConfig(
            **SIZES, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5, num_labels=labels
        )
    if family == "XLMRoberta":
        return t.XLMRobertaConfig(
            **SIZES, type_vocab_size=1, pad_token_id=1, hidden_act="gelu_new", num_labels=labels
        )
    if family == "Electra":
        return t.ElectraConfig(**SIZES, embedding_size=16, num_labels=labels)
    if family == "ElectraUnprojected":  # embedding_size == hidden_size: no embeddings_project
        return t.ElectraConfig(**SIZES, embedding_size=32, hidden_act="relu", num_labels=labels)
    return t.DistilBertConfig(
        vocab_size=120,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=37,
        max_position_embeddings=48,
        num_labels=labels,
    )


def hf_class(family: str, head: str):
    return getattr(transformers, family.removesuffix("Unprojected") + head)


def perturbed(model):
    """Every parameter moved off its init (zero biases, unit LayerNorms would hide mix-ups)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def batch(config, family: str) -> dict[str, np.ndarray]:
    """(3, 12): a full row, a right-padded row, a left-padded row; token types where used."""
    rng = np.random.default_rng(0)
    pad = config.pad_token_id
    ids = rng.integers(5, config.vocab_size, (3, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, :5] = 0
    ids[mask == 0] = pad
    types = np.zeros_like(ids)
    if family.startswith("Electra"):
        types[:, 6:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def torch_inputs(inputs: dict, family: str) -> dict:
    skip = ("token_type_ids",) if family == "DistilBert" else ()
    return {k: torch.tensor(v) for k, v in inputs.items() if k not in skip}


def hf_outputs(model, inputs, head):
    out = model(**inputs, output_hidden_states=True)
    if head == "Model":
        return out.last_hidden_state, out.last_hidden_state
    if head == "ForQuestionAnswering":
        return torch.stack([out.start_logits, out.end_logits]), out.hidden_states[-1]
    return out.logits, out.hidden_states[-1]


def our_outputs(model, inputs, head):
    inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
    if head == "Model":
        hidden = model(**inputs).last_hidden_state
        return hidden, hidden
    out = model(**inputs)
    out = jnp.stack(out) if head == "ForQuestionAnswering" else out
    return out, model.bert(**inputs).last_hidden_state


def loss_weights(shape, mask) -> np.ndarray:
    """Fixed random weights for a linear loss on the outputs, zero at padding."""
    w = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    if len(shape) >= 2 and shape[-2:] == mask.shape:  # QA: (2, B, L)
        w = w * mask
    elif len(shape) >= 2 and shape[:2] == mask.shape:  # per token: (B, L, ...)
        w = w * mask.reshape(mask.shape + (1,) * (len(shape) - 2))
    return w


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def pair(request, tmp_path_factory):
    family, head = request.param
    config = hf_config(family, head)
    torch.manual_seed(0)
    ref = perturbed(hf_class(family, head)(config))
    directory = str(tmp_path_factory.mktemp(f"{family}{head}"))
    ref.save_pretrained(directory)
    ours = load_model(directory)
    ours.eval()
    return family, head, ref, ours, directory


def test_outputs_match_transformers_in_a_padded_batch(pair):
    family, head, ref, ours, directory = pair
    assert type(ours).__name__ == hf_class(family, head).__name__
    inputs = batch(ref.config, family)
    with torch.no_grad():
        expected, expected_hidden = (
            t.numpy() for t in hf_outputs(ref, torch_inputs(inputs, family), head)
        )
    got, hidden = (np.asarray(t) for t in our_outputs(ours, inputs, head))
    real = inputs["attention_mask"].astype(bool)
    assert np.abs(hidden - expected_hidden)[real].max() <= 1e-4
    assert got.shape == expected.shape
    diff = np.abs(got - expected)
    if head == "ForQuestionAnswering":
        diff = diff[:, real]
    elif got.ndim >= 2 and got.shape[:2] == real.shape:
        diff = diff[real]
    assert diff.max() <= 1e-4, diff.max()


def test_gradients_match_torch_autograd(pair):
    family, head, ref, ours, _ = pair
    inputs = batch(ref.config, family)
    mask = inputs["attention_mask"]
    ref.zero_grad()
    expected, _ = hf_outputs(ref, torch_inputs(inputs, family), head)
    weights = loss_weights(tuple(expected.shape), mask)
    (expected * torch.tensor(weights)).sum().backward()
    torch_grads = {  # tied tensors under each name; unused ones (a bare pooler) have no .grad
        k: np.zeros(p.shape, np.float32) if p.grad is None else p.grad.numpy()
        for k, p in ref.named_parameters(remove_duplicate=False)
    }

    def loss(model):
        return jnp.sum(our_outputs(model, inputs, head)[0] * weights)

    grads = nnx.grad(loss)(ours)
    # Relative to each tensor's own scale; key biases get exactly zero gradient in exact
    # arithmetic (softmax ignores a shift), so rounding noise there is held to 1e-6 of the
    # model's largest gradient instead.
    floor = 1e-6 * max(np.abs(g).max() for g in torch_grads.values())
    compared = 0
    for path, g in nnx.to_flat_state(grads):
        key, transpose = hf.hf_key(path, ours.config.model_type)
        g = np.asarray(g.get_value())
        g = g.T if transpose else g
        assert key in torch_grads, key
        scale = np.abs(torch_grads[key]).max()
        assert np.abs(g - torch_grads[key]).max() <= 1e-4 * scale + floor, key
        compared += 1
    assert compared == len(list(ref.parameters()))  # every parameter, tied embeddings included


def test_saved_directory_loads_back_in_transformers(pair, tmp_path):
    family, head, ref, ours, directory = pair
    out = str(tmp_path / "ours")
    ours.save_pretrained(out)
    # Exactly the tensors transformers itself writes for this class, nothing more or less.
    assert set(load_file(os.path.join(out, hf.SAFETENSORS))) == set(
        load_file(os.path.join(directory, hf.SAFETENSORS))
    )
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    assert saved["model_type"] == ref.config.model_type
    assert saved["architectures"] == [hf_class(family, head).__name__]
    back, info = hf_class(family, head).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info.get("mismatched_keys")
    inputs = torch_inputs(batch(ref.config, family), family)
    with torch.no_grad():
        a, _ = hf_outputs(ref, inputs, head)
        b, _ = hf_outputs(back.eval(), inputs, head)
    assert torch.equal(a, b)
    # And it loads here again with the same config.
    assert load_model(out).config == ours.config


# ---- choosing the class, and the errors ----------------------------------------------------------


def test_task_classes_follow_the_family(tmp_path):
    config = hf_config("Roberta", "Model")
    transformers.RobertaModel(config).save_pretrained(tmp_path)
    assert model_class_for(str(tmp_path)).__name__ == "RobertaModel"
    assert class_for_task(str(tmp_path), "ner").__name__ == "RobertaForTokenClassification"
    assert class_for_task(str(tmp_path), "classification").__name__ == (
        "RobertaForSequenceClassification"
    )
    # A BERT class refuses a RoBERTa directory with one line naming both.
    with pytest.raises(BertJaxError, match="'roberta' model; BertForMaskedLM reads 'bert'"):
        BertForMaskedLM.from_pretrained(tmp_path)


def test_unknown_model_type_is_one_error_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    with pytest.raises(BertJaxError) as e:
        load_model(str(tmp_path))
    message = str(e.value)
    assert "\n" not in message
    assert "config.json" in message and "'gpt2'" in message
    for supported in ("bert", "distilbert", "electra", "roberta", "xlm-roberta"):
        assert supported in message


def test_untied_output_embeddings_are_refused(tmp_path):
    config = hf_config("Roberta", "ForMaskedLM")
    config.tie_word_embeddings = False
    transformers.RobertaForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(BertJaxError, match="lm_head.decoder.weight differs"):
        load_model(str(tmp_path))
