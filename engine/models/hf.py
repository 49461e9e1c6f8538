"""``hf``: a transformers multimodal LLM (Qwen2-VL / Qwen2.5-VL, InternVL, LLaVA families) from a
local folder, with LoRA supervised fine-tuning through peft.

- Option probabilities: one forward pass over the MedQ-Bench prompt (question, lettered options,
  "Answer directly only with the option letter ..."); the next-token logits of the option letters
  (each letter's token variants such as ``"A"`` and ``" A"``, merged by log-sum-exp) are
  soft-maxed over the letters present. No sampling; the probabilities sum to 1.
- Descriptions: greedy generation. If the text lacks the verdict sentence, the verdict is read
  from the letter probabilities of a verdict question and the sentence appended, so every
  description ends with "Overall, the quality of this image is <verdict>."
- Fine-tuning: chat-format SFT records with images (the standard multimodal layout: a user turn
  with ``{"type": "image"}`` and ``{"type": "text"}`` parts, an assistant turn with the target
  text), loss on the assistant tokens only; LoRA on the language model's attention and MLP
  projections; bf16 autocast and gradient checkpointing on CUDA, fp32 on CPU.
- Versions share one loaded base model: every fine-tune adds a named LoRA adapter (warm-started
  from the current version's adapter) and each :class:`HFModel` activates its own adapter (or
  disables adapters for the base) before it runs, so the older version stays usable and unchanged.
- ``save(folder)`` writes ``model.json`` and the adapter as a standard peft folder
  (``adapter/adapter_config.json`` + ``adapter_model.safetensors``, also loadable by vLLM's
  ``LoRARequest``); the base weights stay where ``settings.model.hf_path`` points.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np

from medq.engine.models.base import (
    MCQ,
    MCQ_SUFFIX,
    Comparison,
    LabelledImage,
    MCQAnswer,
    ModelError,
    QualityModel,
    TrainReport,
)
from medq.engine.taxonomy import OPTION_LETTERS, VERDICT_SENTENCE, VERDICTS, stated_verdict
from medq.errors import require_extra

ADAPTER_DIR = "adapter"
DESCRIBE_PROMPT = ("Describe the quality of this medical image: name every degradation you see and "
                   "how severe it is, then conclude with 'Overall, the quality of this image is "
                   "good', 'usable' or 'reject'.")
COMPARE_PROMPT = "Which of the two images has better quality?"
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


# ---------------------------------------------------------------------------------------------
# Prompts and records (pure functions: testable without a model)
# ---------------------------------------------------------------------------------------------

def mcq_prompt(question: str, options: dict[str, str]) -> str:
    """The MedQ-Bench MCQ prompt: question, lettered options, the answer instruction."""
    q = str(question).replace(MCQ_SUFFIX, "").strip()
    lines = "\n".join(f"{k}. {v}" for k, v in options.items())
    return f"{q}\nOptions:\n{lines}\n{MCQ_SUFFIX}"


def user_turn(text: str, n_images: int = 1) -> dict:
    return {"role": "user", "content": [{"type": "image"} for _ in range(n_images)]
            + [{"type": "text", "text": text}]}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def label_description(ex: LabelledImage) -> str:
    """A reference description from labels (used when an example has no description text)."""
    from medq.engine.models.lite_data import degradation_text
    degs = sorted(ex.degradations, key=lambda d: (-int(d["level"]), d["type"]))
    if degs:
        listed = " and ".join(f"{'severe' if int(d['level']) == 2 else 'mild'} "
                              f"{degradation_text(d['type'])}" for d in degs)
        body = f"This {ex.modality} image shows {listed}."
    else:
        body = f"This {ex.modality} image shows no obvious degradation."
    return f"{body} {VERDICT_SENTENCE.format(verdict=ex.verdict)}"


def sft_records(examples: Sequence[LabelledImage], seed: int = 0, mcqs_per_image: int = 3
                ) -> list[dict]:
    """Chat-format SFT records: per example one description record (its description, or one built
    from its labels) and `mcqs_per_image` MCQ records answered with the gold letter.

    Each record: ``{"messages": [user, assistant], "images": [np.ndarray], "kind": ...}``."""
    from medq.engine.models.lite_data import Vocab, training_mcqs
    examples = list(examples)
    vocab = Vocab.from_examples(examples)
    records = []
    for ex in examples:
        desc = ex.description.strip() if ex.description else ""
        if desc and stated_verdict(desc) is None:
            desc = f"{desc} {VERDICT_SENTENCE.format(verdict=ex.verdict)}"
        records.append({"messages": [user_turn(DESCRIBE_PROMPT), assistant_turn(desc or label_description(ex))],
                        "images": [ex.image], "kind": "description", "item_id": ex.item_id})
    mcqs, _ = training_mcqs(examples, vocab, seed, mcqs_per_image)
    for m in mcqs:
        assert m.answer is not None  # training_mcqs keeps only MCQs answered by one of their options
        records.append({"messages": [user_turn(mcq_prompt(m.question, m.options)), assistant_turn(m.answer)],
                        "images": [m.image], "kind": "mcq", "item_id": m.item_id})
    return records


def to_pil(image: np.ndarray):
    """float [0, 1] (H, W) / (H, W, 3) -> RGB PIL image."""
    from PIL import Image
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ModelError(f"image of shape {a.shape}: expected (H, W) or (H, W, 3)")
    return Image.fromarray(a[:, :, :3])


def letter_token_ids(tokenizer, letters: Sequence[str] = OPTION_LETTERS) -> dict[str, list[int]]:
    """Token ids that spell each option letter at the start of an answer: "A", " A" and the
    first token of "A." when it decodes to the bare letter. Every letter must have one."""
    out: dict[str, list[int]] = {}
    for letter in letters:
        ids: list[int] = []
        for variant in (letter, " " + letter, letter + ".", letter + ")"):
            toks = tokenizer.encode(variant, add_special_tokens=False)
            if toks and tokenizer.decode([toks[0]]).strip() == letter and toks[0] not in ids:
                ids.append(toks[0])
        if not ids:
            raise ModelError(f"the tokenizer has no token for the option letter {letter!r}")
        out[letter] = ids
    return out


def letter_probs(next_logits: np.ndarray, letters: Sequence[str], ids: dict[str, list[int]]
                 ) -> dict[str, float]:
    """Softmax over the present letters of the log-sum-exp of each letter's token logits."""
    scores = np.array([np.logaddexp.reduce(next_logits[ids[k]].astype(np.float64)) for k in letters])
    scores -= scores.max()
    p = np.exp(scores)
    p /= p.sum()
    return {k: float(v) for k, v in zip(letters, p)}


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_processor(path: Path):
    """``AutoProcessor`` of a model folder. Without torchvision, transformers 5 cannot build the
    processors of video-capable families (Qwen2-VL ...); then the family's processor is assembled
    from the tokenizer and image processor with the video part left out (images only)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer
    path = Path(path)
    try:
        return AutoProcessor.from_pretrained(str(path), local_files_only=True)
    except Exception as first:  # noqa: BLE001 - fall back below, re-raise if that fails too
        try:
            import transformers
            from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
            model_type = AutoConfig.from_pretrained(str(path), local_files_only=True).model_type
            cls = getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            img = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
            template = getattr(tok, "chat_template", None)
            for name in ("chat_template.jinja", "chat_template.json"):
                f = path / name
                if template is None and f.is_file():
                    template = f.read_text() if name.endswith("jinja") else json.loads(f.read_text())["chat_template"]

            def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
                cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kw)
            image_only = type(cls.__name__, (cls,), {"__init__": __init__})
            return image_only(image_processor=img, tokenizer=tok, chat_template=template)
        except Exception as exc:
            raise ModelError(f"{path}: cannot load a processor ({first}; image-only fallback: {exc})") from exc


def _resolve_device(device: str) -> str:
    import torch
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    return device


class _Runtime:
    """One loaded base model (possibly wrapped by peft with several adapters) and its processor,
    shared by every version fine-tuned from it in this process."""

    @classmethod
    def from_objects(cls, path: Path, model, processor, device: str) -> _Runtime:
        rt = cls.__new__(cls)
        rt.path, rt.device = Path(path), device
        rt.dtype = next(model.parameters()).dtype
        rt.processor, rt.tokenizer = processor, processor.tokenizer
        if rt.tokenizer.pad_token_id is None:
            rt.tokenizer.pad_token = rt.tokenizer.eos_token
        rt.model = model.eval()
        rt.letter_ids = letter_token_ids(rt.tokenizer)
        rt.lock = threading.RLock()
        return rt

    def __init__(self, path: Path, device: str):
        import torch
        from transformers import AutoModelForImageTextToText
        from transformers.utils import logging as hf_logging
        if not Path(path).is_dir():
            raise ModelError(f"hf model folder {path} does not exist (settings.model.hf_path)")
        self.path = Path(path)
        self.device = _resolve_device(device)
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        hf_logging.disable_progress_bar()
        self.processor = load_processor(self.path)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None:
            raise ModelError(f"{path}: the processor has no tokenizer")
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            model = AutoModelForImageTextToText.from_pretrained(str(self.path), dtype=self.dtype,
                                                                local_files_only=True)
        except Exception as exc:
            raise ModelError(f"{path}: cannot load as an image-text-to-text model: {exc}") from exc
        # @wraps(nn.Module.to) gives PreTrainedModel.to the unbound signature (self first)
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]
        self.letter_ids = letter_token_ids(self.tokenizer)
        self.lock = threading.RLock()

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    @contextlib.contextmanager
    def active(self, adapter: str | None):
        """Run with `adapter` active (None: the base model, adapters disabled)."""
        with self.lock:
            if not self.is_peft:
                if adapter is not None:
                    raise ModelError(f"adapter {adapter!r} is not loaded")
                yield self.model
                return
            if adapter is None:
                with self.model.disable_adapter():
                    yield self.model
            else:
                self.model.set_adapter(adapter)
                yield self.model

    def encode(self, texts: list[str], images: list[list], padding_side: str):
        self.tokenizer.padding_side = padding_side
        flat = [to_pil(im) for ims in images for im in ims]
        enc = self.processor(text=texts, images=flat or None, return_tensors="pt", padding=True)
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in enc.items()}

    def chat(self, messages: list[dict], generation: bool) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=generation)


_RUNTIMES: dict[tuple[str, str], _Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def _runtime(path: Path, device: str) -> _Runtime:
    key = (str(Path(path).resolve()), _resolve_device(device))
    with _RUNTIMES_LOCK:
        if key not in _RUNTIMES:
            _RUNTIMES[key] = _Runtime(Path(path), device)
        return _RUNTIMES[key]


def _checkpointing(model, on: bool) -> None:
    """Activation (gradient) checkpointing on/off: transformers 5 names, 4.x names as fallback."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "activation_checkpointing_enable"):
        if on:
            base.activation_checkpointing_enable({"use_reentrant": False})
        else:
            base.activation_checkpointing_disable()
    elif on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()


def register_loaded(path: Path, model, processor, device: str) -> None:
    """Use an already-built model + processor for `path` (benchmarks build large random-weight
    models in memory instead of writing and re-reading gigabytes)."""
    key = (str(Path(path).resolve()), _resolve_device(device))
    with _RUNTIMES_LOCK:
        _RUNTIMES[key] = _Runtime.from_objects(Path(path), model, processor, key[1])


def _adapter_name(version: str) -> str:
    return "v_" + re.sub(r"[^A-Za-z0-9_]", "_", version)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

class HFConfig(TypedDict):
    """``HFModel.config``: the constructor options, normalized (see :class:`HFModel`)."""

    device: str
    lora_rank: int
    lora_alpha: int
    learning_rate: float
    batch_size: int
    max_steps: int
    seed: int
    mcqs_per_image: int
    max_new_tokens: int
    grad_accum: int
    gradient_checkpointing: bool | None


class HFModel(QualityModel):
    """A local transformers MLLM (+ optional LoRA adapter). See the module docstring."""

    backend = "hf"

    def __init__(self, version: str = "hf-base", *, path: str | Path | None = None, device: str = "auto",
                 lora_rank: int = 16, lora_alpha: int = 32, learning_rate: float = 2e-4,
                 batch_size: int = 4, max_steps: int = 200, seed: int = 0, mcqs_per_image: int = 3,
                 max_new_tokens: int = 256, grad_accum: int = 1, gradient_checkpointing: bool | None = None,
                 adapter: str | None = None):
        super().__init__(version)
        if path is None:
            raise ModelError("the hf backend needs a local model folder: set settings.model.hf_path "
                             "(MEDQ_MODEL__HF_PATH)")
        self.path = Path(path)
        self.config: HFConfig = {
            "device": device, "lora_rank": int(lora_rank), "lora_alpha": int(lora_alpha),
            "learning_rate": float(learning_rate), "batch_size": int(batch_size),
            "max_steps": int(max_steps), "seed": int(seed), "mcqs_per_image": int(mcqs_per_image),
            "max_new_tokens": int(max_new_tokens), "grad_accum": int(grad_accum),
            "gradient_checkpointing": gradient_checkpointing}
        self.adapter = adapter
        self.parent: str | None = None

    @classmethod
    def from_settings(cls, settings=None, *, version: str | None = None, **kwargs) -> HFModel:
        if settings is not None:
            for key, field in (("path", "hf_path"), ("device", "device"), ("lora_rank", "lora_rank"),
                               ("lora_alpha", "lora_alpha"), ("learning_rate", "learning_rate"),
                               ("batch_size", "batch_size"), ("max_steps", "max_steps"), ("seed", "seed")):
                kwargs.setdefault(key, getattr(settings, field))
        return cls(version or "hf-base", **kwargs)

    @property
    def runtime(self) -> _Runtime:
        return _runtime(self.path, self.config["device"])

    # ------------------------------------------------------------------ inference
    def _next_token_logits(self, prompts: list[tuple[list[dict], list[np.ndarray]]]) -> np.ndarray:
        """Logits (B, vocab) of the token after each generation prompt."""
        import torch
        rt = self.runtime
        out = []
        bs = max(1, self.config["batch_size"])
        with rt.active(self.adapter) as model, torch.inference_mode():
            for s in range(0, len(prompts), bs):
                chunk = prompts[s:s + bs]
                enc = rt.encode([rt.chat(m, True) for m, _ in chunk], [ims for _, ims in chunk], "left")
                logits = model(**enc).logits[:, -1, :]
                out.append(logits.float().cpu().numpy())
        return np.concatenate(out, 0)

    def answer(self, questions: Sequence[MCQ]) -> list[MCQAnswer]:
        questions = list(questions)
        if not questions:
            return []
        for m in questions:
            bad = [k for k in m.options if k not in OPTION_LETTERS]
            if bad or not m.options:
                raise ModelError(f"question {m.item_id}: options must be lettered A-D, got {list(m.options)}")
        prompts = [([user_turn(mcq_prompt(m.question, m.options))], [m.image]) for m in questions]
        logits = self._next_token_logits(prompts)
        ids = self.runtime.letter_ids
        out = []
        for m, row in zip(questions, logits):
            probs = letter_probs(row, list(m.options), ids)
            best = max(probs, key=probs.__getitem__)
            out.append(MCQAnswer(m.item_id, probs, best, best))
        return out

    def _generate(self, prompts: list[tuple[list[dict], list[np.ndarray]]]) -> list[str]:
        import torch
        rt = self.runtime
        texts: list[str] = []
        bs = max(1, self.config["batch_size"])
        with rt.active(self.adapter) as model, torch.inference_mode():
            for s in range(0, len(prompts), bs):
                chunk = prompts[s:s + bs]
                enc = rt.encode([rt.chat(m, True) for m, _ in chunk], [ims for _, ims in chunk], "left")
                gen = model.generate(**enc, do_sample=False, max_new_tokens=self.config["max_new_tokens"],
                                     pad_token_id=rt.tokenizer.pad_token_id)
                new = gen[:, enc["input_ids"].shape[1]:]
                texts.extend(t.strip() for t in rt.tokenizer.batch_decode(new, skip_special_tokens=True))
        return texts

    def describe(self, images: Sequence[np.ndarray], questions: Sequence[str | None] | None = None
                 ) -> list[str]:
        images = list(images)
        if not images:
            return []
        qs = list(questions) if questions is not None else [None] * len(images)
        if len(qs) != len(images):
            raise ModelError(f"describe: {len(images)} images but {len(qs)} questions")
        texts = self._generate([([user_turn(q or DESCRIBE_PROMPT)], [im]) for im, q in zip(images, qs)])
        missing = [i for i, t in enumerate(texts) if stated_verdict(t[-80:] if t else "") is None]
        if missing:
            opts = {OPTION_LETTERS[i]: v.capitalize() for i, v in enumerate(VERDICTS)}
            mcqs = [MCQ(f"verdict-{i}", images[i], "How is the overall quality of this image?", opts)
                    for i in missing]
            for i, ans in zip(missing, self.answer(mcqs)):
                verdict = VERDICTS[OPTION_LETTERS.index(ans.letter)]
                texts[i] = f"{texts[i].rstrip()} {VERDICT_SENTENCE.format(verdict=verdict)}".strip()
        return texts

    def compare(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], explain: bool = True) -> list[Comparison]:
        pairs = list(pairs)
        if not pairs:
            return []
        opts = {"A": "The first image", "B": "The second image"}
        prompts = [([user_turn(mcq_prompt(COMPARE_PROMPT, opts), 2)], [a, b]) for a, b in pairs]
        logits = self._next_token_logits(prompts)
        texts = [""] * len(pairs)
        if explain:
            texts = self._generate([([user_turn("Compare the quality of the two images and explain "
                                                "which one is better.", 2)], [a, b]) for a, b in pairs])
        out = []
        for row, text in zip(logits, texts):
            p = letter_probs(row, ["A", "B"], self.runtime.letter_ids)
            out.append(Comparison("A" if p["A"] >= p["B"] else "B", p["A"], text))
        return out

    # ------------------------------------------------------------------ training
    def collate(self, records: list[dict]) -> dict:
        """Tokenize SFT records (right padding) with labels on the assistant tokens only."""
        rt = self.runtime
        full = [rt.chat(r["messages"], False) for r in records]
        prompt = [rt.chat(r["messages"][:-1], True) for r in records]
        enc = rt.encode(full, [r["images"] for r in records], "right")
        labels = enc["input_ids"].clone()
        attn = enc["attention_mask"]
        for i, (f, p) in enumerate(zip(full, prompt)):
            if not f.startswith(p):
                raise ModelError("the chat template renders the prompt differently with and without the "
                                 "answer; cannot locate the assistant tokens")
            n_answer = len(rt.tokenizer(f[len(p):], add_special_tokens=False)["input_ids"])
            length = int(attn[i].sum())
            labels[i, :length - n_answer] = -100
            labels[i, length:] = -100
        enc["labels"] = labels.to(enc["input_ids"].device)
        return enc

    def _ensure_adapter(self, name: str):
        """Add adapter `name` to the shared model, initialised from this version's adapter."""
        require_extra("peft", "mllm", "LoRA fine-tuning of the hf backend")
        from peft import LoraConfig, get_peft_model
        rt = self.runtime
        cfg = LoraConfig(r=self.config["lora_rank"], lora_alpha=self.config["lora_alpha"],
                         lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
        if not rt.is_peft:
            rt.model = get_peft_model(rt.model, cfg, adapter_name=name)
        else:
            if name in rt.model.peft_config:
                rt.model.delete_adapter(name)
            rt.model.add_adapter(name, cfg)
        if self.adapter is not None:  # warm start: copy the current adapter's weights
            import torch
            with torch.no_grad():
                params = dict(rt.model.named_parameters())
                for pname, p in params.items():
                    if f".{name}." in pname:
                        src = pname.replace(f".{name}.", f".{self.adapter}.")
                        if src in params and params[src].shape == p.shape:
                            p.copy_(params[src])
        rt.model.set_adapter(name)

    def fine_tune(self, examples: Sequence[LabelledImage], *, new_version: str, seed: int | None = None,
                  records: list[dict] | None = None) -> tuple[HFModel, TrainReport]:
        """LoRA SFT for `max_steps` optimizer steps of `batch_size` x `grad_accum` records.
        `records` (chat-format, see :func:`sft_records`) replace the records built from `examples`."""
        import torch

        from medq.engine.models.lite_data import check_examples
        examples = list(examples)
        if records is None:
            check_examples(examples)
        seed = self.config["seed"] if seed is None else int(seed)
        recs = records if records is not None else sft_records(examples, seed, self.config["mcqs_per_image"])
        if not recs:
            raise ModelError("fine_tune: no training records")
        t0 = time.perf_counter()
        rt = self.runtime
        name = _adapter_name(new_version)
        cuda = rt.device.startswith("cuda")
        with rt.lock:
            torch.manual_seed(seed)
            self._ensure_adapter(name)
            model = rt.model
            use_gc = self.config["gradient_checkpointing"]
            use_gc = cuda if use_gc is None else use_gc
            if use_gc:
                _checkpointing(model, True)
                model.enable_input_require_grads()
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=self.config["learning_rate"], weight_decay=0.0)
            steps, accum, bs = self.config["max_steps"], max(1, self.config["grad_accum"]), self.config["batch_size"]
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * 0.5 * (1 + math.cos(math.pi * s / steps)))
            rng = np.random.default_rng(seed)
            order: list[int] = []
            losses: list[float] = []
            n_seen = 0
            model.train()
            try:
                for _ in range(steps):
                    opt.zero_grad(set_to_none=True)
                    step_loss = 0.0
                    for _ in range(accum):
                        if len(order) < bs:
                            order.extend(rng.permutation(len(recs)).tolist())
                        batch = [recs[i] for i in order[:bs]]
                        del order[:bs]
                        enc = self.collate(batch)
                        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                            loss = model(**enc, use_cache=False).loss / accum
                        loss.backward()
                        step_loss += float(loss.detach())
                        n_seen += len(batch)
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    sched.step()
                    losses.append(step_loss)
            finally:
                model.eval()
                if use_gc:
                    _checkpointing(model, False)
        new = HFModel(new_version, path=self.path, adapter=name, **self.config)
        new.parent = self.version
        seconds = time.perf_counter() - t0
        extra = {"steps": steps, "records": len(recs), "samples_seen": n_seen, "device": rt.device,
                 "samples_per_s": n_seen / max(seconds, 1e-9), "adapter": name}
        if cuda:
            extra["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
        return new, TrainReport(losses=losses, n_examples=len(examples), seconds=seconds, extra=extra)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path) -> None:
        from medq.engine.models import write_manifest
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.adapter is not None:
            require_extra("peft", "mllm", "saving a LoRA adapter of the hf backend")
            from peft import get_peft_model_state_dict
            from safetensors.torch import save_file
            rt = self.runtime
            out = folder / ADAPTER_DIR
            out.mkdir(exist_ok=True)
            with rt.lock:
                state = get_peft_model_state_dict(rt.model, adapter_name=self.adapter)
                cfg = rt.model.peft_config[self.adapter]
                save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                          str(out / "adapter_model.safetensors"))
                cfg.save_pretrained(str(out))
        write_manifest(folder, self.backend, self.version, base_path=str(self.path), parent=self.parent,
                       adapter=ADAPTER_DIR if self.adapter else None, config=self.config)

    @classmethod
    def load(cls, folder: Path, *, path: str | Path | None = None, device: str | None = None,
             **kwargs) -> HFModel:
        """Reload a saved version; `path` overrides the base model folder recorded at save time
        (the base may live elsewhere on this machine), `device` the device."""
        from medq.engine.models import read_manifest
        folder = Path(folder)
        meta = read_manifest(folder)
        if meta["backend"] != cls.backend:
            raise ModelError(f"{folder}: holds a {meta['backend']!r} model, not 'hf'")
        config = {**meta.get("config", {}), **kwargs}
        if device is not None:
            config["device"] = device
        base = Path(path or meta["base_path"])
        model = cls(meta["version"], path=base, **config)
        model.parent = meta.get("parent")
        if meta.get("adapter"):
            adir = folder / meta["adapter"]
            if not (adir / "adapter_config.json").is_file():
                raise ModelError(f"{adir}: adapter files missing")
            name = _adapter_name(meta["version"])
            rt = model.runtime
            with rt.lock:
                if rt.is_peft:
                    if name in rt.model.peft_config:
                        rt.model.delete_adapter(name)
                    rt.model.load_adapter(str(adir), adapter_name=name)
                else:
                    require_extra("peft", "mllm", "loading a LoRA adapter of the hf backend")
                    from peft import PeftModel
                    rt.model = PeftModel.from_pretrained(rt.model, str(adir), adapter_name=name)
                rt.model.eval()
            model.adapter = name
        return model
