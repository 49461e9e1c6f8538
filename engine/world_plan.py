"""Planning a synthetic world (pure): which base image, view and degradations each item gets.

A *world* has an evaluation set, a labelled seed set and an unlabeled pool (layout and writing
in :mod:`medq.storage.world_writer`). This module decides the content of each item, deterministic by
seed; pixels come from :func:`render_item` (a view of a base image, then
:func:`medq.engine.degrade.degrade`).

Sampling (vectorized, shared with the pool manifest, :mod:`medq.engine.manifest`):

- modality ~ `Mix.modalities` weights;
- base image uniformly among the modality's bases; a random *view* of it: a square crop of
  70-100 % of the side, horizontal flip, and for orientation-free modalities (fundus,
  histopathology, endoscopy) vertical flips and 90-degree rotations;
- worst level ~ `Mix.levels` = (P(clean), P(mild), P(severe)): it sets the verdict;
- one degradation, a second with probability `Mix.multi`; types drawn without replacement from
  the modality's family (modality-specific types weigh `Mix.specific_weight`, general ones 1,
  times `Mix.degradations[type]`; 0 removes a type). With a severe worst level the first is
  severe and the second mild or severe; with a mild worst level every one is mild.

Biases: `seed_bias` multiplies the weights of chosen modalities / degradations by `factor` in the
seed set (under-representation); `pool_rare` makes items that have a chosen modality or
degradation exactly `share` of the pool (the informative cases are rare). The eval set follows
the unbiased mix. Each split draws from its own generator, so e.g. the eval set does not change
when the pool size does.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from medq.engine import taxonomy
from medq.engine.degrade import degrade
from medq.engine.degrade.registry import SIMULATORS
from medq.errors import MedQError

BASE_OVERSAMPLE = 2          # bases are loaded at 2x the output size so crops keep detail
MIN_CROP, MAX_CROP = 0.7, 1.0
FREE_ORIENTATION = ("fundus", "histopathology", "endoscopy")
SPLIT_CODES = {"eval": 1, "seed": 2, "pool": 3, "paired": 4}
MAX_DEGRADATIONS = 2


class WorldSpecError(MedQError):
    """A world specification or mix is invalid (the message names the field)."""


# -- the mix ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mix:
    """What items look like. Weights need not sum to 1 (they are normalized)."""

    modalities: Mapping[str, float] = field(
        default_factory=lambda: {m: 1.0 for m in taxonomy.MODALITIES})
    degradations: Mapping[str, float] = field(default_factory=dict)  # multiplier per type
    levels: tuple[float, float, float] = (0.3, 0.4, 0.3)  # P(clean), P(worst mild), P(severe)
    multi: float = 0.25                                   # P(a second degradation)
    specific_weight: float = 2.0

    def validate(self, where: str = "mix") -> Mix:
        if not self.modalities:
            raise WorldSpecError(f"{where}.modalities: at least one modality is needed")
        for m, w in self.modalities.items():
            if m not in taxonomy.MODALITIES:
                raise WorldSpecError(f"{where}.modalities: unknown modality {m!r}; known: "
                                     f"{list(taxonomy.MODALITIES)}")
            if not (w >= 0 and np.isfinite(w)):
                raise WorldSpecError(f"{where}.modalities[{m!r}]: weight must be >= 0, got {w}")
        if sum(self.modalities.values()) <= 0:
            raise WorldSpecError(f"{where}.modalities: all weights are zero")
        for t, w in self.degradations.items():
            if t not in SIMULATORS:
                raise WorldSpecError(f"{where}.degradations: no simulator for {t!r}; simulated: "
                                     f"{sorted(SIMULATORS)}")
            if not (w >= 0 and np.isfinite(w)):
                raise WorldSpecError(f"{where}.degradations[{t!r}]: weight must be >= 0, got {w}")
        if len(self.levels) != 3 or any(p < 0 for p in self.levels) or sum(self.levels) <= 0:
            raise WorldSpecError(f"{where}.levels: three non-negative weights (clean, mild, "
                                 f"severe) needed, got {self.levels}")
        if not 0 <= self.multi <= 1:
            raise WorldSpecError(f"{where}.multi: probability in [0, 1], got {self.multi}")
        return self

    def to_dict(self) -> dict:
        return {"modalities": dict(self.modalities), "degradations": dict(self.degradations),
                "levels": list(self.levels), "multi": self.multi,
                "specific_weight": self.specific_weight}

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Mix:
        d = dict(d or {})
        kwargs: dict[str, Any] = {k: (tuple(v) if k == "levels" else v) for k, v in d.items()
                                  if k in cls.__dataclass_fields__}
        mix = cls(**kwargs)
        return mix.validate()

    def types_for(self, modality: str) -> tuple[list[str], np.ndarray]:
        """Degradation types a `modality` item can get and their weights (zeros dropped)."""
        specific = taxonomy.DEGRADATIONS.get(modality, ())
        names, weights = [], []
        for t in taxonomy.degradations_for(modality):
            if t not in SIMULATORS:
                continue
            w = ((self.specific_weight if t in specific else 1.0)
                 * float(self.degradations.get(t, 1.0)))
            if w > 0:
                names.append(t)
                weights.append(w)
        return names, np.asarray(weights, dtype=np.float64)

    def scaled(self, modalities: Sequence[str] = (), degradations: Sequence[str] = (),
               factor: float = 0.0) -> Mix:
        """This mix with the listed modalities' and degradations' weights times `factor`."""
        mods = {m: w * (factor if m in modalities else 1.0) for m, w in self.modalities.items()}
        degs = dict(self.degradations)
        for t in degradations:
            degs[t] = degs.get(t, 1.0) * factor
        return replace(self, modalities=mods, degradations=degs)


@dataclass(frozen=True)
class Selection:
    """A set of modalities and/or degradation types (with a factor or a share)."""

    modalities: tuple[str, ...] = ()
    degradations: tuple[str, ...] = ()
    factor: float = 0.1   # seed_bias: weight multiplier
    share: float = 0.05   # pool_rare: fraction of the pool that is such cases

    def is_empty(self) -> bool:
        return not self.modalities and not self.degradations

    def to_dict(self) -> dict:
        return {"modalities": list(self.modalities), "degradations": list(self.degradations),
                "factor": self.factor, "share": self.share}

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Selection | None:
        if not d:
            return None
        return cls(modalities=tuple(d.get("modalities", ())),
                   degradations=tuple(d.get("degradations", ())),
                   factor=float(d.get("factor", 0.1)), share=float(d.get("share", 0.05)))

    def validate(self, where: str) -> Selection:
        for m in self.modalities:
            if m not in taxonomy.MODALITIES:
                raise WorldSpecError(f"{where}.modalities: unknown modality {m!r}")
        for t in self.degradations:
            if t not in SIMULATORS:
                raise WorldSpecError(f"{where}.degradations: no simulator for {t!r}")
        if not 0 <= self.factor or not np.isfinite(self.factor):
            raise WorldSpecError(f"{where}.factor must be >= 0, got {self.factor}")
        if not 0 <= self.share <= 1:
            raise WorldSpecError(f"{where}.share must be in [0, 1], got {self.share}")
        return self


# -- vectorized sampling -------------------------------------------------------------------------

@dataclass
class Draws:
    """Columns of `n` sampled items (NumPy arrays of length n)."""

    modality: np.ndarray      # str
    base_ref: np.ndarray      # str
    crop: np.ndarray          # (n, 3) float: side fraction, top, left (fractions of the slack)
    flip_h: np.ndarray        # bool
    flip_v: np.ndarray        # bool
    rot90: np.ndarray         # int 0-3
    types: np.ndarray         # (n, MAX_DEGRADATIONS) str, "" = none
    levels: np.ndarray        # (n, MAX_DEGRADATIONS) int 0-2

    def __len__(self) -> int:
        return len(self.modality)

    def take(self, idx) -> Draws:
        return Draws(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: Sequence[Draws]) -> Draws:
        return Draws(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in Draws.__dataclass_fields__))

    def degradations(self, i: int) -> list[dict]:
        return [{"type": str(t), "level": int(lv)} for t, lv in zip(self.types[i], self.levels[i])
                if t and lv > 0]

    def view(self, i: int) -> dict:
        return {"crop": [round(float(v), 6) for v in self.crop[i]], "flip_h": bool(self.flip_h[i]),
                "flip_v": bool(self.flip_v[i]), "rot90": int(self.rot90[i])}


def sample(n: int, rng: np.random.Generator, mix: Mix,
           refs: Mapping[str, Sequence[str]]) -> Draws:
    """Draw `n` items from `mix`; `refs` lists the base image references of each modality."""
    mods = [m for m, w in mix.modalities.items() if w > 0]
    for m in mods:
        if not refs.get(m):
            raise WorldSpecError(f"no base images for modality {m!r}")
    w = np.array([mix.modalities[m] for m in mods], dtype=np.float64)
    mod_idx = rng.choice(len(mods), size=n, p=w / w.sum())
    modality = np.array(mods, dtype=object)[mod_idx]
    base_ref = np.empty(n, dtype=object)
    crop = np.empty((n, 3), dtype=np.float64)
    crop[:, 0] = rng.uniform(MIN_CROP, MAX_CROP, size=n)
    crop[:, 1:] = rng.random((n, 2))
    flip_h = rng.random(n) < 0.5
    free = np.isin(modality, FREE_ORIENTATION)
    flip_v = (rng.random(n) < 0.5) & free
    rot90 = np.where(free, rng.integers(0, 4, size=n), 0)
    lp = np.asarray(mix.levels, dtype=np.float64)
    worst = rng.choice(3, size=n, p=lp / lp.sum())
    second = rng.random(n) < mix.multi
    second_level = np.where(worst == 2, rng.integers(1, 3, size=n), 1)
    types = np.full((n, MAX_DEGRADATIONS), "", dtype=object)
    levels = np.zeros((n, MAX_DEGRADATIONS), dtype=np.int64)
    width = max(len(mix.types_for(m)[0]) for m in mods)
    gumbel = rng.gumbel(size=(n, width))  # top-k without replacement: argsort(log w + Gumbel)
    base_u = rng.random(n)
    for k, m in enumerate(mods):
        rows = np.flatnonzero(mod_idx == k)
        if len(rows) == 0:
            continue
        bases = list(refs[m])
        base_ref[rows] = np.array(bases, dtype=object)[
            np.minimum((base_u[rows] * len(bases)).astype(np.int64), len(bases) - 1)]
        names, tw = mix.types_for(m)
        if not names:
            continue  # nothing may degrade this modality: its items stay clean
        keys = np.log(tw)[None, :] + gumbel[rows, :len(names)]
        order = np.argsort(-keys, axis=1)
        types[rows, 0] = np.array(names, dtype=object)[order[:, 0]]
        if len(names) > 1:
            types[rows, 1] = np.array(names, dtype=object)[order[:, 1]]
    has_types = types[:, 0] != ""
    levels[:, 0] = np.where(has_types, worst, 0)
    levels[:, 1] = np.where(has_types & (types[:, 1] != "") & second & (worst > 0), second_level, 0)
    types[levels == 0] = ""
    return Draws(modality, base_ref, crop, flip_h, flip_v, rot90.astype(np.int64), types, levels)


def is_selected(d: Draws, sel: Selection) -> np.ndarray:
    """Boolean mask: items with a selected modality or a selected degradation type."""
    mask = np.isin(d.modality, list(sel.modalities)) if sel.modalities else np.zeros(len(d), bool)
    if sel.degradations:
        mask |= np.isin(d.types, list(sel.degradations)).any(axis=1)
    return mask


def sample_with_rare(n: int, rng: np.random.Generator, mix: Mix, refs, rare: Selection | None
                     ) -> Draws:
    """Draw `n` items where exactly round(share * n) are `rare` cases, the rest never are.

    Common items come from the mix without the rare modalities and degradations; rare items by
    rejection from a mix that boosts them. Rows are shuffled together."""
    if rare is None or rare.is_empty():
        return sample(n, rng, mix, refs)
    n_rare = round(rare.share * n)
    parts = []
    common_mix = mix.scaled(rare.modalities, rare.degradations, 0.0)
    if n - n_rare > 0:
        if sum(common_mix.modalities.values()) <= 0:
            raise WorldSpecError("pool_rare selects every modality: no common items are left")
        parts.append(sample(n - n_rare, rng, common_mix, refs))
    if n_rare > 0:
        boost = mix.scaled(rare.modalities, rare.degradations, 20.0)
        got, have, empty_batches = [], 0, 0
        while have < n_rare:
            batch = sample(max(64, 2 * (n_rare - have)), rng, boost, refs)
            keep = batch.take(np.flatnonzero(is_selected(batch, rare)))
            if len(keep) == 0:
                empty_batches += 1
                if empty_batches >= 20:
                    raise WorldSpecError(
                        f"pool_rare {rare.to_dict()}: the mix never produces such items "
                        "(is the degradation possible for any modality of the mix?)")
                continue
            got.append(keep.take(slice(0, n_rare - have)))
            have += len(got[-1])
        parts.append(Draws.concat(got))
    return Draws.concat(parts).take(rng.permutation(n))


# -- world specification and plan ----------------------------------------------------------------

@dataclass(frozen=True)
class WorldSpec:
    """Everything that determines a world; `to_dict` goes into world.json.

    Sizes count images: each eval image yields one MCQ per entry of `question_types` and one
    description row; `paired` eval pairs go to the optional paired TSV."""

    eval_size: int = 60
    pool_size: int = 500
    seed_size: int = 60
    seed: int = 0
    image_size: int = 128
    mix: Mix = field(default_factory=Mix)
    seed_bias: Selection | None = None
    pool_rare: Selection | None = None
    question_types: tuple[str, ...] = taxonomy.QUESTION_TYPES
    paired: int = 0

    def validate(self) -> WorldSpec:
        for name in ("eval_size", "pool_size", "seed_size", "paired"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise WorldSpecError(f"world spec: {name} must be an integer >= 0, got {v!r}")
        if not 32 <= self.image_size <= 1024:
            raise WorldSpecError(f"world spec: image_size must be 32-1024 px, "
                                 f"got {self.image_size}")
        self.mix.validate("world spec: mix")
        if self.seed_bias:
            self.seed_bias.validate("world spec: seed_bias")
        if self.pool_rare:
            self.pool_rare.validate("world spec: pool_rare")
        for q in self.question_types:
            if q not in taxonomy.QUESTION_TYPES:
                raise WorldSpecError(f"world spec: unknown question type {q!r}")
        return self

    def to_dict(self) -> dict:
        return {"eval_size": self.eval_size, "pool_size": self.pool_size,
                "seed_size": self.seed_size, "seed": self.seed, "image_size": self.image_size,
                "mix": self.mix.to_dict(),
                "seed_bias": self.seed_bias.to_dict() if self.seed_bias else None,
                "pool_rare": self.pool_rare.to_dict() if self.pool_rare else None,
                "question_types": list(self.question_types), "paired": self.paired}

    @classmethod
    def from_dict(cls, d: Mapping) -> WorldSpec:
        d = dict(d)
        return cls(eval_size=int(d.get("eval_size", 60)), pool_size=int(d.get("pool_size", 500)),
                   seed_size=int(d.get("seed_size", 60)), seed=int(d.get("seed", 0)),
                   image_size=int(d.get("image_size", 128)), mix=Mix.from_dict(d.get("mix")),
                   seed_bias=Selection.from_dict(d.get("seed_bias")),
                   pool_rare=Selection.from_dict(d.get("pool_rare")),
                   question_types=tuple(d.get("question_types", taxonomy.QUESTION_TYPES)),
                   paired=int(d.get("paired", 0))).validate()


@dataclass(frozen=True)
class ItemSpec:
    """One planned image: what to render and its ground truth."""

    name: str                 # file stem, e.g. "pool_000042"
    split: str                # eval | seed | pool | paired
    index: int
    modality: str
    base_ref: str
    view: dict
    degradations: list
    verdict: str
    seed: int                 # render seed of `degrade`

    def to_dict(self) -> dict:
        return asdict(self)


def item_seed(world_seed: int, split: str, index: int) -> int:
    """63-bit render seed of item `index` of `split` (sha256, stable across processes)."""
    h = hashlib.sha256(f"medq-world|{world_seed}|{split}|{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def split_rng(world_seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([int(world_seed) & 0xFFFFFFFF, SPLIT_CODES[split]])


def _items(split: str, draws: Draws, world_seed: int, offset: int = 0) -> list[ItemSpec]:
    out = []
    for i in range(len(draws)):
        degs = draws.degradations(i)
        k = offset + i
        out.append(ItemSpec(name=f"{split}_{k:06d}", split=split, index=k,
                            modality=str(draws.modality[i]), base_ref=str(draws.base_ref[i]),
                            view=draws.view(i), degradations=degs,
                            verdict=taxonomy.verdict_for(degs),
                            seed=item_seed(world_seed, split, k)))
    return out


@dataclass
class WorldPlan:
    spec: WorldSpec
    eval: list[ItemSpec]
    seed: list[ItemSpec]
    pool: list[ItemSpec]
    paired: list[tuple[ItemSpec, ItemSpec]]

    def all_items(self) -> list[ItemSpec]:
        return self.eval + self.seed + self.pool + [x for pair in self.paired for x in pair]


def plan_world(spec: WorldSpec, refs: Mapping[str, Sequence[str]]) -> WorldPlan:
    """Item specs of every split, deterministic in (`spec`, `refs`)."""
    spec.validate()
    mix = spec.mix
    ev = sample(spec.eval_size, split_rng(spec.seed, "eval"), mix, refs)
    seed_mix = mix
    if spec.seed_bias and not spec.seed_bias.is_empty():
        b = spec.seed_bias
        seed_mix = mix.scaled(b.modalities, b.degradations, b.factor)
        if sum(seed_mix.modalities.values()) <= 0:
            raise WorldSpecError("seed_bias removes every modality from the seed set")
    sd = sample(spec.seed_size, split_rng(spec.seed, "seed"), seed_mix, refs)
    pl = sample_with_rare(spec.pool_size, split_rng(spec.seed, "pool"), mix, refs, spec.pool_rare)
    paired = []
    if spec.paired:
        rng = split_rng(spec.seed, "paired")
        draws_a = sample(spec.paired, rng, mix, refs)
        draws_b = sample(spec.paired, rng, mix, refs)
        items_a = _items("paired", draws_a, spec.seed)
        items_b = _items("paired", draws_b, spec.seed, offset=spec.paired)
        for x, y in zip(items_a, items_b):
            # Same content (base, view), different quality: a comparison of degradations only.
            y = ItemSpec(**{**y.to_dict(), "modality": x.modality, "base_ref": x.base_ref,
                            "view": x.view, "degradations": _refit(y.degradations, x.modality, mix),
                            })
            y = replace(y, verdict=taxonomy.verdict_for(y.degradations))
            paired.append((x, y))
    return WorldPlan(spec, _items("eval", ev, spec.seed), _items("seed", sd, spec.seed),
                     _items("pool", pl, spec.seed), paired)


def _refit(degradations: list[dict], modality: str, mix: Mix) -> list[dict]:
    """Keep only degradations that fit `modality` (a paired B image borrows A's content)."""
    allowed = set(mix.types_for(modality)[0])
    return [d for d in degradations if d["type"] in allowed]


# -- rendering ----------------------------------------------------------------------------------

def base_size(image_size: int) -> int:
    """Side of the base images a world of `image_size` renders from."""
    return BASE_OVERSAMPLE * int(image_size)


def apply_view(base: np.ndarray, view: Mapping, size: int) -> np.ndarray:
    """Crop / rotate / flip a square base and resize it to (size, size); float32 in [0, 1]."""
    s = base.shape[0]
    frac, top, left = view["crop"]
    c = max(8, min(s, round(float(frac) * s)))
    t = round(float(top) * (s - c))
    l = round(float(left) * (s - c))
    img = base[t:t + c, l:l + c]
    k = int(view.get("rot90", 0)) % 4
    if k:
        img = np.rot90(img, k)
    if view.get("flip_h"):
        img = img[:, ::-1]
    if view.get("flip_v"):
        img = img[::-1]
    if img.shape[0] != size:
        method = Image.Resampling.LANCZOS if img.shape[0] > size else Image.Resampling.BICUBIC
        chans = [img] if img.ndim == 2 else [img[:, :, i] for i in range(img.shape[2])]
        out = [np.asarray(Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32), mode="F")
                          .resize((size, size), method), dtype=np.float32) for ch in chans]
        img = out[0] if img.ndim == 2 else np.stack(out, axis=-1)
    return np.clip(np.ascontiguousarray(img, dtype=np.float32), 0.0, 1.0)


def render(base: np.ndarray, view: Mapping, degradations: list[dict], seed: int, size: int
           ) -> tuple[np.ndarray, dict]:
    """The pixels of an item: view of `base` (at :func:`base_size`), then `degrade`."""
    return degrade(apply_view(base, view, size), degradations, seed)


def render_item(item: ItemSpec, base: np.ndarray, size: int) -> tuple[np.ndarray, dict]:
    """Render a planned item from its base image (loaded at ``base_size(size)``)."""
    img, prov = render(base, item.view, item.degradations, item.seed, size)
    return img, {"base_ref": item.base_ref, "view": item.view, **prov}


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
