"""A small synthetic Med-IQA world for the lite-model tests: textured base images per modality and
simple in-test degradations at two levels, labelled by construction (verdict from the taxonomy)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from medq.engine.models.base import MCQ, LabelledImage
from medq.engine.taxonomy import verdict_for

SIZE = 96
MODALITIES = ("CT", "MRI", "fundus")


def base_image(modality: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size))
    body = ((yy - 0.5) ** 2 / rng.uniform(0.12, 0.18) + (xx - 0.5) ** 2 / rng.uniform(0.12, 0.18)) < 1
    img[body] = rng.uniform(0.35, 0.55)
    for _ in range(int(rng.integers(4, 9))):
        cy, cx = rng.uniform(0.25, 0.75, 2)
        r = rng.uniform(0.03, 0.12)
        img[((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2] = rng.uniform(0.1, 0.9)
    img = ndimage.gaussian_filter(img + 0.03 * ndimage.gaussian_filter(rng.normal(size=img.shape), 1.5), 0.8)
    img = np.clip(img, 0, 1)
    if modality == "fundus":
        return np.clip(np.stack([img * 0.95 + 0.05, img * 0.55, img * 0.25], -1), 0, 1).astype(np.float32)
    if modality == "MRI":
        img = np.sqrt(np.clip(img, 0, 1))  # different contrast
    return img.astype(np.float32)


def degrade(img: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    s = (1.0, 2.2)[level - 1]
    size = img.shape[0]
    if kind == "gaussian_noise":
        out = img + rng.normal(0, 0.03 * s, img.shape)
    elif kind == "blur":
        sig = (1.2 * s, 1.2 * s, 0)[: img.ndim]
        out = ndimage.gaussian_filter(img, sig)
    elif kind == "ghosting":
        shift = size // int(rng.choice([3, 4]))
        out = img * (1 - 0.15 * s) + 0.15 * s * np.roll(img, shift, axis=0)
    elif kind == "bias_field":
        yy, xx = np.mgrid[0:size, 0:size] / size
        field = 1 + 0.35 * s * (xx - 0.5) * rng.choice([-1, 1]) + 0.2 * s * (yy - 0.5)
        out = img * (field if img.ndim == 2 else field[..., None])
    elif kind == "brightness":
        out = img * (1 - 0.25 * s) if rng.random() < 0.5 else img + 0.15 * s
    elif kind == "uneven_illumination":
        yy, xx = np.mgrid[0:size, 0:size] / size
        field = np.exp(-((xx - rng.uniform(0, 1)) ** 2 + (yy - rng.uniform(0, 1)) ** 2) / (0.2 / s))
        out = img * (0.4 + 0.6 * field)[..., None] if img.ndim == 3 else img * (0.4 + 0.6 * field)
    else:
        raise ValueError(kind)
    return np.clip(out, 0, 1).astype(np.float32)


def make_world(n: int, seed: int, types: dict[str, tuple[str, ...]] | None = None,
               p_clean: float = 0.3, prefix: str = "w", size: int = SIZE) -> list[LabelledImage]:
    """`n` labelled images; `types` maps modality -> degradation types that may occur."""
    types = types or {"CT": ("gaussian_noise", "blur", "brightness"),
                      "MRI": ("gaussian_noise", "ghosting", "bias_field", "blur"),
                      "fundus": ("uneven_illumination", "blur", "brightness")}
    rng = np.random.default_rng(seed)
    out = []
    mods = [m for m in MODALITIES if m in types]
    for i in range(n):
        mod = mods[i % len(mods)]
        img = base_image(mod, rng, size)
        degs = []
        if types[mod] and rng.random() > p_clean:
            k = 1 if rng.random() < 0.8 else 2
            for t in rng.choice(types[mod], size=min(k, len(types[mod])), replace=False):
                lvl = int(rng.integers(1, 3))
                img = degrade(img, str(t), lvl, rng)
                degs.append({"type": str(t), "level": lvl})
        out.append(LabelledImage(item_id=f"{prefix}{seed}-{i}", image=img, modality=mod,
                                 verdict=verdict_for(degs), degradations=degs))
    return out


def eval_mcqs(examples: list[LabelledImage], seed: int) -> list[MCQ]:
    """Evaluation MCQs phrased differently from the training generator's templates."""
    from medq.engine.models.lite_data import degradation_text
    rng = np.random.default_rng(seed)
    out = []
    all_types = sorted({d["type"] for ex in examples for d in ex.degradations})
    for ex in examples:
        present = {d["type"]: d["level"] for d in ex.degradations}
        t = str(rng.choice(all_types))
        out.append(MCQ(f"{ex.item_id}-yn", ex.image,
                       f"Would you say this picture is affected by {degradation_text(t)}?",
                       {"A": "Yes", "B": "No"}, "A" if t in present else "B", ex.modality,
                       "Yes-or-No", present.get(t, 0)))
        verdicts = ["good", "usable", "reject"]
        out.append(MCQ(f"{ex.item_id}-q", ex.image, "Overall, how good is the quality of this scan?",
                       {"A": "Good", "B": "Usable", "C": "Reject"},
                       "ABC"[verdicts.index(ex.verdict)], ex.modality, "How",
                       max(present.values(), default=0)))
        if present:
            gold = max(present, key=lambda k: (present[k], k))
            others = [x for x in all_types if x not in present]
            rng.shuffle(others)
            opts = [degradation_text(gold)] + [degradation_text(x) for x in others[:3]]
            order = rng.permutation(len(opts))
            letters = "ABCD"[:len(opts)]
            out.append(MCQ(f"{ex.item_id}-w", ex.image, "Which problem degrades this picture?",
                           {letters[i]: opts[j] for i, j in enumerate(order)},
                           letters[int(np.where(order == 0)[0][0])], ex.modality, "What",
                           present[gold]))
    return out
