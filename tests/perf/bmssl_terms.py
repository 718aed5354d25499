"""How much BMSSL's two outer terms teach along a run: at every logged step, the gradient
norm of the weighted query term (1 − λ)·query_loss and of the weighted bootstrap term λ·match_loss with
respect to the meta-parameters, beside the pseudo-tasks' query accuracy (how hard the tasks still are).

Trains one run with the harness's own runner (the run is the same as `harness run` makes: the extra gradients
are taken with ``torch.autograd.grad`` and never reach the optimiser) and writes its train_log.csv, then prints
one JSON line per logged step and a summary:

    python tests/perf/bmssl_terms.py --bench omniglot-small1-20w1s-lake --set train.steps=600 --out /tmp/terms
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch


def term_norms(method, outputs: dict) -> dict:
    """The gradient norms of the two weighted terms of ``outputs`` w.r.t. the method's trained parameters."""
    weight = method.cfg.bootstrap_weight
    params = [p for p in method.parameters() if p.requires_grad]
    norms = {}
    for name, term in (("query", (1 - weight) * outputs["query_loss"]), ("match", weight * outputs["match_loss"])):
        if not term.requires_grad:
            norms[f"{name}_grad_norm"] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        norms[f"{name}_grad_norm"] = float(torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)))
    return norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="bmssl")
    parser.add_argument("--bench", default="omniglot-small1-20w1s-lake")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", required=True, help="the run directory to write (new or empty)")
    args = parser.parse_args()

    from harness import kernels

    kernels.pin(kernels.level_pins("portable"))
    from harness.methods.bmssl import BMSSL
    from harness.resolve import check_data, resolve
    from harness.runner import RunRequest, execute, log_interval

    resolved = resolve(args.method, args.bench, sets=args.set)
    check_data(resolved, download=True)
    train = resolved.config.train
    every = log_interval(train.log_every, train.steps)
    plain_step = BMSSL.training_step

    def measured_step(self, data, step, progress, generator):
        outputs = plain_step(self, data, step, progress, generator)
        if (step + 1) % every == 0 or step + 1 == train.steps:  # the rows the runner logs
            outputs.update({k: torch.tensor(v) for k, v in term_norms(self, outputs).items()})
        return outputs

    BMSSL.training_step = measured_step
    record = execute(RunRequest(resolved, args.seed, Path(args.out), "cpu", progress=False))
    rows = list(csv.DictReader(open(Path(args.out) / "train_log.csv")))
    keys = ["step", "query_loss", "match_loss", "query_accuracy", "query_grad_norm", "match_grad_norm"]
    for row in rows:
        print(json.dumps({k: float(row[k]) for k in keys if row.get(k) not in (None, "")}))
    ratios = [float(r["match_grad_norm"]) / float(r["query_grad_norm"]) for r in rows if float(r["query_grad_norm"])]
    print(
        json.dumps(
            {
                "summary": True,
                "test_error": round(1 - record["accuracy"], 4),
                "steps": record["steps"],
                "match_over_query_grad_first": ratios[0],
                "match_over_query_grad_last": ratios[-1],
                "match_over_query_grad_max": max(ratios),
            }
        )
    )


if __name__ == "__main__":
    main()
