"""Speed of the harness's ProtoNet and MAML training against a plain learn2learn loop, on identical work.

Run by hand (not collected by pytest):  python tests/perf/bench_meta.py [--bench synthetic-5w1s] [--steps 30]

For each method, in one process and on the same data in memory, backbone, ways/shots/queries and
number of steps, it times:
- the harness: ``Method.training_step`` as the runner calls it (tensor episode sampler + step);
- ``ref``: a loop written the way learn2learn's examples are (``MetaDataset`` + ``TaskDataset``
  with ``NWays/KShots/LoadData/RemapLabels``; ``MAML.clone()/adapt()``);
- ``limit``: the same training step on an episode already in memory (no sampling at all).
It prints one JSON line per method: steps/s of each, ``ratio`` = harness/ref, ``of_limit`` =
harness/limit. Extra lines: MAML with the tasks of a meta-batch batched by ``torch.func.vmap``
(the lever the issue asks to measure), and ProtoNet test-episode throughput with the embedding cache
versus re-embedding every episode.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from harness.episodes import sample_episodes
from harness.evaluation import evaluate
from harness.libs import learn2learn
from harness.method import TrainData
from harness.optim import Optimization
from harness.resolve import resolve
from harness.runner import build_method

from common import report
from common import timed as rate


def setup(method_name: str, bench: str, sets: list[str]):
    resolved = resolve(method_name, bench, sets=sets)
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config)
    train = TrainData(data.train.images, data.train.labels, data.train.num_classes)
    method.setup(train)
    method.optimization = Optimization(method.parameter_groups(), resolved.config.train)  # the runner's
    method.optimizer = next(iter(method.optimization.optimizers.values()))  # for the reference loops
    return method, train, data


def l2l_taskset(method, train, ways: int, per_class: int):
    """learn2learn's task pipeline over the same (normalised) images."""
    l2l = learn2learn()
    images = method.normalize(train.images).contiguous()
    dataset = l2l.data.MetaDataset(torch.utils.data.TensorDataset(images, train.labels))
    transforms = [
        l2l.data.transforms.NWays(dataset, ways),
        l2l.data.transforms.KShots(dataset, per_class),
        l2l.data.transforms.LoadData(dataset),
        l2l.data.transforms.RemapLabels(dataset),
    ]
    return l2l.data.TaskDataset(dataset, task_transforms=transforms, num_tasks=-1)


def split_task(x, y, shots: int):
    """learn2learn example style: sort by label, first ``shots`` of each class support, rest query."""
    order = torch.sort(y).indices
    x, y = x[order], y[order]
    per_class = len(y) // int(y.max() + 1)
    is_support = (torch.arange(len(y)) % per_class) < shots
    return x[is_support], y[is_support], x[~is_support], y[~is_support]


def bench_protonet(bench: str, steps: int) -> dict:
    from harness.methods.protonet import prototype_logits

    method, train, data = setup("protonet", bench, [])
    ways, shots, queries = method.ways, method.shots, method.cfg.train_queries
    generator = torch.Generator().manual_seed(0)
    harness_rate = rate(lambda i: method.optimization.step(method.training_step(train, i, 0.0, generator)), steps)

    def protonet_step(xs, ys, xq, yq):  # as learn2learn's protonet example
        features = method.encoder(torch.cat([xs, xq])).flatten(1)
        loss = F.cross_entropy(prototype_logits(features[: len(xs)], ys, features[len(xs) :], ways), yq)
        method.optimizer.zero_grad()
        loss.backward()
        method.optimizer.step()

    taskset = l2l_taskset(method, train, ways, shots + queries)
    ref_rate = rate(lambda i: protonet_step(*split_task(*taskset.sample(), shots)), steps)
    episode = [
        t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
        for t in split_task(*taskset.sample(), shots)
    ]
    limit_rate = rate(lambda i: method.optimization.step(method.loss(*episode)), steps)
    line = report("protonet", harness_rate, ref_rate, limit_rate)

    # Test-episode scoring: embedding every test image once vs re-embedding each episode's images.
    episodes = sample_episodes(data.test.labels.numpy(), 5, 1, 15, 300, 0, "bench")
    started = time.perf_counter()
    evaluate(method, data.test.images, episodes, "prototype")
    cached = len(episodes) / (time.perf_counter() - started)
    started = time.perf_counter()
    method.eval()
    with torch.no_grad():
        for s, sl, q in zip(episodes.support, episodes.support_labels, episodes.query):
            feats = method.embed(data.test.images[torch.as_tensor(s).tolist() + torch.as_tensor(q).tolist()])
            prototype_logits(feats[: len(s)], torch.as_tensor(sl), feats[len(s) :], 5)
    method.train()
    per_episode = len(episodes) / (time.perf_counter() - started)
    print(
        json.dumps(
            {
                "method": "protonet-eval",
                "episodes_per_s_cached": round(cached, 1),
                "episodes_per_s_reembed": round(per_episode, 1),
                "speedup": round(cached / per_episode, 2),
            }
        )
    )
    return line


def bench_maml(bench: str, steps: int, name: str = "maml") -> dict:
    method, train, _ = setup(name, bench, [])
    cfg, batch = method.cfg, method.env.batch_size
    shots = cfg.train_shots or method.env.shots
    generator = torch.Generator().manual_seed(0)
    harness_rate = rate(lambda i: method.optimization.step(method.training_step(train, i, 0.0, generator)), steps)
    l2l = learn2learn()
    head_only = cfg.adapt == "head"  # ANIL, as in learn2learn's anil example: features, then a MAML head
    body = method.net[:2] if head_only else torch.nn.Identity()
    maml = l2l.algorithms.MAML(method.net[2] if head_only else method.net, lr=cfg.inner_lr, first_order=cfg.first_order)

    def meta_step(tasks):
        method.optimizer.zero_grad()
        for xs, ys, xq, yq in tasks:
            learner = maml.clone()
            support, query = body(xs), body(xq)
            for _ in range(cfg.inner_steps):
                learner.adapt(F.cross_entropy(learner(support), ys))
            (F.cross_entropy(learner(query), yq) / len(tasks)).backward()
        method.optimizer.step()

    taskset = l2l_taskset(method, train, method.ways, shots + cfg.train_queries)
    ref_rate = rate(lambda i: meta_step([split_task(*taskset.sample(), shots) for _ in range(batch)]), steps)
    tasks = [split_task(*taskset.sample(), shots) for _ in range(batch)]
    stacked = [torch.stack(t) for t in zip(*tasks)]
    limit_rate = rate(lambda i: method.optimization.step(method.loss(*stacked)), steps)
    line = report(name, harness_rate, ref_rate, limit_rate)
    if name == "maml":
        print(json.dumps({"method": "maml-vmap", **vmap_rate(method, tasks, steps)}))
    return line


def vmap_rate(method, tasks, steps: int) -> dict:
    """The meta-batch's tasks adapted together by ``torch.func`` (vmap over grad) on the same tasks."""
    from torch.func import functional_call, grad, vmap

    cfg = method.cfg
    xs, ys, xq, yq = (torch.stack(t) for t in zip(*tasks))
    params = dict(method.net.named_parameters())

    def task_loss(params, xs, ys, xq, yq):
        fast = params
        for _ in range(cfg.inner_steps):
            g = grad(lambda p: F.cross_entropy(functional_call(method.net, p, (xs,)), ys))(fast)
            fast = {k: fast[k] - cfg.inner_lr * g[k] for k in fast}
        return F.cross_entropy(functional_call(method.net, fast, (xq,)), yq)

    def step(i):
        method.optimizer.zero_grad()
        vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq).mean().backward()
        method.optimizer.step()

    return {
        "limit_steps_per_s": round(rate(step, steps), 3),
        "note": "second-order meta-gradient through batch norm differs from autograd's (tests/test_meta.py)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="synthetic-5w1s")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    bench_protonet(args.bench, args.steps)
    bench_maml(args.bench, args.steps)
    bench_maml(args.bench, args.steps, "anil")


if __name__ == "__main__":
    main()
