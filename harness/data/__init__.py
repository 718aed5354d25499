"""Dataset registry (lazy: a dataset's module is imported when it is first used)."""

from harness.registry import Entry, Registry

DATASETS: Registry[Entry] = Registry("dataset")
for _name, _target, _description in [
    ("synthetic-glyphs", "harness.data.synthetic:SyntheticGlyphs", "embedded procedural glyphs, no download"),
    ("omniglot", "harness.data.omniglot:Omniglot", "Omniglot background/evaluation (Lake et al. 2015)"),
    ("omniglot-vinyals", "harness.data.omniglot:OmniglotVinyals", "Omniglot, Vinyals et al.'s character split"),
    ("omniglot-small1", "harness.data.omniglot:OmniglotSmall1", "Lake's minimal background set 1 + 20 official runs"),
    ("omniglot-small2", "harness.data.omniglot:OmniglotSmall2", "Lake's minimal background set 2 + 20 official runs"),
    ("miniimagenet", "harness.data.miniimagenet:MiniImageNet", "miniImageNet, Ravi-Larochelle split"),
    ("tieredimagenet", "harness.data.tieredimagenet:TieredImageNet", "tieredImageNet (Ren et al. 2018)"),
    ("cifarfs", "harness.data.cifar:CIFARFS", "CIFAR-FS (Bertinetto et al. 2019)"),
    ("fc100", "harness.data.cifar:FC100", "FC100 (Oreshkin et al. 2018)"),
]:
    DATASETS.add(_name, Entry(_name, _target, _description))


def get_dataset(name: str):
    """An instance of the registered dataset ``name``."""
    return DATASETS.get(name).load()()
