"""BMSSL: which bi-level implementation is faster on identical work, and the step vs compute only.

Run by hand (not collected by pytest):  python tests/perf/bench_bmssl.py [--bench omniglot-small1-20w1s-lake]

1. The first level with ``adapt=head`` (prototype-initialised heads, K inner steps, second-order
   meta-gradient back to the embeddings) on the same embeddings of a meta-batch, three ways:
   the harness (``torch.func.grad`` of the summed task losses w.r.t. the stacked heads),
   ``torch.func.vmap`` over per-task ``grad``, and learn2learn's ``MAML(head).clone()/adapt()``
   task by task. All three give the same gradients. One JSON line: steps/s and ratios.
2. The whole BMSSL step (views + encoder + bi-level + bootstrapped target) versus the same step on
   views already in memory: ``of_limit``.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from harness.libs import learn2learn
from harness.method import TrainData
from harness.optim import Optimization
from harness.resolve import resolve
from harness.runner import build_method

from common import report, timed


def learn2learn_heads(method, support, query, ys, yq):
    """The first level task by task with learn2learn: a Linear head holding the prototype initialisation."""
    l2l = learn2learn()
    weight, bias = method.init_head(support, ys)
    losses = []
    for t in range(len(support)):
        head = torch.nn.Linear(weight.shape[-1], weight.shape[-2])
        # the initialisation stays a function of θ (learn2learn clones it with its graph)
        head._parameters["weight"], head._parameters["bias"] = weight[t], bias[t]
        learner = l2l.algorithms.MAML(head, lr=method.cfg.inner_lr, first_order=method.cfg.first_order).clone()
        for _ in range(method.cfg.inner_steps):
            learner.adapt(F.cross_entropy(learner(support[t]), ys))
        losses.append(F.cross_entropy(learner(query[t]), yq))
    return torch.stack(losses).mean()


def vmap_heads(method, support, query, ys, yq):
    """The first level with vmap over each task's own ``grad``."""
    head = method.init_head(support, ys)
    head_grad = vmap(grad(method.head_loss), in_dims=(0, 0, None))
    for _ in range(method.cfg.inner_steps):
        head = tuple(h - method.cfg.inner_lr * g for h, g in zip(head, head_grad(head, support, ys)))
    return F.cross_entropy(method.head_logits(head, query).flatten(0, 1), yq.repeat(len(support)))


def harness_heads(method, support, query, ys, yq):
    head = method.adapt_heads(
        method.init_head(support, ys), support, ys, method.cfg.inner_steps, method.cfg.first_order
    )
    return F.cross_entropy(method.head_logits(head, query).flatten(0, 1), yq.repeat(len(support)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="omniglot-small1-20w1s-lake")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    resolved = resolve("bmssl", args.bench)
    method = build_method(resolved, 0, torch.device("cpu"))
    data = resolved.benchmark.load(resolved.config)
    train = TrainData(data.train.images, None, None)
    method.setup(train)
    generator = torch.Generator().manual_seed(0)
    cfg = method.cfg
    views = method.make_tasks(train, generator)
    ys = method.pseudo_labels(cfg.support_views, "cpu")
    yq = method.pseudo_labels(cfg.views_per_image - cfg.support_views, "cpu")
    with torch.no_grad():
        embeddings = method.embed_views(views.flatten(0, 2)).unflatten(0, views.shape[:3])

    def first_level(loss_fn):
        def step(i):
            z = embeddings.clone().requires_grad_()
            loss_fn(method, *method.split(z), ys, yq).backward()
            return z.grad

        return step

    rates = {
        name: timed(first_level(fn), 10 * args.steps)
        for name, fn in (("harness", harness_heads), ("vmap", vmap_heads), ("learn2learn", learn2learn_heads))
    }
    same = all(
        torch.allclose(first_level(fn)(0), first_level(harness_heads)(0), atol=1e-6)
        for fn in (vmap_heads, learn2learn_heads)
    )
    print(
        json.dumps(
            {
                "part": "bmssl first level (adapt=head)",
                "steps_per_s": round(rates["harness"], 1),
                "vmap_steps_per_s": round(rates["vmap"], 1),
                "learn2learn_steps_per_s": round(rates["learn2learn"], 1),
                "ratio_vs_learn2learn": round(rates["harness"] / rates["learn2learn"], 3),
                "ratio_vs_vmap": round(rates["harness"] / rates["vmap"], 3),
                "same_gradients": same,
            }
        )
    )

    optimization = Optimization(method.parameter_groups(), resolved.config.train)  # the runner's
    step_rate = timed(lambda i: optimization.step(method.training_step(train, i, 0.0, generator)), args.steps)
    limit_rate = timed(lambda i: optimization.step(method.loss(views)), args.steps)  # the same step, views in memory
    report("bmssl", step_rate, None, limit_rate)


if __name__ == "__main__":
    main()
