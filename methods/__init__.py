"""Method registry. Each method is one module in this package; entries are lazy, so listing the
methods imports none of them. A method's defaults per benchmark family are in ``presets/<preset>.yaml``
(``a+b``: b's settings over a's), with a ``tiny:`` block of the smallest settings that train every part
of it (tests/test_method_contract.py runs every registered method with them);
``fixed`` settings define an ablation and cannot be overridden."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.registry import Entry, Registry

FAMILIES = ("reference", "meta-learning", "self-supervised", "unsupervised meta-learning", "supervised")


@dataclass(frozen=True)
class MethodEntry(Entry):
    """A registered method: its family, its class, its preset file and the settings it fixes."""

    family: str = ""
    preset: str = ""
    fixed: dict = field(default_factory=dict)

    @property
    def presets(self) -> list[str]:
        """Its preset files, later ones winning."""
        return self.preset.split("+")


METHODS: Registry[MethodEntry] = Registry("method")


def _add(name: str, family: str, target: str, description: str, preset: str = "", fixed: dict | None = None) -> None:
    assert family in FAMILIES, family
    METHODS.add(
        name,
        MethodEntry(
            name, f"harness.methods.{target}", description, family=family, preset=preset or name, fixed=fixed or {}
        ),
    )


_add("pixels", "reference", "pixels:Pixels", "raw pixels + a head, no training")
_add(
    "mhd", "reference", "mhd:ModifiedHausdorff", "Lake et al.'s Modified Hausdorff Distance on ink points, no training"
)
_add(
    "protonet",
    "meta-learning",
    "protonet:ProtoNet",
    "Prototypical Networks (Snell et al. 2017) on learn2learn, episodic training",
)
_add("maml", "meta-learning", "maml:MAML", "MAML (Finn et al. 2017), second order, on learn2learn")
_add(
    "maml-fo",
    "meta-learning",
    "maml:MAML",
    "first-order MAML (Finn et al. 2017)",
    preset="maml",
    fixed={"method": {"first_order": True}},
)
_add(
    "anil",
    "meta-learning",
    "maml:MAML",
    "ANIL (Raghu et al. 2020): MAML adapting only the head",
    preset="maml",
    fixed={"method": {"adapt": "head"}},
)
_add(
    "simclr",
    "self-supervised",
    "simclr:SimCLR",
    "SimCLR (Chen et al. 2020) on lightly, label-free; NT-Xent over two views",
)
_add(
    "byol",
    "self-supervised",
    "byol:BYOL",
    "BYOL (Grill et al. 2020) on lightly, label-free; momentum target, symmetric loss",
)
_add(
    "bmssl",
    "unsupervised meta-learning",
    "bmssl:BMSSL",
    "BMSSL (Wang et al. 2023): bootstrapped meta self-supervised learning on pseudo-class tasks",
)
_add(
    "bmssl-noboot",
    "unsupervised meta-learning",
    "bmssl:BMSSL",
    "BMSSL ablation: no bootstrapped target (λ = 0)",
    preset="bmssl",
    fixed={"method": {"bootstrap_weight": 0.0}},
)
_add(
    "bmssl-noinner",
    "unsupervised meta-learning",
    "bmssl:BMSSL",
    "BMSSL ablation: no first level (K = 0: the queries scored by the support prototypes), a contrastive "
    "pseudo-task learner",
    preset="bmssl",
    fixed={"method": {"inner_steps": 0, "head_init": "proto"}},
)
_add(
    "bmssl-fo",
    "unsupervised meta-learning",
    "bmssl:BMSSL",
    "BMSSL ablation: first-order meta-gradient",
    preset="bmssl",
    fixed={"method": {"first_order": True}},
)
_add(
    "umtra",
    "unsupervised meta-learning",
    "umtra:UMTRA",
    "UMTRA (Khodadadeh et al. 2019): MAML on tasks of N random unlabeled images, augmentations as queries",
)
_add(
    "cactus-protonet",
    "unsupervised meta-learning",
    "cactus:CactusProtoNet",
    "CACTUs-ProtoNets (Hsu et al. 2019): ProtoNet on k-means pseudo-labels of a SimCLR/BYOL embedding",
    preset="protonet+cactus",
)
_add(
    "cactus-maml",
    "unsupervised meta-learning",
    "cactus:CactusMAML",
    "CACTUs-MAML (Hsu et al. 2019): MAML on k-means pseudo-labels of a SimCLR/BYOL embedding",
    preset="maml+cactus",
)
_add(
    "psco",
    "unsupervised meta-learning",
    "psco:PsCo",
    "PsCo (Jang et al. 2023): pseudo-supervised contrast; momentum queue, Sinkhorn pseudo-labels, few-shot tasks",
)
_add(
    "moco",
    "self-supervised",
    "moco:MoCo",
    "MoCo v2 (Chen et al. 2020) on lightly, label-free; momentum encoder + queue, InfoNCE",
)
_add(
    "simsiam",
    "self-supervised",
    "simsiam:SimSiam",
    "SimSiam (Chen & He 2021) on lightly, label-free; predictor + stop-gradient, symmetric negative cosine",
)
_add(
    "barlowtwins",
    "self-supervised",
    "barlowtwins:BarlowTwins",
    "Barlow Twins (Zbontar et al. 2021) on lightly, label-free; cross-correlation to the identity",
)
_add(
    "vicreg",
    "self-supervised",
    "vicreg:VICReg",
    "VICReg (Bardes et al. 2022) on lightly, label-free; variance, invariance, covariance terms",
)
_add("swav", "self-supervised", "swav:SwAV", "SwAV (Caron et al. 2020) on lightly, label-free; prototypes + Sinkhorn")
_add(
    "dino",
    "self-supervised",
    "dino:DINO",
    "DINO (Caron et al. 2021) on lightly, label-free; momentum teacher, centring and sharpening",
)
_add(
    "supervised",
    "supervised",
    "supervised:Supervised",
    "supervised pre-training on all training classes, frozen features (Tian et al. 2020)",
)
