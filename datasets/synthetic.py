"""Synthetic cross-modal data shaped like the real benchmarks (the embedded default).

Both modalities are noisy views of one latent semantic vector built from the item's labels:
z = normalize(sum of class prototypes) + item-specific content, then each modality adds its own
noise and nuisance factors before a fixed random map into its feature space. Noise levels are set
so that learned methods land well above random and well below 1 (see tests/test_synthetic.py).
Everything is drawn from one numpy Generator seeded by `seed`: same seed, same bytes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from .container import CrossModalData, DataError
from .protocols import build_pool, make_data
from .registry import register

# Label frequencies of the 24 MIRFlickr-25K concepts (fraction of the 20,015 DCMH items carrying
# each; read off mirflickr25k-lall.mat). Used as popularity weights so the synthetic set has the
# same skew: from 0.9 % to 42 % of items per label.
MIRFLICKR_LABEL_FREQ = (
    0.132, 0.009, 0.032, 0.049, 0.161, 0.029, 0.231, 0.078, 0.041, 0.316, 0.035, 0.237,
    0.112, 0.392, 0.370, 0.137, 0.041, 0.057, 0.341, 0.423, 0.092, 0.122, 0.199, 0.144,
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape, protocol and difficulty of one synthetic preset."""

    n_items: int
    n_classes: int
    image_dim: int
    text_dim: int
    n_query: int
    n_train: int
    n_validation: int
    multi_label: bool
    mean_labels: float = 1.0          # multi-label: mean labels per item (1 + Poisson)
    image_kind: str = "relu"          # "relu" (CNN fc7-like) or "histogram" (BoVW, rows sum to 1)
    text_kind: str = "tags"           # "tags" (sparse binary BoW) or "topics" (LDA proportions)
    mean_tags: float = 4.6            # tags: mean number of active tags per item
    query_is_retrieval_test: bool = False  # wiki/DSCMR style: query = retrieval = held-out test
    latent_dim: int = 32
    content_noise: float = 0.6        # item content shared by both modalities, unrelated to labels
    image_noise: float = 0.9          # modality-specific noise (relative to the unit semantic part)
    text_noise: float = 0.9
    label_noise: float = 0.05         # probability that an item carries one extra random label
    n_scenes: int = 16                # multi-label: latent scene types that group co-occurring labels
    scene_concentration: float = 0.1  # Dirichlet concentration of scene profiles (lower: more grouped)


PRESETS: dict[str, SyntheticSpec] = {
    # MIRFlickr-25K as used by DCMH: 20,015 pairs, 24 labels (~3.8 per item), 4096-d fc7-like image
    # features, 1,386-d binary tags (~4.6 per item); 2,000 queries, the rest retrieval, 10,000
    # training items drawn from retrieval.
    "synthetic-mirflickr": SyntheticSpec(
        n_items=20015, n_classes=24, image_dim=4096, text_dim=1386,
        n_query=2000, n_train=10000, n_validation=1000,
        multi_label=True, mean_labels=3.78,
        # Calibrated so a linear probe (ridge to labels, random rotation to 32 bits) reaches
        # mAP ~0.66 against ~0.51-0.57 for random ranking: room for methods to differ.
        content_noise=0.4, image_noise=0.7, text_noise=0.7,
    ),
    # Wikipedia: 2,866 pairs, 10 classes, single label, 128-d SIFT BoVW histograms and 10-d LDA
    # topic proportions; official 2,173 train / 693 test, test used as query and database.
    "synthetic-wiki": SyntheticSpec(
        n_items=2866, n_classes=10, image_dim=128, text_dim=10,
        n_query=693, n_train=2173, n_validation=217,
        multi_label=False, image_kind="histogram", text_kind="topics",
        query_is_retrieval_test=True, image_noise=1.3, text_noise=0.7,
    ),
}


def _labels(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    n, c = spec.n_items, spec.n_classes
    labels = np.zeros((n, c), dtype=np.float32)
    if spec.multi_label:
        weights = np.asarray(MIRFLICKR_LABEL_FREQ if c == 24 else rng.dirichlet(np.ones(c)), dtype=np.float64)
        weights = weights / weights.sum()
        counts = np.clip(1 + rng.poisson(spec.mean_labels - 1.0, size=n), 1, c)
        # Scenes: each item draws one latent scene whose label profile tilts the global
        # popularity, so labels co-occur in groups (as "sky"/"clouds" do) and two random items
        # share a label about as often as in the real set (MIRFlickr: 54 % of pairs).
        profiles = weights * rng.dirichlet(np.full(c, spec.scene_concentration), size=spec.n_scenes)
        profiles /= profiles.sum(axis=1, keepdims=True)
        scene = rng.integers(0, spec.n_scenes, size=n)
        # Weighted sampling without replacement for all items at once (Gumbel top-k).
        keys = np.log(profiles[scene] + 1e-12) + rng.gumbel(size=(n, c))
        ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
        labels[ranks < counts[:, None]] = 1.0
    else:
        weights = rng.dirichlet(np.full(c, 8.0))  # mildly unequal class sizes, as in Wikipedia
        labels[np.arange(n), rng.choice(c, size=n, p=weights)] = 1.0
    return labels


def _semantic(labels: np.ndarray, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    prototypes = rng.standard_normal((spec.n_classes, spec.latent_dim))
    # Label noise: some items are described by one more concept than their labels admit.
    described = labels.copy()
    extra = np.flatnonzero(rng.random(len(labels)) < spec.label_noise)
    described[extra, rng.integers(0, spec.n_classes, size=extra.size)] = 1.0
    z = described @ prototypes
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z + spec.content_noise * rng.standard_normal(z.shape) / np.sqrt(spec.latent_dim)


def _image(z: np.ndarray, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    n, h = z.shape
    view = z + spec.image_noise * rng.standard_normal(z.shape) / np.sqrt(h)
    nuisance = rng.standard_normal((n, h))  # pose, lighting...: large, label-free variation
    mix = rng.standard_normal((2 * h, spec.image_dim)) / np.sqrt(h)
    pre = np.concatenate([view * np.sqrt(h), 0.5 * nuisance], axis=1) @ mix
    if spec.image_kind == "relu":
        return np.maximum(pre - 0.5, 0.0).astype(np.float32)
    if spec.image_kind == "histogram":  # bag of visual words: multinomial counts, L1-normalised
        logits = 0.35 * pre
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        counts = np.stack([rng.multinomial(300, row) for row in p]).astype(np.float32)
        return counts / counts.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown image_kind {spec.image_kind!r}")


def _text(z: np.ndarray, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    n, h = z.shape
    view = z + spec.text_noise * rng.standard_normal(z.shape) / np.sqrt(h)
    mix = rng.standard_normal((h, spec.text_dim)) * np.sqrt(h) / 2.0
    logits = view @ mix
    if spec.text_kind == "tags":
        # Zipf-like tag popularity; the bias is solved so the expected tag count is mean_tags.
        popularity = np.log(1.0 / np.arange(1, spec.text_dim + 1)) * 0.5
        logits = logits + rng.permutation(popularity)
        lo, hi = -30.0, 30.0
        for _ in range(40):  # bisection on a global offset
            mid = (lo + hi) / 2
            mean = (1 / (1 + np.exp(-(logits[:500] + mid)))).sum(axis=1).mean()
            lo, hi = (mid, hi) if mean < spec.mean_tags else (lo, mid)
        p = 1 / (1 + np.exp(-(logits + lo)))
        tags = rng.random(p.shape) < p
        empty = ~tags.any(axis=1)
        tags[empty, np.argmax(logits[empty], axis=1)] = True  # DCMH kept only items with tags
        return tags.astype(np.float32)
    if spec.text_kind == "topics":  # LDA-like topic proportions on the simplex
        logits = 0.8 * logits
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    raise ValueError(f"unknown text_kind {spec.text_kind!r}")


def generate(spec: SyntheticSpec, seed: int = 0, name: str = "synthetic") -> CrossModalData:
    """Return a CrossModalData drawn from `spec`; identical arrays for identical (spec, seed)."""
    if spec.n_query + spec.n_train > spec.n_items and not spec.query_is_retrieval_test:
        raise DataError(f"{name}: n_query + n_train = {spec.n_query + spec.n_train} exceeds n_items = {spec.n_items}")
    if spec.query_is_retrieval_test and spec.n_query + spec.n_train > spec.n_items:
        raise DataError(f"{name}: n_query + n_train exceeds n_items = {spec.n_items}")
    if spec.n_validation >= spec.n_train:
        raise DataError(f"{name}: n_validation = {spec.n_validation} must be smaller than n_train = {spec.n_train}")
    rng = np.random.default_rng(seed)
    labels = _labels(spec, rng)
    z = _semantic(labels, spec, rng)
    image, text = _image(z, spec, rng), _text(z, spec, rng)
    where = f"synthetic:{name}"
    info = {"generator": {k: v for k, v in asdict(spec).items()}, "pool_order": "generated item order"}
    groups = None
    if spec.query_is_retrieval_test:
        # Official-split style: train and test disjoint; the test set is both query and database.
        order = rng.permutation(spec.n_items)
        groups = {"train": np.sort(order[: spec.n_train]), "test": np.sort(order[spec.n_train: spec.n_train + spec.n_query])}
    pool = build_pool(name, image, text, labels, {"image": where, "text": where, "labels": where}, groups=groups, info=info)
    if spec.query_is_retrieval_test:
        return make_data(pool, "official", seed, n_validation=spec.n_validation, allowed=("official",))
    # DCMH protocol: queries held out, the rest is retrieval, training drawn from retrieval.
    return make_data(pool, "dcmh", seed, n_query=spec.n_query, n_train=spec.n_train, n_validation=spec.n_validation)


def _preset_loader(preset_name: str, spec: SyntheticSpec):
    """Return the loader of one preset: loader options override the preset's fields."""
    def loader(seed: int = 0, **overrides) -> CrossModalData:
        unknown = set(overrides) - set(SyntheticSpec.__dataclass_fields__)
        if unknown:
            raise DataError(
                f"{preset_name}: unknown option(s) {sorted(unknown)}; accepted: seed, "
                + ", ".join(sorted(SyntheticSpec.__dataclass_fields__))
            )
        return generate(replace(spec, **overrides), seed=seed, name=preset_name)

    loader.__doc__ = f"Synthetic preset {preset_name!r}: {spec}"
    return loader


for _name, _spec in PRESETS.items():
    register(_name)(_preset_loader(_name, _spec))
