"""``lite``: the embedded CPU model (no GPU, no downloads), a small multimodal quality scorer.

Image side: the handcrafted quality features of :mod:`medq.engine.features` (165 columns,
standardized with the training set's statistics) through a small MLP trunk ``h`` (128-d).
Attribute heads on ``h`` predict, with a vocabulary learned from the training labels:
modality, the level (none / mild / severe) of every degradation type, and the verdict.

Text side: the frozen all-MiniLM-L6-v2 sentence encoder (:mod:`.text_encoder`), cached by string.

Option scoring (any MedQ-Bench question, not only our templates): for each option,

    score = MLP([u * v, c]) + w . c

where ``u`` projects the image trunk, ``v`` projects the question and option embeddings, and ``c``
holds 21 *grounded* compatibility features: the option and question texts are softly matched
(cosine similarity, learned temperature) to text anchors of the learned vocabulary (degradation
names, modalities, verdicts, level words, yes / no / none), and the matches are multiplied with the
predicted attribute probabilities ("the option names a degradation the image has", "the option's
level word matches the predicted level of the degradation the question names", "a Yes to a
question about a present degradation", ...). Option probabilities are a softmax over the options
present, divided by a temperature fitted on a held-out slice of the training images (temperature
scaling), so they sum to 1 and are calibrated.

Training (:meth:`LiteModel.fine_tune`): MCQs generated from the labels
(:func:`.lite_data.training_mcqs`), loss = option cross-entropy + 0.5 x (modality + mean level +
verdict cross-entropy). AdamW, cosine schedule, one torch thread (see `threads`), seeded: the same
data and seed give the same weights. A trained model fine-tunes warm: the vocabulary is extended (old head rows
kept), the feature normalization is kept.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

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
from medq.engine.models.lite_data import (
    LEVEL_ANCHORS,
    NO,
    NONE_ANCHOR,
    YES,
    Vocab,
    check_examples,
    degradation_text,
    modality_anchor,
    targets,
    training_mcqs,
    verdict_anchor,
)

WEIGHTS = "lite_weights.pt"
N_CROSS = 21
_FEATURE_CACHE_MAX = 50_000
_feature_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()


def _image_key(img: np.ndarray) -> bytes:
    a = np.ascontiguousarray(img)
    h = hashlib.blake2b(a.view(np.uint8).data, digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    return h.digest()


def image_features(images: Sequence[np.ndarray]) -> np.ndarray:
    """Quality features (N, D) with a per-process cache keyed by pixel content (the loop passes the
    cumulative training set every round; old images are not recomputed)."""
    from medq.engine.features import FEATURE_DIM, quality_features
    keys = [_image_key(im) for im in images]
    todo = {k: i for i, k in enumerate(keys) if k not in _feature_cache}
    if todo:
        feats = quality_features([images[i] for i in todo.values()])
        for k, f in zip(todo, feats):
            _feature_cache[k] = f
            if len(_feature_cache) > _FEATURE_CACHE_MAX:
                _feature_cache.popitem(last=False)
    out = np.zeros((len(images), FEATURE_DIM), np.float32)
    fresh = {k: f for k, f in zip(todo, feats)} if todo else {}
    for r, k in enumerate(keys):
        out[r] = fresh[k] if k in fresh else _feature_cache[k]
    return out


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _clean_question(q: str) -> str:
    """The bare question: the MedQ-Bench answer instruction carries no information."""
    q = str(q).replace(MCQ_SUFFIX, "").strip()
    return q or "Question about this image."


def _build_net(d_in: int, vocab: Vocab, hidden: int):
    import torch
    from torch import nn

    class LiteNet(nn.Module):
        def __init__(self):
            super().__init__()
            h, k, d_txt = hidden, len(vocab.degradations), 384
            self.n_mod, self.n_deg, self.n_ver = len(vocab.modalities), k, len(vocab.verdicts)
            self.register_buffer("feat_mean", torch.zeros(d_in))
            self.register_buffer("feat_std", torch.ones(d_in))
            self.trunk = nn.Sequential(nn.Linear(d_in, 2 * h), nn.GELU(), nn.Dropout(0.1),
                                       nn.Linear(2 * h, h), nn.GELU())
            self.mod_head = nn.Linear(h, self.n_mod)
            self.deg_head = nn.Linear(h, 3 * k)
            self.ver_head = nn.Linear(h, self.n_ver)
            self.img_proj = nn.Linear(h, h)
            # text projection of [question; option]: the first layer is split per text so that it
            # runs once per distinct string (W [q; o] = W_q q + W_o o)
            self.txt_q = nn.Linear(d_txt, h)
            self.txt_o = nn.Linear(d_txt, h, bias=False)
            self.txt_out = nn.Linear(h, h)
            self.score = nn.Sequential(nn.Linear(h + N_CROSS, h), nn.GELU(), nn.Linear(h, 1))
            self.cross_lin = nn.Linear(N_CROSS, 1)
            self.log_tau = nn.Parameter(torch.tensor(math.log(0.05)))
            # text anchors of the vocabulary (unit vectors, frozen; rebuilt when vocab grows)
            self.register_buffer("a_deg", torch.zeros(max(k, 1), d_txt))
            self.register_buffer("a_mod", torch.zeros(max(self.n_mod, 1), d_txt))
            self.register_buffer("a_ver", torch.zeros(max(self.n_ver, 1), d_txt))
            self.register_buffer("a_lvl", torch.zeros(3, d_txt))
            self.register_buffer("a_pol", torch.zeros(3, d_txt))  # yes, no, none

        def attributes(self, x):
            """x: raw features (B, D) -> trunk (B, h) and head logits."""
            z = (x - self.feat_mean) / self.feat_std
            h = self.trunk(z)
            return h, self.mod_head(h), self.deg_head(h).view(len(h), self.n_deg, 3), self.ver_head(h)

        def text_tables(self, emb):
            """Everything the scorer needs from a text, computed once per distinct string:
            cosine similarities to each anchor set and the first text-projection layer."""
            return {"deg": emb @ self.a_deg.T, "mod": emb @ self.a_mod.T, "ver": emb @ self.a_ver.T,
                    "lvl": emb @ self.a_lvl.T, "pol": emb @ self.a_pol.T,
                    "tq": self.txt_q(emb), "to": self.txt_o(emb)}

        def crosses(self, sq, so, p_mod, p_lvl, p_ver):
            """Grounded compatibility features from the question's (B, .) and options' (B, O, .)
            text tables and the attribute probabilities (B, M), (B, K, 3), (B, V)
            -> (B, O, N_CROSS)."""
            tau = self.log_tau.exp().clamp(0.01, 1.0)

            def soft(sims):  # cosines to anchors -> soft assignment and best cosine
                return torch.softmax(sims / tau, -1), sims.max(-1).values

            n_opt = so["pol"].shape[1]
            p_pres = 1 - p_lvl[..., 0]                                     # (B, K)
            e_lvl = p_lvl[..., 1] + 2 * p_lvl[..., 2]
            p_clean = torch.exp(torch.log1p(-p_pres.clamp(max=1 - 1e-6)).sum(-1))  # (B,)
            p_le1 = torch.exp(torch.log1p(-p_lvl[..., 2].clamp(max=1 - 1e-6)).sum(-1))
            worst = torch.stack([p_clean, (p_le1 - p_clean).clamp(min=0), 1 - p_le1], -1)
            if self.n_deg:
                ad_o, md_o = soft(so["deg"])                               # (B, O, K), (B, O)
                ad_q, md_q = soft(sq["deg"])                               # (B, K), (B,)
                c1 = (ad_o * p_pres[:, None]).sum(-1)
                c2 = (ad_o * e_lvl[:, None]).sum(-1)
                c4 = (ad_q * p_pres).sum(-1)
                c5 = (ad_q * e_lvl).sum(-1)
                lvl_q = (ad_q[..., None] * p_lvl).sum(1)                   # (B, 3)
            else:
                zero = so["pol"].new_zeros(so["pol"].shape[:2])
                c1 = c2 = md_o = zero
                c4 = c5 = md_q = sq["pol"].new_zeros(len(sq["pol"]))
                lvl_q = worst
            al_o, ml_o = soft(so["lvl"])                                   # (B, O, 3)
            am_o, mm_o = soft(so["mod"])
            am_q, _ = soft(sq["mod"])
            av_o, mv_o = soft(so["ver"])
            av_q, _ = soft(sq["ver"])
            pol = so["pol"][..., 0] - so["pol"][..., 1]                    # yes minus no (B, O)
            none_o = so["pol"][..., 2]
            mod_q = (am_q * p_mod).sum(-1)
            ver_q = (av_q * p_ver).sum(-1)

            def rep(x):  # per-question scalar -> (B, O)
                return x[:, None].expand(-1, n_opt)

            cols = [c1, c2, md_o, rep(c4), rep(c5), rep(md_q), pol, pol * rep(2 * c4 - 1),
                    (al_o * lvl_q[:, None]).sum(-1), ml_o, (al_o * worst[:, None]).sum(-1),
                    (am_o * p_mod[:, None]).sum(-1), mm_o, (av_o * p_ver[:, None]).sum(-1), mv_o,
                    none_o, none_o * rep(p_clean), rep(mod_q), pol * rep(2 * ver_q - 1),
                    pol * rep(2 * p_clean - 1), pol * rep(2 * mod_q - 1)]
            return torch.stack(cols, -1)

        def option_logits(self, h, p_mod, p_lvl, p_ver, emb, q_idx, o_idx, mask):
            """h (B, h): trunk of each question's image; attribute probabilities per question;
            emb (S, T): text embedding table; q_idx (B,), o_idx (B, O) rows of it; mask (B, O)
            True where an option exists -> logits (B, O), -inf on missing options."""
            uniq, inv = torch.unique(torch.cat([q_idx, o_idx.reshape(-1)]), return_inverse=True)
            tables = self.text_tables(emb[uniq])
            iq, io = inv[:len(q_idx)], inv[len(q_idx):].view_as(o_idx)
            sq = {k: v[iq] for k, v in tables.items()}
            so = {k: v[io] for k, v in tables.items()}
            c = self.crosses(sq, so, p_mod, p_lvl, p_ver)
            u = self.img_proj(h)[:, None, :]
            v = self.txt_out(torch.nn.functional.gelu(sq["tq"][:, None, :] + so["to"]))
            s = self.score(torch.cat([u * v, c], -1)).squeeze(-1) + self.cross_lin(c).squeeze(-1)
            return s.masked_fill(~mask, float("-inf"))

        def forward(self, x, emb, q_idx, o_idx, mask):
            h, lm, ll, lv = self.attributes(x)
            return self.option_logits(h, lm.softmax(-1), ll.softmax(-1), lv.softmax(-1), emb, q_idx,
                                      o_idx, mask)

    return LiteNet()


def _set_anchors(net, vocab: Vocab, encoder) -> None:
    import torch
    with torch.no_grad():
        if vocab.degradations:
            net.a_deg.copy_(torch.from_numpy(encoder.encode([degradation_text(d) for d in vocab.degradations])))
        if vocab.modalities:
            net.a_mod.copy_(torch.from_numpy(encoder.encode([modality_anchor(m) for m in vocab.modalities])))
        if vocab.verdicts:
            net.a_ver.copy_(torch.from_numpy(encoder.encode([verdict_anchor(v) for v in vocab.verdicts])))
        net.a_lvl.copy_(torch.from_numpy(encoder.encode(list(LEVEL_ANCHORS))))
        net.a_pol.copy_(torch.from_numpy(encoder.encode([YES, NO, NONE_ANCHOR])))


def _grow_heads(old, new, old_vocab: Vocab, new_vocab: Vocab) -> None:
    """Copy every weight of `old` into `new` (built for the extended vocabulary); head rows of
    vocabulary entries that existed keep their trained values."""
    import torch
    new_state = new.state_dict()
    for name, tensor in old.state_dict().items():
        if name.startswith(("a_deg", "a_mod", "a_ver")):
            continue  # anchors are rebuilt for the new vocabulary
        if new_state[name].shape == tensor.shape:
            new_state[name] = tensor.clone()
    with torch.no_grad():
        for head, old_list, new_list, per in (("mod_head", old_vocab.modalities, new_vocab.modalities, 1),
                                              ("deg_head", old_vocab.degradations, new_vocab.degradations, 3),
                                              ("ver_head", old_vocab.verdicts, new_vocab.verdicts, 1)):
            ow, ob = old.state_dict()[f"{head}.weight"], old.state_dict()[f"{head}.bias"]
            nw, nb = new_state[f"{head}.weight"].clone(), new_state[f"{head}.bias"].clone()
            for i, name in enumerate(old_list):
                j = new_list.index(name)
                nw[j * per:(j + 1) * per] = ow[i * per:(i + 1) * per]
                nb[j * per:(j + 1) * per] = ob[i * per:(i + 1) * per]
            new_state[f"{head}.weight"], new_state[f"{head}.bias"] = nw, nb
    new.load_state_dict(new_state)


class LiteConfig(TypedDict):
    """``LiteModel.config``: the constructor options, normalized (see :class:`LiteModel`)."""

    epochs: int
    warm_epochs: int
    hidden: int
    lr: float
    batch_size: int
    mcqs_per_image: int
    mcqs_per_epoch: int
    holdout: float
    threads: int
    seed: int


class LiteModel(QualityModel):
    """The embedded CPU model. See the module docstring for the architecture.

    Options: `epochs` (from scratch), `warm_epochs` (fine-tuning a trained model; default half),
    `hidden` (trunk width), `lr`, `batch_size` (MCQs per step), `mcqs_per_image` (training questions
    generated per labelled image), `mcqs_per_epoch` (of those, drawn per image each epoch), `holdout` (fraction of images held out for temperature scaling),
    `threads` (torch threads while training; default 1: the network is small, and on a shared
    2-core machine two OpenMP threads made training 12x slower in CPU time, 2 s vs 27 s, because
    every small op waits at a barrier for a descheduled thread), `seed`.
    An untrained model (no vocabulary yet) answers with uniform probabilities."""

    backend = "lite"

    def __init__(self, version: str = "lite-base", *, epochs: int = 30, warm_epochs: int | None = None,
                 hidden: int = 128, lr: float = 3e-3, batch_size: int = 256, mcqs_per_image: int = 6,
                 mcqs_per_epoch: int = 2, holdout: float = 0.1, threads: int = 1, seed: int = 0, encoder=None):
        super().__init__(version)
        self.config: LiteConfig = {
            "epochs": int(epochs), "warm_epochs": int(warm_epochs or max(1, epochs // 2)),
            "hidden": int(hidden), "lr": float(lr), "batch_size": int(batch_size),
            "mcqs_per_image": int(mcqs_per_image), "mcqs_per_epoch": int(mcqs_per_epoch),
            "holdout": float(holdout), "threads": int(threads), "seed": int(seed)}
        self.vocab: Vocab | None = None
        self.net: Any | None = None  # the LiteNet of _build_net once trained (or loaded)
        self.temperature = 1.0
        self.parent: str | None = None
        self._encoder = encoder

    @classmethod
    def from_settings(cls, settings=None, *, version: str | None = None, **kwargs) -> LiteModel:
        if settings is not None:
            kwargs.setdefault("epochs", settings.lite_epochs)
            kwargs.setdefault("seed", settings.seed)
        return cls(version or "lite-base", **kwargs)

    # ------------------------------------------------------------------ helpers
    @property
    def encoder(self):
        if self._encoder is None:
            from medq.engine.models.text_encoder import default_encoder
            self._encoder = default_encoder()
        return self._encoder

    @property
    def trained(self) -> bool:
        return self.net is not None

    def _trained_parts(self) -> tuple[Any, Vocab]:
        """The network and vocabulary of a trained model (both are set together by fine_tune and
        load); ModelError if the model is untrained."""
        if self.net is None or self.vocab is None:
            raise ModelError(f"lite model {self.version} is untrained: fine_tune it first")
        return self.net, self.vocab

    def _embed_texts(self, texts: list[str]):
        import torch
        return torch.from_numpy(self.encoder.encode(texts))

    def _pack(self, mcqs: Sequence[MCQ]):
        """Text embedding table (S, T) of the distinct strings, question index (B,), option index
        (B, O) and option mask (B, O) for a list of MCQs (gathered per batch: a table of distinct
        strings is far smaller than B x O x T)."""
        import torch
        for m in mcqs:
            if not m.options:
                raise ModelError(f"question {m.item_id}: has no options")
        n_opt = max(len(m.options) for m in mcqs)
        strings = sorted({_clean_question(m.question) for m in mcqs}
                         | {str(t) for m in mcqs for t in m.options.values()})
        index = {s: i for i, s in enumerate(strings)}
        emb = self._embed_texts(strings)
        q_idx = torch.tensor([index[_clean_question(m.question)] for m in mcqs], dtype=torch.long)
        o_idx = torch.zeros(len(mcqs), n_opt, dtype=torch.long)
        mask = torch.zeros(len(mcqs), n_opt, dtype=torch.bool)
        for r, m in enumerate(mcqs):
            for c, text in enumerate(m.options.values()):
                o_idx[r, c] = index[str(text)]
                mask[r, c] = True
        return emb, q_idx, o_idx, mask

    def _attributes(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Predicted attribute probabilities: modality (N, M), levels (N, K, 3), verdict (N, V)."""
        import torch
        net, _ = self._trained_parts()
        x = torch.from_numpy(image_features(images))
        net.eval()
        with _torch_threads(self.config["threads"]), torch.inference_mode():
            _, lm, ll, lv = net.attributes(x)
        return {"modality": lm.softmax(-1).numpy(), "levels": ll.softmax(-1).numpy(),
                "verdict": lv.softmax(-1).numpy()}

    def predict_attributes(self, images: Sequence[np.ndarray]) -> list[dict]:
        """Per image: modality, verdict, degradations [{"type", "level", "prob"}] with presence
        probability > 0.5, verdict probabilities and a quality score (higher = better, 0..1)."""
        _, vocab = self._trained_parts()
        att = self._attributes(images)
        out = []
        ranks = np.array([vocab.verdict_rank(v) for v in vocab.verdicts])
        worst_rank = max(ranks.max(), 1.0)
        for i in range(len(images)):
            lv = att["levels"][i]
            present = 1 - lv[:, 0]
            degs: list[dict[str, Any]] = [
                {"type": t, "level": int(1 + (lv[k, 2] > lv[k, 1])), "prob": float(present[k])}
                for k, t in enumerate(vocab.degradations) if present[k] > 0.5]
            degs.sort(key=lambda d: (-d["level"], -d["prob"], d["type"]))
            pv = att["verdict"][i]
            verdict = vocab.verdicts[int(pv.argmax())]
            if not degs and len(present) and vocab.verdict_rank(verdict) > 0:
                # a verdict below the best needs a reason: name the most likely degradation
                k = int(present.argmax())
                degs = [{"type": vocab.degradations[k],
                         "level": int(min(2, max(1, vocab.verdict_rank(verdict)))),
                         "prob": float(present[k])}]
            score = 1 - float(pv @ ranks) / worst_rank
            out.append({"modality": vocab.modalities[int(att["modality"][i].argmax())],
                        "verdict": verdict,
                        "verdict_probs": dict(zip(vocab.verdicts, pv.round(6).tolist())),
                        "degradations": degs, "quality": score,
                        "severity": float((lv[:, 1] + 2 * lv[:, 2]).sum())})
        return out

    # ------------------------------------------------------------------ interface
    def answer(self, questions: Sequence[MCQ]) -> list[MCQAnswer]:
        import torch
        questions = list(questions)
        if not questions:
            return []
        if not self.trained:
            out = []
            for m in questions:
                p = 1.0 / len(m.options)
                out.append(MCQAnswer(m.item_id, {k: p for k in m.options}, next(iter(m.options)),
                                     next(iter(m.options))))
            return out
        net, _ = self._trained_parts()
        images: list[np.ndarray] = []
        img_index: list[int] = []
        seen: dict[bytes, int] = {}
        for m in questions:
            key = _image_key(m.image)
            if key not in seen:
                seen[key] = len(images)
                images.append(m.image)
            img_index.append(seen[key])
        probs_all = []
        net.eval()
        x_all = torch.from_numpy(image_features(images))
        with _torch_threads(self.config["threads"]), torch.inference_mode():
            h, lm, ll, lv = net.attributes(x_all)
            for s in range(0, len(questions), 1024):
                chunk = questions[s:s + 1024]
                idx = torch.tensor(img_index[s:s + 1024])
                emb, q_idx, o_idx, mask = self._pack(chunk)
                logits = net.option_logits(h[idx], lm.softmax(-1)[idx], ll.softmax(-1)[idx],
                                           lv.softmax(-1)[idx], emb, q_idx, o_idx, mask)
                probs_all.append(torch.softmax(logits / self.temperature, -1).double().numpy())
        out = []
        r = 0
        for block in probs_all:
            for row in block:
                m = questions[r]
                letters = list(m.options)
                p = row[:len(letters)]
                p = p / p.sum()
                probs = {k: float(v) for k, v in zip(letters, p)}
                best = letters[int(np.argmax(p))]
                out.append(MCQAnswer(m.item_id, probs, best, best))
                r += 1
        return out

    def _description(self, att: dict, seed: int = 0) -> str:
        """Text from predicted attributes, worded by :func:`medq.engine.questions.describe` (the
        reference-description generator) when it accepts them, else by a fixed template."""
        degs = [{"type": d["type"], "level": d["level"]} for d in att["degradations"]]
        try:
            from medq.engine.questions import describe as reference_describe
            return reference_describe(att["modality"], degs, att["verdict"], seed=seed)
        except Exception:  # noqa: BLE001 - module missing or a verdict outside the taxonomy
            pass
        mod = att["modality"]
        if degs:
            parts = [f"{'severe' if d['level'] == 2 else 'mild'} {degradation_text(d['type'])}"
                     for d in degs]
            listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
            body = f"This {mod} image shows {listed}."
        else:
            body = f"This {mod} image shows no obvious degradation."
        return f"{body} Overall, the quality of this image is {att['verdict']}."

    def describe(self, images: Sequence[np.ndarray], questions: Sequence[str | None] | None = None
                 ) -> list[str]:
        """Descriptions from predicted attributes (`questions` are accepted for interface parity;
        the lite model describes the same attributes whatever the prompt)."""
        images = list(images)
        if not images:
            return []
        if not self.trained:
            text = ("No quality attributes have been learned yet. "
                    "Overall, the quality of this image is usable.")
            return [text] * len(images)
        return [self._description(a, seed=i) for i, a in enumerate(self.predict_attributes(images))]

    def compare(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Comparison]:
        """P(first better) = P(rank_a < rank_b) + P(tie)/2 under the two predicted verdict
        distributions; near-ties are broken by the predicted total degradation severity."""
        pairs = list(pairs)
        if not pairs:
            return []
        if not self.trained:
            return [Comparison("A", 0.5, "The model is untrained; no preference.") for _ in pairs]
        _, vocab = self._trained_parts()
        atts = self.predict_attributes([im for pair in pairs for im in pair])
        ranks = np.array([vocab.verdict_rank(v) for v in vocab.verdicts])
        out = []
        for i in range(len(pairs)):
            a, b = atts[2 * i], atts[2 * i + 1]
            pa = np.array(list(a["verdict_probs"].values()))
            pb = np.array(list(b["verdict_probs"].values()))
            better = (ranks[:, None] < ranks[None, :]).astype(float)
            tie = (ranks[:, None] == ranks[None, :]).astype(float)
            prob_a = float(pa @ better @ pb + 0.5 * pa @ tie @ pb)
            if abs(prob_a - 0.5) < 0.02:  # verdicts cannot separate them: less severity wins
                diff = b["severity"] - a["severity"]
                prob_a = float(1 / (1 + np.exp(-2 * diff)))
            text = comparison_text(a, b, prob_a, vocab.verdict_rank)
            out.append(Comparison("A" if prob_a >= 0.5 else "B", prob_a, text))
        return out

    # ------------------------------------------------------------------ training
    def fine_tune(self, examples: Sequence[LabelledImage], *, new_version: str, seed: int | None = None
                  ) -> tuple[LiteModel, TrainReport]:
        import torch
        examples = list(examples)
        check_examples(examples)
        seed = self.config["seed"] if seed is None else int(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        cfg = self.config
        new_cfg: LiteConfig = {**cfg, "seed": seed}
        new = LiteModel(new_version, encoder=self._encoder, **new_cfg)
        new.parent = self.version
        with _torch_threads(cfg["threads"]):
            torch.manual_seed(seed)
            feats = image_features([ex.image for ex in examples])
            t_feat = time.perf_counter() - t0
            warm = self.trained
            vocab = Vocab.from_examples(examples, base=self.vocab if warm else None)
            net = _build_net(feats.shape[1], vocab, cfg["hidden"])
            if warm:
                old_net, old_vocab = self._trained_parts()
                _grow_heads(old_net, net, old_vocab, vocab)
            else:
                with torch.no_grad():
                    net.feat_mean.copy_(torch.from_numpy(feats.mean(0)))
                    net.feat_std.copy_(torch.from_numpy(feats.std(0) + 1e-3))
            _set_anchors(net, vocab, self.encoder)
            new.vocab, new.net = vocab, net
            epochs = cfg["warm_epochs"] if warm else cfg["epochs"]
            losses, info = new._train(examples, feats, epochs, seed)
        info.update({"warm_start": warm, "epochs": epochs, "feature_seconds": round(t_feat, 3),
                     "cpu_seconds": round(time.process_time() - c0, 2), "vocab": vocab.to_json()})
        return new, TrainReport(losses=losses, n_examples=len(examples),
                                seconds=time.perf_counter() - t0, extra=info)

    def _train(self, examples: list[LabelledImage], feats: np.ndarray, epochs: int, seed: int):
        import torch
        import torch.nn.functional as F
        cfg = self.config
        net, vocab = self._trained_parts()
        n = len(examples)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        n_hold = int(round(cfg["holdout"] * n)) if n >= 40 else 0
        hold = np.zeros(n, bool)
        hold[perm[:n_hold]] = True

        mcqs, owner = training_mcqs(examples, vocab, seed, cfg["mcqs_per_image"])
        if not mcqs:
            raise ModelError("fine_tune: could not generate any training question from the labels")
        emb, q_idx, o_idx, mask = self._pack(mcqs)
        gold_idx = []
        for m in mcqs:
            assert m.answer is not None  # training_mcqs keeps only MCQs answered by one of their options
            gold_idx.append(list(m.options).index(m.answer))
        gold = torch.tensor(gold_idx)
        owner_t = torch.from_numpy(owner)
        tg = {k: torch.from_numpy(v) for k, v in targets(examples, vocab).items()}
        x = torch.from_numpy(feats)
        train_q = np.where(~hold[owner])[0]
        hold_q = np.where(hold[owner])[0]

        opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
        bs = cfg["batch_size"]
        # each epoch visits every training image with `per_epoch` of its questions (drawn from its
        # pool of about `mcqs_per_image`): the pool gives variety, the draw keeps epochs cheap
        per_epoch = max(1, min(cfg["mcqs_per_epoch"], cfg["mcqs_per_image"]))
        by_image: dict[int, list[int]] = {}
        for qi in train_q:
            by_image.setdefault(int(owner[qi]), []).append(int(qi))
        pools = list(by_image.values())
        n_per_epoch = sum(min(per_epoch, len(p)) for p in pools)
        steps_per_epoch = max(1, math.ceil(n_per_epoch / bs))
        total = epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        losses = []
        for _epoch in range(epochs):
            net.train()
            picked = [p[j] for p in pools
                      for j in rng.choice(len(p), size=min(per_epoch, len(p)), replace=False)]
            order = np.asarray(picked, np.int64)[rng.permutation(len(picked))]
            ep_loss = 0.0
            for s in range(0, len(order), bs):
                b = torch.from_numpy(order[s:s + bs])
                img = owner_t[b]
                h, lm, ll, lv = net.attributes(x[img])
                logits = net.option_logits(h, lm.softmax(-1), ll.softmax(-1), lv.softmax(-1),
                                           emb, q_idx[b], o_idx[b], mask[b])
                loss_opt = F.cross_entropy(logits, gold[b])
                loss_att = F.cross_entropy(lm, tg["modality"][img]) + F.cross_entropy(lv, tg["verdict"][img])
                if vocab.degradations:
                    loss_att = loss_att + F.cross_entropy(ll.reshape(-1, 3), tg["levels"][img].reshape(-1))
                loss = loss_opt + 0.5 * loss_att
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                ep_loss += float(loss.detach()) * len(b)
            losses.append(ep_loss / max(1, len(order)))

        info: dict[str, Any] = {"n_mcqs": len(mcqs), "n_holdout_images": int(n_hold)}
        self.temperature = 1.0
        if len(hold_q):
            net.eval()
            with torch.inference_mode():
                b = torch.from_numpy(hold_q)
                logits = net(x[owner_t[b]], emb, q_idx[b], o_idx[b], mask[b])
            self.temperature, nll_before, nll_after = _fit_temperature(logits, gold[b])
            with torch.inference_mode():
                acc = float((logits.argmax(-1) == gold[b]).float().mean())
            info.update({"temperature": self.temperature, "holdout_nll_t1": nll_before,
                         "holdout_nll": nll_after, "holdout_accuracy": acc})
        net.eval()
        return losses, info

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path) -> None:
        import torch

        from medq.engine.models import write_manifest
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.net is not None:  # trained
            torch.save(self.net.state_dict(), folder / WEIGHTS)
        from medq.engine.features import FEATURE_DIM
        write_manifest(folder, self.backend, self.version, parent=self.parent, config=self.config,
                       trained=self.trained, temperature=self.temperature,
                       vocab=self.vocab.to_json() if self.vocab else None,
                       feature_dim=FEATURE_DIM, text_encoder="all-MiniLM-L6-v2")

    @classmethod
    def load(cls, folder: Path, **kwargs) -> LiteModel:
        import torch

        from medq.engine.models import read_manifest
        folder = Path(folder)
        meta = read_manifest(folder)
        if meta["backend"] != cls.backend:
            raise ModelError(f"{folder}: holds a {meta['backend']!r} model, not 'lite'")
        model = cls(meta["version"], **{**meta.get("config", {}), **kwargs})
        model.parent = meta.get("parent")
        model.temperature = float(meta.get("temperature", 1.0))
        if meta.get("trained"):
            from medq.engine.features import FEATURE_DIM
            if meta.get("feature_dim") != FEATURE_DIM:
                raise ModelError(f"{folder}: saved with {meta.get('feature_dim')} image features; "
                                 f"this MedQ computes {FEATURE_DIM}. Retrain the lite model.")
            model.vocab = Vocab.from_json(meta["vocab"])
            net = _build_net(FEATURE_DIM, model.vocab, model.config["hidden"])
            weights = folder / WEIGHTS
            if not weights.is_file():
                raise ModelError(f"{weights}: weights file missing")
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            net.eval()
            model.net = net
        return model


def _fit_temperature(logits, gold) -> tuple[float, float, float]:
    """Temperature T minimizing the NLL of softmax(logits / T) (grid over log T, then refined);
    deterministic. Returns (T, NLL at T=1, NLL at T)."""
    import torch.nn.functional as F

    def nll(t: float) -> float:
        return float(F.cross_entropy(logits / t, gold))
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    vals = [nll(t) for t in grid]
    best = int(np.argmin(vals))
    lo, hi = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    fine = np.exp(np.linspace(np.log(lo), np.log(hi), 41))
    fvals = [nll(t) for t in fine]
    t = float(fine[int(np.argmin(fvals))])
    return t, nll(1.0), float(min(fvals))


def _issues(att: dict) -> str:
    if not att["degradations"]:
        return "no obvious degradation"
    return " and ".join(f"{'severe' if d['level'] == 2 else 'mild'} {degradation_text(d['type'])}"
                        for d in att["degradations"])


def comparison_text(a: dict, b: dict, prob_a: float, verdict_rank) -> str:
    """Explanation of a comparison that never contradicts its own call.

    `a`, `b`: predicted attributes (``verdict``, ``degradations``, ``severity``) of the first and
    second image; `prob_a`: P(first better) (the call is the side with >= 0.5); `verdict_rank`:
    verdict -> rank (0 = best). The call rests on the full verdict distributions, so the single
    most likely verdicts or the named degradations can point the other way; the text then says
    the call is close instead of stating both sides as facts that disagree with it."""
    first_wins = prob_a >= 0.5
    first, second = ("first", "second") if first_wins else ("second", "first")
    winner, loser = (a, b) if first_wins else (b, a)
    p = prob_a if first_wins else 1.0 - prob_a
    rw, rl = verdict_rank(winner["verdict"]), verdict_rank(loser["verdict"])
    close = p < 0.6 or rw > rl or winner["severity"] > loser["severity"]
    parts = [f"The {first} image has better quality than the {second}"
             + (f" (a close call: probability {p:.2f})." if close else ".")]
    if winner["severity"] <= loser["severity"]:
        parts.append(f"The {second} shows {_issues(loser)}, while the {first} shows "
                     f"{_issues(winner)}.")
    else:
        parts.append(f"Both show degradation ({first}: {_issues(winner)}; {second}: "
                     f"{_issues(loser)}); the verdict probabilities favour the {first}.")
    if rw < rl:
        parts.append(f"The {first} image is {winner['verdict']} and the {second} is "
                     f"{loser['verdict']}.")
    elif rw == rl:
        parts.append(f"Both images are most likely {winner['verdict']}.")
    return " ".join(parts)
