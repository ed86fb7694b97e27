"""`TargetselCallback` in real training runs: a `transformers.Trainer` and TRL's `SFTTrainer` on a tiny
Llama with real weights on CPU, two steps on an in-memory dataset. The callback audits the live
model at train start: the right adapters pass, a mismatch fails (or warns), and what TRL adds on
its own (modules_to_save and trainable tokens for a cloned chat template's new tokens) is reported."""

from __future__ import annotations

import io
import re
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model

import trainer_models as tm
from targetsel import AuditError, TargetselCallback, TargetselError, TargetselWarning, audit, patch, select

QV = "glob:**.self_attn.{q,v}_proj"
QKV = "glob:**.self_attn.{q,k,v}_proj"


def dataset(n: int = 4, length: int = 8):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones(length, dtype=torch.long)}
            for ids in torch.randint(3, 90, (n, length), generator=g)]


def training_args(tmp_path, cls=None, **kw):
    from transformers import TrainingArguments

    cls = cls or TrainingArguments
    return cls(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
               report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, **kw)


def lora_llama(query: str = QV):
    model = tm.tiny_llama_cpu()
    sel = select(model, query)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = patch(LoraConfig(r=4, lora_alpha=8), sel)
    return get_peft_model(model, config), sel


def train(peft_model, callback, tmp_path):
    from transformers import Trainer

    trainer = Trainer(model=peft_model, args=training_args(tmp_path), train_dataset=dataset(), callbacks=[callback])
    trainer.train()
    return trainer


def test_the_intended_adapters_pass_and_the_table_is_printed_once(tmp_path):
    peft_model, sel = lora_llama()
    stream = io.StringIO()
    callback = TargetselCallback(sel, stream=stream)
    trainer = train(peft_model, callback, tmp_path)
    assert trainer.state.global_step == 2 and callback.audit.ok and callback.extra == {}
    callback.check(peft_model)  # a second train start: audited again, not printed again
    text = stream.getvalue()
    assert text.count("targetsel: adapters at train start") == 1
    assert re.search(r"adapted +4  model\.layers\.\{0,1\}\.self_attn\.\{q,v\}_proj", text)
    assert "audit ok: PEFT wrapped exactly the 4 selected module(s)" in text


def test_a_mismatch_stops_training_before_the_first_step(tmp_path):
    peft_model, _ = lora_llama(QV)
    intended = select(tm.tiny_llama_cpu(), QKV).resolved()  # the plan said q, k and v
    callback = TargetselCallback(intended, stream=io.StringIO())
    from transformers import Trainer

    trainer = Trainer(model=peft_model, args=training_args(tmp_path), train_dataset=dataset(), callbacks=[callback])
    with pytest.raises(AuditError, match="not the selected ones") as info:
        trainer.train()
    assert trainer.state.global_step == 0
    assert re.search(r"MISSING +2  model\.layers\.\{0,1\}\.self_attn\.k_proj", info.value.report)
    assert callback.audit.missing == ("model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.k_proj")


def test_strict_false_warns_and_trains(tmp_path):
    peft_model, _ = lora_llama(QKV)
    callback = TargetselCallback(select(tm.tiny_llama_cpu(), QV).resolved(), strict=False, stream=io.StringIO())
    with pytest.warns(TargetselWarning, match="not the selected ones"):
        trainer = train(peft_model, callback, tmp_path)
    assert trainer.state.global_step == 2
    assert callback.audit.unexpected == ("model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.k_proj")
    assert "UNEXPECTED" in callback.report


@pytest.mark.parametrize("reference", ["selection", "resolved", "lock", "names"])
def test_every_kind_of_reference(reference):
    peft_model, sel = lora_llama()
    ref = {"selection": sel, "resolved": None, "lock": None, "names": list(select(tm.tiny_llama_cpu(), QV).names())}[reference]
    if reference in ("resolved", "lock"):
        fresh = select(tm.tiny_llama_cpu(), QV)
        ref = fresh.resolved() if reference == "resolved" else fresh.lock()
    callback = TargetselCallback(ref, stream=io.StringIO())
    assert callback.check(peft_model).ok


def test_rank_zero_only_prints_in_a_two_process_group(tmp_path):
    """Two real processes in a gloo group: rank 0 prints the table, rank 1 only audits."""
    import torch.multiprocessing as mp

    mp.start_processes(_rank_main, args=(str(tmp_path),), nprocs=2, start_method="fork", join=True)
    assert "targetsel: adapters at train start" in (tmp_path / "rank0.txt").read_text()
    assert (tmp_path / "rank1.txt").read_text() == "audited ok"


def _rank_main(rank: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        peft_model, sel = lora_llama()
        stream = io.StringIO()
        result = TargetselCallback(sel, stream=stream).check(peft_model)
        with open(f"{folder}/rank{rank}.txt", "w") as f:
            f.write(stream.getvalue() or f"audited {'ok' if result.ok else 'FAILED'}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs what was selected"),
    ({"selection": ["a"], "expect_saved": "lm_head"}, "takes a list of module names"),
    ({"selection": ["a"], "strict": "yes"}, r"is True \(raise\) or False \(warn\)"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(TargetselError, match=message):
        TargetselCallback(**kwargs)


def test_no_model_at_train_start():
    with pytest.raises(TargetselError, match="got no model at train start"):
        TargetselCallback(["a"]).on_train_begin(None, None, None, model=None)


# ---------------------------------------------------------------------------- TRL


def word_tokenizer(extra=(), chat_template=None):
    """A word-level fast tokenizer over the tiny Llama's 96 ids (no hub, no files)."""
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, 96)}}
    backend = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    if extra:
        tok.add_special_tokens({"additional_special_tokens": list(extra)})
    if chat_template:
        tok.chat_template = chat_template
    return tok


def sft(tmp_path, callback, sel, **config_kw):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = sel.model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_config = patch(LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"), sel)
    texts = [" ".join(f"w{(i * 7 + j) % 90 + 3}" for j in range(10)) for i in range(4)]
    args = training_args(tmp_path, SFTConfig, max_length=16, gradient_checkpointing=False, **config_kw)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=word_tokenizer(), peft_config=peft_config, callbacks=[callback])
    trainer.train()
    return trainer


def test_sft_trainer_with_a_patched_config_trains_exactly_the_selection(tmp_path):
    sel = select(tm.tiny_llama_cpu(), QV)
    callback = TargetselCallback(sel, stream=io.StringIO())
    trainer = sft(tmp_path, callback, sel)
    assert trainer.state.global_step == 2 and callback.audit.ok and callback.extra == {}
    assert audit(trainer.model, sel).ok


def test_what_sft_trainer_adds_on_its_own_is_reported(tmp_path):
    """A cloned chat template adds tokens: TRL then puts lm_head in modules_to_save and trainable tokens
    on embed_tokens by itself. The callback names both instead of accepting them."""
    source = tmp_path / "chat-tokenizer"
    word_tokenizer(extra=("<|im_start|>", "<|im_end|>"),
                   chat_template="{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
                   ).save_pretrained(source)
    sel = select(tm.tiny_llama_cpu(), QV)
    callback = TargetselCallback(sel, strict=False, stream=io.StringIO())
    with pytest.warns(TargetselWarning, match="not the selected ones"):
        trainer = sft(tmp_path / "run", callback, sel, chat_template_path=str(source))
    assert trainer.state.global_step == 2
    assert callback.audit.ok  # the LoRA targets themselves are exact …
    assert callback.extra == {"saved": ("lm_head",), "tokens": ("model.embed_tokens",)}  # … TRL added these
    assert "SAVED (modules_to_save, not selected)" in callback.report and "lm_head" in callback.report
    accepted = TargetselCallback(sel, expect_saved=["lm_head", "model.embed_tokens"], stream=io.StringIO())
    assert accepted.check(trainer.model).ok and accepted.extra == {}
