"""``vllm``: fast inference for the same MLLM families through vLLM, offline or served.

Two ways to reach a model (``settings.model``):

- **endpoint** (``vllm_endpoint`` set): an OpenAI-compatible ``vllm serve`` at that base URL,
  reached through an injected transport (:class:`ChatTransport`; by default
  :class:`medq.storage.openai_chat.VLLMEndpointClient`, built from the URL, with
  ``vllm_api_key`` as its bearer key). MCQs are ``POST /v1/chat/completions`` with
  ``max_tokens=1, logprobs=true, top_logprobs=20, temperature=0``; images travel as PNG data
  URIs. A version's LoRA adapter is a served model name (``vllm serve BASE --enable-lora
  --lora-modules NAME=PATH``, or loaded at run time through ``POST /v1/load_lora_adapter`` when
  the server allows runtime LoRA updates).
- **offline** (no endpoint; ``hf_path`` is the model folder): ``vllm.LLM(...).chat(...)`` with
  ``SamplingParams(max_tokens=1, logprobs=20, temperature=0)`` and a ``LoRARequest`` per version.

Option probabilities (:func:`option_probs`): the next-token top log-probabilities are mapped to
letters (a token counts for a letter when, stripped of spaces and the punctuation ``.):(``, it is
the letter: ``"A"``, ``" A"``, ``"A."`` ...; several spellings add up), softmax over the letters
present. A letter outside the top-k gets a *floor*: the smallest listed log-probability minus
``FLOOR_MARGIN`` (it is certainly below every listed token). With ``exact_missing=True`` those
letters are scored exactly instead, by appending the letter as the start of the assistant turn
and reading its prompt log-probability (``continue_final_message`` + ``prompt_logprobs``).

vLLM does not train: :meth:`VLLMModel.fine_tune` runs the ``hf`` backend's LoRA SFT on the same
base folder and serves the resulting adapter. The module imports without vLLM; the offline mode
raises a clear :class:`ModelError` when vLLM is missing. This module does no HTTP itself.
"""
from __future__ import annotations

import base64
import io
import math
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from medq.engine.models.base import (
    MCQ,
    Comparison,
    LabelledImage,
    MCQAnswer,
    ModelError,
    QualityModel,
    TrainReport,
)
from medq.engine.models.hf import COMPARE_PROMPT, DESCRIBE_PROMPT, mcq_prompt, to_pil
from medq.engine.taxonomy import OPTION_LETTERS, VERDICT_SENTENCE, VERDICTS, stated_verdict

if TYPE_CHECKING:
    from pydantic import SecretStr

TOP_LOGPROBS = 20
FLOOR_MARGIN = 1.0  # nats below the smallest listed log-probability
_STRIP = " \t\n.):(:"


# ---------------------------------------------------------------------------------------------
# Parsing (pure, unit-tested without vLLM)
# ---------------------------------------------------------------------------------------------

def token_letter(token: str, letters: Iterable[str] = OPTION_LETTERS) -> str | None:
    """The option letter a generated token spells ("A", " A", "A.", "(A", "A)" -> "A"), else None.
    Case-sensitive: a lower-case "a" is an English article, not an option."""
    t = str(token).strip(_STRIP)
    return t if t in set(letters) else None


def _pairs(top: Mapping[str, float] | Sequence[Any]) -> list[tuple[str, float]]:
    """Normalize top-logprob containers to (token, logprob) pairs: a {token: logprob} mapping, a
    list of {"token", "logprob"} dicts (OpenAI), or vLLM ``Logprob`` objects / (token, lp) pairs."""
    if isinstance(top, Mapping):
        out = []
        for k, v in top.items():
            if isinstance(v, (int, float)):
                out.append((str(k), float(v)))
            else:  # vLLM offline: {token_id: Logprob(logprob, rank, decoded_token)}
                out.append((str(getattr(v, "decoded_token", None) or k), float(v.logprob)))
        return out
    out = []
    for item in top:
        if isinstance(item, Mapping):
            out.append((str(item["token"]), float(item["logprob"])))
        elif isinstance(item, (tuple, list)):
            out.append((str(item[0]), float(item[1])))
        else:
            out.append((str(getattr(item, "decoded_token", "")), float(item.logprob)))
    return out


def letter_logprobs(top, letters: Sequence[str]) -> tuple[dict[str, float], float]:
    """Per present letter, the log-sum-exp of the log-probabilities of its token spellings in
    `top` (missing letters absent), and the floor for missing letters."""
    pairs = [(t, lp) for t, lp in _pairs(top) if math.isfinite(lp)]
    found: dict[str, list[float]] = {}
    for token, lp in pairs:
        letter = token_letter(token, letters)
        if letter is not None:
            found.setdefault(letter, []).append(lp)
    floor = (min(lp for _, lp in pairs) if pairs else 0.0) - FLOOR_MARGIN
    return {k: float(np.logaddexp.reduce(v)) for k, v in found.items()}, floor


def option_probs(top, letters: Sequence[str], exact: Mapping[str, float] | None = None
                 ) -> dict[str, float]:
    """Probabilities over `letters` (sum 1) from top log-probabilities; letters missing from
    `top` use `exact[letter]` when given, else the floor (module docstring)."""
    if not letters:
        raise ModelError("option_probs: no option letters")
    found, floor = letter_logprobs(top, letters)
    exact = exact or {}
    scores = np.array([found.get(k, exact.get(k, floor)) for k in letters], np.float64)
    scores -= scores.max()
    p = np.exp(scores)
    p /= p.sum()
    return {k: float(v) for k, v in zip(letters, p)}


def parse_chat_completion(data: Mapping) -> tuple[str, list[tuple[str, float]]]:
    """(text, first-token top logprobs) of an OpenAI / vLLM chat completion response."""
    try:
        choice = data["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        content = ((choice.get("logprobs") or {}).get("content")) or []
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelError(f"unexpected chat completion response: {str(data)[:200]}") from exc
    if not content:
        return text, []
    first = content[0]
    top = first.get("top_logprobs") or [{"token": first.get("token", ""), "logprob": first.get("logprob", 0.0)}]
    return text, _pairs(top)


def last_prompt_logprob(prompt_logprobs: Sequence | None, letter: str | None = None) -> float | None:
    """Log-probability of the prompt's last token from vLLM ``prompt_logprobs`` (one entry per
    prompt token: {token_id: {"logprob", "rank", "decoded_token"}} holding the actual token and the
    top-k alternatives). With `letter`, the entry that spells the letter is taken; else the first."""
    if not prompt_logprobs or not prompt_logprobs[-1]:
        return None
    entries = list(prompt_logprobs[-1].values())

    def get(e, key):
        return e.get(key) if isinstance(e, Mapping) else getattr(e, key, None)
    if letter is not None:
        for e in entries:
            if token_letter(str(get(e, "decoded_token") or ""), [letter]) == letter:
                return float(get(e, "logprob"))
    return float(get(entries[0], "logprob"))


def image_data_uri(image: np.ndarray) -> str:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def openai_messages(text: str, images: Sequence[np.ndarray], answer_prefix: str | None = None) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": image_data_uri(im)}} for im in images]
    content.append({"type": "text", "text": text})
    msgs = [{"role": "user", "content": content}]
    if answer_prefix is not None:
        msgs.append({"role": "assistant", "content": answer_prefix})
    return msgs


# ---------------------------------------------------------------------------------------------
# Transports
# ---------------------------------------------------------------------------------------------

class ChatTransport(Protocol):
    """What :class:`VLLMModel` needs from a running ``vllm serve`` (OpenAI-compatible API).

    :class:`medq.storage.openai_chat.VLLMEndpointClient` implements it over HTTP; tests inject
    in-memory fakes. Every method raises :class:`ModelError` on failure."""

    def chat(self, messages: list[dict], *, model: str | None = None, max_tokens: int = 1,
             logprobs: bool = True, top_logprobs: int = TOP_LOGPROBS, **extra: Any) -> dict:
        """The raw ``/v1/chat/completions`` response JSON for `messages` at temperature 0
        (`model` None: :meth:`served_model`; with `logprobs`, the first tokens' top
        `top_logprobs`; `extra` fields such as ``prompt_logprobs`` go into the request)."""
        ...

    def served_model(self) -> str:
        """The base model name the server serves (configured, or the first of ``/v1/models``)."""
        ...

    def load_adapter(self, name: str, path: str) -> None:
        """Make the LoRA adapter folder `path` servable as model `name`; already loaded is fine."""
        ...


def _import_vllm():
    try:
        import vllm  # noqa: F401
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        raise ModelError("the vllm backend's offline mode needs vLLM (pip install 'medq[gpu]'); or "
                         "set settings.model.vllm_endpoint to the URL of a running `vllm serve`") from exc
    return LLM, SamplingParams, LoRARequest


_ENGINES: dict[tuple, Any] = {}


class _Offline:
    """One ``vllm.LLM`` per base folder in this process (LoRA enabled)."""

    def __init__(self, path: Path, lora_rank: int):
        if not Path(path).is_dir():  # a hub name would make vLLM download: local folders only
            raise ModelError(f"vllm offline mode needs a local model folder; {path} is not one "
                             "(settings.model.hf_path)")
        LLM, self.SamplingParams, self.LoRARequest = _import_vllm()
        key = (str(Path(path).resolve()), lora_rank)
        if key not in _ENGINES:
            _ENGINES[key] = LLM(model=str(path), enable_lora=True, max_lora_rank=max(16, lora_rank),
                                max_loras=4, limit_mm_per_prompt={"image": 2}, seed=0)
        self.llm = _ENGINES[key]
        self._ids: dict[str, int] = {}

    def lora(self, name: str | None, path: str | None):
        if not name or not path:
            return None
        self._ids.setdefault(name, len(self._ids) + 1)
        return self.LoRARequest(name, self._ids[name], str(path))

    @staticmethod
    def messages(text: str, images: Sequence[np.ndarray], answer_prefix: str | None = None) -> list[dict]:
        content = [{"type": "image_pil", "image_pil": to_pil(im)} for im in images]
        content.append({"type": "text", "text": text})
        msgs = [{"role": "user", "content": content}]
        if answer_prefix is not None:
            msgs.append({"role": "assistant", "content": answer_prefix})
        return msgs


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

class VLLMModel(QualityModel):
    """vLLM inference (endpoint or offline) of a base MLLM plus an optional LoRA adapter folder."""

    backend = "vllm"

    def __init__(self, version: str = "vllm-base", *, path: str | Path | None = None,
                 endpoint: str | None = None, served_model: str | None = None,
                 api_key: SecretStr | str | None = None, client: ChatTransport | None = None,
                 adapter_path: str | Path | None = None, exact_missing: bool = False,
                 max_new_tokens: int = 256, lora_rank: int = 16, train_options: dict | None = None,
                 timeout_s: float = 120.0):
        """`client` is the endpoint transport; without one, `endpoint` (a URL) gets the default
        HTTP client (:meth:`endpoint_client`, with `served_model`, `api_key`, `timeout_s`)."""
        super().__init__(version)
        if client is None and endpoint:
            client = self.endpoint_client(endpoint, served_model=served_model, api_key=api_key,
                                          timeout_s=timeout_s)
        if client is not None and endpoint is None:
            endpoint = getattr(client, "base_url", None)
        if client is None and path is None:
            raise ModelError("the vllm backend needs settings.model.vllm_endpoint (a running `vllm "
                             "serve`) or settings.model.hf_path (a local model folder for offline vLLM)")
        self.path = Path(path) if path else None
        self.endpoint = endpoint
        self.served_model = served_model
        self.adapter_path = str(adapter_path) if adapter_path else None
        self.exact_missing = exact_missing
        self.max_new_tokens = max_new_tokens
        self.lora_rank = lora_rank
        self.train_options = dict(train_options or {})
        self.parent: str | None = None
        self._client = client
        self._offline: _Offline | None = None

    @staticmethod
    def endpoint_client(endpoint: str, *, served_model: str | None = None,
                        api_key: SecretStr | str | None = None, timeout_s: float = 120.0
                        ) -> ChatTransport:
        """The default transport to the ``vllm serve`` at `endpoint` (storage is imported here,
        lazily, so the engine stays free of HTTP; building it does no I/O)."""
        from medq.storage.openai_chat import VLLMEndpointClient
        return VLLMEndpointClient(endpoint, served_model, api_key, timeout_s=timeout_s)

    @classmethod
    def from_settings(cls, settings=None, *, version: str | None = None, **kwargs) -> VLLMModel:
        if settings is not None:
            kwargs.setdefault("path", settings.hf_path)
            kwargs.setdefault("endpoint", settings.vllm_endpoint)
            kwargs.setdefault("served_model", settings.vllm_model)
            kwargs.setdefault("api_key", getattr(settings, "vllm_api_key", None))
            kwargs.setdefault("lora_rank", settings.lora_rank)
            kwargs.setdefault("train_options", {
                "device": settings.device, "lora_rank": settings.lora_rank,
                "lora_alpha": settings.lora_alpha, "learning_rate": settings.learning_rate,
                "batch_size": settings.batch_size, "max_steps": settings.max_steps, "seed": settings.seed})
        return cls(version or "vllm-base", **kwargs)

    @property
    def lora_name(self) -> str | None:
        if not self.adapter_path:
            return None
        import re
        return "medq-" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.version)

    # ------------------------------------------------------------------ transport
    def _offline_engine(self) -> _Offline:
        if self._offline is None:
            if self.path is None:  # __init__ requires a path when there is no endpoint transport
                raise ModelError("offline vLLM needs settings.model.hf_path (a local model folder)")
            self._offline = _Offline(self.path, self.lora_rank)
        return self._offline

    def _endpoint_model(self) -> str:
        client = self._client
        if client is None:
            raise ModelError(f"vllm model {self.version}: no endpoint transport (it runs offline)")
        name = self.lora_name
        if name and self.adapter_path:  # lora_name is set exactly when adapter_path is
            client.load_adapter(name, self.adapter_path)
            return name
        return client.served_model()

    def _first_token(self, prompts: list[tuple[str, list[np.ndarray]]]) -> list[list[tuple[str, float]]]:
        """Top log-probabilities of the first answer token for each (text, images) prompt."""
        if self._client is not None:
            model = self._endpoint_model()
            return [parse_chat_completion(self._client.chat(openai_messages(t, ims), model=model,
                                                            top_logprobs=TOP_LOGPROBS))[1]
                    for t, ims in prompts]
        eng = self._offline_engine()
        params = eng.SamplingParams(max_tokens=1, logprobs=TOP_LOGPROBS, temperature=0.0)
        outs = eng.llm.chat([eng.messages(t, ims) for t, ims in prompts], params,
                            lora_request=eng.lora(self.lora_name, self.adapter_path), use_tqdm=False)
        return [_pairs(o.outputs[0].logprobs[0]) if o.outputs[0].logprobs else [] for o in outs]

    def _exact_letter(self, text: str, images: list[np.ndarray], letter: str) -> float | None:
        """log P(letter | prompt) from the prompt log-probability of the letter appended as the
        start of the assistant turn."""
        extra = {"continue_final_message": True, "add_generation_prompt": False, "prompt_logprobs": 1}
        if self._client is not None:
            data = self._client.chat(openai_messages(text, images, letter), model=self._endpoint_model(),
                                     max_tokens=1, logprobs=False, **extra)
            return last_prompt_logprob(data.get("prompt_logprobs"), letter)
        eng = self._offline_engine()
        params = eng.SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0)
        out = eng.llm.chat([eng.messages(text, images, letter)], params, use_tqdm=False,
                           lora_request=eng.lora(self.lora_name, self.adapter_path),
                           add_generation_prompt=False, continue_final_message=True)[0]
        return last_prompt_logprob(out.prompt_logprobs, letter)

    def _generate(self, prompts: list[tuple[str, list[np.ndarray]]]) -> list[str]:
        if self._client is not None:
            model = self._endpoint_model()
            return [parse_chat_completion(self._client.chat(openai_messages(t, ims), model=model,
                                                            max_tokens=self.max_new_tokens,
                                                            logprobs=False))[0].strip()
                    for t, ims in prompts]
        eng = self._offline_engine()
        params = eng.SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0)
        outs = eng.llm.chat([eng.messages(t, ims) for t, ims in prompts], params, use_tqdm=False,
                            lora_request=eng.lora(self.lora_name, self.adapter_path))
        return [o.outputs[0].text.strip() for o in outs]

    # ------------------------------------------------------------------ interface
    def _letter_probs(self, prompts: list[tuple[str, list[np.ndarray]]], letter_sets: list[list[str]]
                      ) -> list[dict[str, float]]:
        tops = self._first_token(prompts)
        out = []
        for (text, ims), top, letters in zip(prompts, tops, letter_sets):
            exact = None
            if self.exact_missing:
                found, _ = letter_logprobs(top, letters)
                exact = {}
                for k in letters:
                    if k not in found:
                        lp = self._exact_letter(text, ims, k)
                        if lp is not None:
                            exact[k] = lp
            out.append(option_probs(top, letters, exact))
        return out

    def answer(self, questions: Sequence[MCQ]) -> list[MCQAnswer]:
        questions = list(questions)
        for m in questions:
            if not m.options or any(k not in OPTION_LETTERS for k in m.options):
                raise ModelError(f"question {m.item_id}: options must be lettered A-D, got {list(m.options)}")
        probs = self._letter_probs([(mcq_prompt(m.question, m.options), [m.image]) for m in questions],
                                   [list(m.options) for m in questions])
        out = []
        for m, p in zip(questions, probs):
            best = max(p, key=p.__getitem__)
            out.append(MCQAnswer(m.item_id, p, best, best))
        return out

    def describe(self, images: Sequence[np.ndarray], questions: Sequence[str | None] | None = None
                 ) -> list[str]:
        images = list(images)
        qs = list(questions) if questions is not None else [None] * len(images)
        texts = self._generate([(q or DESCRIBE_PROMPT, [im]) for im, q in zip(images, qs)])
        missing = [i for i, t in enumerate(texts) if stated_verdict(t[-80:]) is None]
        if missing:
            opts = {OPTION_LETTERS[i]: v.capitalize() for i, v in enumerate(VERDICTS)}
            mcqs = [MCQ(f"verdict-{i}", images[i], "How is the overall quality of this image?", opts)
                    for i in missing]
            for i, ans in zip(missing, self.answer(mcqs)):
                verdict = VERDICTS[OPTION_LETTERS.index(ans.letter)]
                texts[i] = f"{texts[i]} {VERDICT_SENTENCE.format(verdict=verdict)}".strip()
        return texts

    def compare(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], explain: bool = True) -> list[Comparison]:
        pairs = list(pairs)
        opts = {"A": "The first image", "B": "The second image"}
        probs = self._letter_probs([(mcq_prompt(COMPARE_PROMPT, opts), [a, b]) for a, b in pairs],
                                   [["A", "B"]] * len(pairs))
        prompt = "Compare the quality of the two images and explain which one is better."
        texts = self._generate([(prompt, [a, b]) for a, b in pairs]) if explain else [""] * len(pairs)
        return [Comparison("A" if p["A"] >= p["B"] else "B", p["A"], t) for p, t in zip(probs, texts)]

    def fine_tune(self, examples: Sequence[LabelledImage], *, new_version: str, seed: int | None = None
                  ) -> tuple[VLLMModel, TrainReport]:
        """LoRA SFT with the hf backend on the same base folder; the new version serves the
        adapter it produced (warm-started from this version's adapter)."""
        if self.path is None:
            raise ModelError("fine-tuning through the vllm backend needs settings.model.hf_path (the base "
                             "model folder the served model was started from)")
        from medq.engine.models.hf import HFModel
        hf = HFModel(f"{self.version}", path=self.path, **self.train_options)
        if self.adapter_path:
            hf = _hf_with_adapter(hf, self.adapter_path, self.version)
        tuned, report = hf.fine_tune(examples, new_version=new_version, seed=seed)
        folder = Path(tempfile.mkdtemp(prefix=f"medq-vllm-{new_version}-"))
        tuned.save(folder)
        new = VLLMModel(new_version, path=self.path, endpoint=self.endpoint, served_model=self.served_model,
                        client=self._client, adapter_path=folder / "adapter", exact_missing=self.exact_missing,
                        max_new_tokens=self.max_new_tokens, lora_rank=self.lora_rank,
                        train_options=self.train_options)
        new.parent = self.version
        return new, report

    def save(self, folder: Path) -> None:
        from medq.engine.models import write_manifest
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        adapter = None
        if self.adapter_path:
            target = folder / "adapter"
            if Path(self.adapter_path).resolve() != target.resolve():
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(self.adapter_path, target)
            adapter = "adapter"
        write_manifest(folder, self.backend, self.version, base_path=str(self.path) if self.path else None,
                       endpoint=self.endpoint, served_model=self.served_model, adapter=adapter,
                       parent=self.parent, exact_missing=self.exact_missing,
                       max_new_tokens=self.max_new_tokens, lora_rank=self.lora_rank,
                       train_options=self.train_options)

    @classmethod
    def load(cls, folder: Path, *, endpoint: str | None = None, path: str | Path | None = None,
             api_key: SecretStr | str | None = None, **kwargs) -> VLLMModel:
        """Reload; `endpoint` / `path` override the recorded ones (the server or base folder may
        differ on this machine). The API key is never saved: pass `api_key` (or a ready
        ``client=``) when the server needs one."""
        from medq.engine.models import read_manifest
        folder = Path(folder)
        meta = read_manifest(folder)
        if meta["backend"] != cls.backend:
            raise ModelError(f"{folder}: holds a {meta['backend']!r} model, not 'vllm'")
        adapter = folder / meta["adapter"] if meta.get("adapter") else None
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            raise ModelError(f"{adapter}: adapter files missing")
        model = cls(meta["version"], path=path or meta.get("base_path"), endpoint=endpoint or meta.get("endpoint"),
                    served_model=meta.get("served_model"), api_key=api_key, adapter_path=adapter,
                    exact_missing=meta.get("exact_missing", False),
                    max_new_tokens=meta.get("max_new_tokens", 256), lora_rank=meta.get("lora_rank", 16),
                    train_options=meta.get("train_options"), **kwargs)
        model.parent = meta.get("parent")
        return model


def _hf_with_adapter(hf, adapter_path: str, version: str):
    """An HFModel with the adapter folder loaded (for warm-started fine-tuning)."""
    from medq.engine.models.hf import HFModel
    folder = Path(tempfile.mkdtemp(prefix="medq-vllm-warm-"))
    shutil.copytree(adapter_path, folder / "adapter")
    from medq.engine.models import write_manifest
    write_manifest(folder, "hf", version, base_path=str(hf.path), adapter="adapter", config=hf.config,
                   parent=None)
    return HFModel.load(folder)
