"""One run on several processes (torch.distributed): the world a process belongs to, the collective
operations the runner and the methods use, batch norm synchronised across processes, and the local
launcher behind ``harness run --procs N`` (SLURM's tasks go through ``harness.sweep``).

What is split how (README, "Scaling out"; drift measured: results/README.md): every process draws the *same* global batch from the
same generator and keeps its own shard (``World.shard``), so the random stream — and so the run —
is the one-process run's. Self-supervised methods shard the images of a batch, gather embeddings
for their losses (lightly's ``gather_distributed``) and synchronise batch norm (``train.sync_batchnorm``);
meta-learners shard the tasks of a meta-batch (each task is forwarded on its own, so its batch norm
needs no synchronisation). The gradients are averaged by ``Optimization.step`` before clipping and
stepping, so every process keeps identical weights. Process 0 alone writes the checkpoint, the logs
and the record, and scores the test episodes once. The learning rate is never rescaled: the global
batch (``train.batch_size``) and ``train.lr`` mean what they mean on one process.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from harness.errors import ConfigError, HarnessError


@dataclass(frozen=True)
class World:
    """This process's place in its run: ``rank`` of ``size`` processes over ``backend`` ("" alone)."""

    rank: int = 0
    size: int = 1
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This process's equal share of ``items`` (along dim 0), in rank order."""
        if self.size == 1:
            return items
        per = len(items) // self.size
        return items[self.rank * per : (self.rank + 1) * per]

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace every gradient by its mean over the processes (one all-reduce of a flat buffer)."""
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def average_scalars(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over the processes of each logged scalar (every process must call this together)."""
        if self.size == 1 or not values:
            return values
        keys = sorted(values)
        flat = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device_of(self))
        dist.all_reduce(flat)
        return {k: float(v) / self.size for k, v in zip(keys, flat.tolist())}

    def broadcast_float(self, value: float) -> float:
        """Process 0's ``value`` on every process (e.g. training seconds, so that all stop together)."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device_of(self))
        dist.broadcast(tensor, 0)
        return float(tensor.item())


SINGLE = World()


def device_of(world: World) -> torch.device:
    """The device collectives of ``world`` run on (nccl needs this process's GPU)."""
    return torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" else torch.device("cpu")


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each process's share is the sum of all gradients."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class HarnessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics the harness computes: two passes of summation (the mean, then
    the squared deviations from it), over the global batch where ``synchronised`` (the per-channel sums
    and counts all-reduced, with gradients flowing back to every process), on CPU (gloo) and CUDA alike
    (torch's SyncBatchNorm rejects CPU tensors). Torch's own CPU kernel rounds the statistics of
    channels-last activations (a 1-channel input's conv output) by up to ~1e-4, more than the split over
    processes does; computing them here on 1 and N processes alike keeps the two runs equal to rounding."""

    synchronised = False

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"batch norm expects [N, C, ...] inputs, got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        reduce = (
            _AllReduceSum.apply
            if self.synchronised and dist.is_initialized() and dist.get_world_size() > 1
            else lambda t: t
        )
        dims = [0, *range(2, x.dim())]
        shape = [1, -1, *([1] * (x.dim() - 2))]
        xf = x.float().contiguous()
        total = reduce(torch.cat([xf.sum(dims), xf.new_full((1,), x.numel() / x.shape[1])]))
        mean, count = total[:-1] / total[-1], total[-1]
        var = reduce((xf - mean.view(shape)).pow(2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * var * count / (count - 1))
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def replace_batchnorm(module: nn.Module, synchronised: bool) -> nn.Module:
    """``module`` with every batch-norm layer replaced by a ``HarnessBatchNorm`` (``synchronised`` over the
    processes or not) with the same parameters and buffers, so checkpoints stay interchangeable."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, HarnessBatchNorm):
            layer = HarnessBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(next(child.buffers(), torch.zeros(())).device)
            layer.load_state_dict(child.state_dict())
            layer.requires_grad_(any(p.requires_grad for p in child.parameters()))
            layer.synchronised = synchronised
            setattr(module, name, layer)
        else:
            replace_batchnorm(child, synchronised)
    return module


@contextmanager
def meta_batch_statistics(module: nn.Module, world: World):
    """Batch-norm running statistics for a meta-batch whose tasks are forwarded one by one (and split
    over processes): inside, each layer records every task's batch statistics; on leaving, its running
    mean and variance take one momentum step towards their mean over all tasks of all processes — the
    same on 1 or N processes (one process updating once per task could not be matched)."""
    layers = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training
    ]
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    sums = [torch.zeros(2, m.num_features, device=m.running_mean.device, dtype=torch.float64) for m in layers]
    tasks = torch.zeros(1, device=sums[0].device if sums else "cpu", dtype=torch.float64)

    def record(index):
        def hook(layer, inputs, output):
            sums[index][0] += layer.running_mean.double()  # momentum 1: the running values are this task's
            sums[index][1] += layer.running_var.double()
            if index == 0:
                tasks.add_(1)

        return hook

    handles = [m.register_forward_hook(record(i)) for i, m in enumerate(layers)]
    for m in layers:
        m.momentum = 1.0
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        if layers:
            flat = torch.cat([tasks, *(s.flatten() for s in sums)])
            if world.size > 1:
                flat = flat.to(device_of(world))
                dist.all_reduce(flat)
                flat = flat.to(tasks.device)
            count, flat = flat[0], flat[1:]
            for m, (momentum, mean, var, tracked), s in zip(layers, saved, flat.view(len(layers), 2, -1)):
                rate = momentum if momentum is not None else 1 / float(tracked + 1)
                m.momentum = momentum
                # new tensors, not in-place: the tasks' backward passes still hold the old ones
                m.running_mean = (1 - rate) * mean + rate * (s[0] / count).to(mean.dtype)
                m.running_var = (1 - rate) * var + rate * (s[1] / count).to(var.dtype)
                m.num_batches_tracked = tracked + 1


# ---------------------------------------------------------------- starting processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: str) -> str:
    """gloo for CPU processes, nccl for one GPU each."""
    return "nccl" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "gloo"


def join(rank: int, size: int, backend: str, address: str, port: int) -> World:
    """Join the process group of a run (``rank`` of ``size``); on nccl, take GPU ``rank`` of this node."""
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=size)
    return World(rank, size, backend)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_procs(procs: int, device: str) -> None:
    """``--procs`` must be at least 1, and several on CUDA at most the GPUs there are (one process is
    the runner's own device check)."""
    if procs < 1:
        raise ConfigError(f"--procs {procs}: a run needs at least one process; use --procs 1 (the default) or more")
    cores = os.cpu_count() or 1
    if procs > cores and backend_for(device) != "nccl":
        raise ConfigError(
            f"--procs {procs} on the CPU is more processes than this machine's {cores} cores; "
            f"use --procs {cores} or fewer"
        )
    if procs > 1 and backend_for(device) == "nccl" and procs > torch.cuda.device_count():
        raise ConfigError(
            f"--procs {procs} on CUDA takes one GPU per process and {torch.cuda.device_count()} are "
            f"visible; use --procs {torch.cuda.device_count()} or fewer, or --device cpu"
        )


def slurm_world(device: str) -> World:
    """The tasks of this SLURM job as one run's processes (submitit's ``TorchDistributedEnvironment``
    names the first node and a port from the job id, so a requeued job meets again); alone: ``SINGLE``."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return SINGLE
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return join(env.rank, env.world_size, backend_for(device), env.master_addr, env.master_port)


def launch(procs: int, device: str, target, *args) -> None:
    """Run ``target(world, *args)`` in ``procs`` processes on this machine (spawned, process group on
    127.0.0.1); a failure in any of them is a HarnessError naming it."""
    import torch.multiprocessing as mp

    port = free_port()
    try:
        mp.spawn(_worker, args=(procs, backend_for(device), port, target, args), nprocs=procs, join=True)
    except mp.ProcessRaisedException as exc:
        last = str(exc).strip().splitlines()[-1]
        raise HarnessError(f"a process of the {procs}-process run failed: {last}") from None
    except mp.ProcessExitedException as exc:
        raise HarnessError(f"a process of the {procs}-process run died ({exc}); see its output above") from None


def _worker(rank: int, size: int, backend: str, port: int, target, args) -> None:
    world = join(rank, size, backend, "127.0.0.1", port)
    try:
        target(world, *args)
    finally:
        leave()
