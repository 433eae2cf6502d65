"""Tiny random-weight models built locally, for tests, dry runs and GPU checks (no downloads).

The model has head_dim 64: vLLM's CPU attention rejects head size 16, and 64 is safe on GPUs.
The tokenizer is a byte-level BPE trained here on a few lines of text, with a ChatML template
like SmolLM2's so every technique's chat prompts render the same way.
"""
from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 + 7? Answer with just the number. The answer is 19.",
    "Please write a short, polite email to a colleague asking for the report.",
    "I cannot help with that request, but here is a safer alternative.",
    "Critique the response: is it helpful, honest and harmless? NO CHANGES NEEDED.",
    "Rewrite the response so that it fixes the problems you found.",
    "Yes No yes no good bad reward score answer question user assistant system",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000",
]


def build_tokenizer(out_dir: Path, vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_llama(
    out_dir: str | Path,
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    classifier: bool = False,
) -> Path:
    """Write a tiny random LlamaForCausalLM (or a 1-label LlamaForSequenceClassification) dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=not classifier,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
    )
    cls = LlamaForSequenceClassification if classifier else LlamaForCausalLM
    model = cls(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    if not classifier:
        model.generation_config.save_pretrained(out)
    return out
