"""Random-weight multimodal models built from configs (no download), for tests and benchmarks.

:func:`build_random_qwen2vl` writes a complete ``transformers`` model folder (config, random
weights, tokenizer, image processor, chat template) that :class:`medq.engine.models.hf.HFModel`
loads exactly like a downloaded Qwen2-VL checkpoint. The tokenizer is a word-level ``tokenizers``
tokenizer over a small prompt vocabulary plus the Qwen2-VL special tokens, wrapped in
``PreTrainedTokenizerFast``; the image processor is the class default with a small pixel budget.

Sizes: ``tiny`` (a few hundred thousand parameters; CPU tests), ``2b`` (Qwen2-VL-2B's shapes:
1.5B-parameter language model with 28 layers, 32-layer 1280-wide vision tower; GPU benchmark).
"""
from __future__ import annotations

import re
from pathlib import Path

from medq.engine.taxonomy import DEGRADATION_NAMES, MODALITIES, OPTION_LETTERS, VERDICTS

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_CORPUS = """system user assistant yes no none mild severe slight moderate good usable reject quality
image this the of in is a an there does show what which how rate overall level most prominent
degradation distortion artifact artifacts present visible answer directly only with option letter
from given choices first second better worse than and or not noise blur contrast exposure
brightness clear structures shows obvious detail fine visibility reduces slightly seriously
obscures anatomical edges depicted main remain recognizable while image's kind problem can be
seen observed exhibit affects modality imaging severity describe quality, please"""


def _vocabulary() -> list[str]:
    words = set(re.findall(r"[A-Za-z]+|[^\sA-Za-z]", _CORPUS))
    for text in list(DEGRADATION_NAMES.values()) + list(MODALITIES) + list(VERDICTS):
        words.update(re.findall(r"[A-Za-z]+|[^\sA-Za-z]", text))
    words.update(OPTION_LETTERS)
    words.update(w.capitalize() for w in list(words))
    words.update(".,:;?!()-'\"/")
    words.update(str(d) for d in range(10))
    return sorted(words)


def build_tokenizer(extra_words: list[str] | None = None):
    """Word-level fast tokenizer with the Qwen2-VL special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + ["[UNK]"])}
    for w in _vocabulary() + sorted(set(extra_words or [])):
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Punctuation()])
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="<|endoftext|>",
                                  eos_token="<|im_end|>",
                                  additional_special_tokens=SPECIAL[1:])
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def _sizes(size: str, vocab: int) -> tuple[dict, dict]:
    if size == "tiny":
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=2048,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                     "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    elif size == "2b":  # Qwen2-VL-2B-Instruct shapes
        text = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                    num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                    max_position_embeddings=32768,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                     "mrope_section": [16, 24, 24]})
        vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    else:
        raise ValueError(f"unknown size {size!r}; expected tiny or 2b")
    return text, vision


def build_random_qwen2vl(folder: Path, size: str = "tiny", seed: int = 0, image_pixels: int = 56 * 56,
                         dtype=None, device: str = "cpu", save_weights: bool = True):
    """Write a random-weight Qwen2-VL model folder; returns (model, processor).

    `image_pixels`: pixel budget of the image processor (56*56 -> 4 image tokens; 448*448 -> 256).
    The model is initialised directly on `device` in `dtype` (a 2B model in bf16 on a GPU takes
    seconds). With `save_weights=False` only the config and processor files are written: register
    the in-memory model with :func:`medq.engine.models.hf.register_loaded` to use it."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    text, vision = _sizes(size, len(tok))
    # the stubs know only Qwen2VLConfig's own dataclass fields; the top-level token ids are extra
    # kwargs that PreTrainedConfig keeps (they are written to config.json)
    config = Qwen2VLConfig(text_config={**text, "bos_token_id": ids["<|endoftext|>"],  # type: ignore[call-arg]
                                        "eos_token_id": ids["<|im_end|>"],
                                        "pad_token_id": ids["<|endoftext|>"]},
                           vision_config=vision,
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"],
                           bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                           pad_token_id=ids["<|endoftext|>"])
    image_processor = Qwen2VLImageProcessorPil(min_pixels=image_pixels, max_pixels=image_pixels)
    # the processor is saved as its parts (what a Hub checkpoint holds); Qwen2VLProcessor itself
    # cannot be built without torchvision in transformers 5 (video processor), HFModel's loader
    # assembles an image-only one when needed
    image_processor.processor_class = "Qwen2VLProcessor"  # type: ignore[attr-defined]  # undeclared attr
    tok.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype or torch.float32)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    if save_weights:
        model.save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    from medq.engine.models.hf import load_processor
    return model, load_processor(folder)
