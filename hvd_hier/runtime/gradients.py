"""The gradients before an update: the warmup's reproducible reduction
(``deterministic=True``), the sparse-gradient check, and a ``GradScaler``'s unscale and
overflow check."""

from __future__ import annotations

import torch
from horovod.torch.mpi_ops import Average

from .stalls import deadline, guard

__all__ = ["reduce_warmup_grads", "check_sparse", "unscale_and_check"]


def reduce_warmup_grads(h) -> None:
    """``deterministic=True``: the warmup gradients averaged through hvd_hier's fixed buckets
    (in parameter order, one bucket in flight), after the backward pass. A parameter this
    rank's forward pass did not use contributes zeros."""
    grads = []
    for p in h.trained:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    topo = h.topology
    if len(topo.set_ranks) == 1:
        return
    f = h.config.gradient_predivide_factor
    pre, post = (1.0 / f, f / len(topo.set_ranks)) if h.config.op == Average else (1.0, 1.0)
    with guard(h.config, f"the gradient reduction of step {h.position.t + 1}", topo.set_ranks):
        h.grad_averager.reduce(topo.global_set, "sync", pre, post, deadline(h.config),
                               tensors=grads)


def check_sparse(param_groups, sparse_as_dense: bool, names_by_id) -> None:
    """Densify sparse gradients (``sparse_as_dense``) or refuse them, naming the parameter:
    the averaging phase does not take them."""
    for group in param_groups:
        for p in group["params"]:
            if p.grad is None or not p.grad.is_sparse:
                continue
            if sparse_as_dense:
                p.grad = p.grad.to_dense()
                continue
            name = names_by_id.get(id(p), "a parameter")
            raise ValueError(
                f"hvd_hier.DistributedOptimizer: {name} has a sparse gradient, which "
                "the averaging phase does not take; pass sparse_as_dense=True (or use "
                "a dense embedding)")


def unscale_and_check(param_groups, grad_scale) -> bool:
    """Under a GradScaler: divide the gradients by ``grad_scale`` (None: the user already
    unscaled them) and say whether any is inf or NaN, in which case this rank's update is
    skipped. In a warmup step the gradients are the averaged ones, identical on every rank,
    so every rank decides alike; in a local step the decision is this rank's."""
    by_key = {}
    for group in param_groups:
        for p in group["params"]:
            if p.grad is not None:
                by_key.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    found = False
    for (device, _), same in by_key.items():
        flag = torch.zeros((), dtype=torch.float32, device=device)
        inv = (torch.ones((), dtype=torch.float32, device=device) if grad_scale is None
               else grad_scale.double().reciprocal().float().to(device))
        torch._amp_foreach_non_finite_check_and_unscale_(same, flag, inv)
        found = found or bool(flag.item())
    return found
