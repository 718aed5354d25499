"""Training-batch samplers on tensors: whole batches of episodes per call, no per-item Python loops.

All randomness comes from the ``torch.Generator`` the runner passes in (on the CPU, so a seed
gives the same batches on every device); its state is checkpointed with the run.
"""

from __future__ import annotations

import torch

from harness.episodes import eligible_classes


class EpisodeSampler:
    """N-way K-shot Q-query episodes from labelled images, as index tensors."""

    def __init__(
        self,
        labels: torch.Tensor,
        ways: int,
        shots: int,
        queries: int,
        keys: tuple[str, str, str] = ("method.train_ways", "method.train_shots", "method.train_queries"),
    ):
        """``keys``: the settings that give ``ways``, ``shots`` and ``queries``, named in the error when the
        labels have too few classes with enough images."""
        members, eligible = eligible_classes(
            labels.cpu().numpy(),
            int(labels.max()) + 1,
            ways,
            shots + queries,
            f"{ways}-way training episodes with {shots}+{queries} images per class "
            f"({keys[0]}={ways}, {keys[1]}={shots}, {keys[2]}={queries})",
            f"Lower {keys[0]}, {keys[1]} or {keys[2]}.",
        )
        self.members = torch.as_tensor(members)[torch.as_tensor(eligible)]
        self.ways, self.shots, self.queries = ways, shots, queries
        self._padding = self.members < 0

    def sample(self, generator: torch.Generator, batch: int = 1):
        """(support [B, N·K], support labels, query [B, N·Q], query labels): image indices, class-major."""
        classes = torch.rand(batch, len(self.members), generator=generator).argsort(dim=1)[:, : self.ways]
        keys = torch.rand(batch, self.ways, self.members.shape[1], generator=generator)
        keys = keys.masked_fill(self._padding[classes], 2.0)
        picks = keys.argsort(dim=2)[:, :, : self.shots + self.queries]
        items = torch.gather(self.members[classes], 2, picks)
        support = items[:, :, : self.shots].reshape(batch, -1)
        query = items[:, :, self.shots :].reshape(batch, -1)
        labels = torch.arange(self.ways)
        return (
            support,
            labels.repeat_interleave(self.shots).expand(batch, -1),
            query,
            labels.repeat_interleave(self.queries).expand(batch, -1),
        )


def sample_images(count: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` distinct image indices out of ``count`` (all of them, shuffled, if batch ≥ count)."""
    return torch.randperm(count, generator=generator)[:batch]
