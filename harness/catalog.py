"""Registries of heads and backbones. Entries are lazy (``module:attr``), so listing them is cheap."""

from harness.registry import Entry, Registry

HEADS: Registry[Entry] = Registry("head")
HEADS.add(
    "prototype",
    Entry(
        "prototype",
        "harness.heads:PrototypeHead",
        "nearest class mean; eval.distance=euclidean (negative squared distance) or cosine",
        {"distance": "euclidean"},
    ),
)
HEADS.add(
    "logreg",
    Entry(
        "logreg",
        "harness.heads:LogRegHead",
        "logistic regression fit on each episode's L2-normalised support embeddings (batched in torch); "
        "eval.logreg_steps, eval.logreg_lr, eval.logreg_l2",
    ),
)
HEADS.add(
    "adapt",
    Entry(
        "adapt",
        "harness.heads:AdaptHead",
        "the method adapts to each episode's support set itself (MAML fine-tuning, MHD matching)",
    ),
)

BACKBONES: Registry[Entry] = Registry("backbone")
BACKBONES.add(
    "conv4",
    Entry(
        "conv4",
        "harness.backbones:conv4",
        "Conv-4, 64 filters (learn2learn CNN4Backbone): 64-d at 28 px, 1600-d at 84 px",
    ),
)
BACKBONES.add(
    "resnet12",
    Entry("resnet12", "harness.backbones:resnet12", "ResNet-12, 64-160-320-640 (learn2learn ResNet12Backbone), 640-d"),
)
BACKBONES.add(
    "resnet18",
    Entry("resnet18", "harness.backbones:resnet18", "torchvision ResNet-18, small-image stem below 64 px, 512-d"),
)
