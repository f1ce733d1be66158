"""The contrastive loss matches open_clip's ClipLoss, also split across processes."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tokalign.align.fit.loss import clip_loss, normalize


def _features(n=12, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(n, d, generator=g, dtype=torch.float64)), normalize(torch.randn(n, d, generator=g, dtype=torch.float64))


def test_loss_and_gradients_match_open_clip_cliploss():
    from open_clip.loss import ClipLoss

    img, txt = _features(13, 6)
    ours_img, ours_txt, ours_scale = img.clone().requires_grad_(), txt.clone().requires_grad_(), torch.tensor(2.3, dtype=torch.float64, requires_grad=True)
    ref_img, ref_txt, ref_scale = img.clone().requires_grad_(), txt.clone().requires_grad_(), torch.tensor(2.3, dtype=torch.float64, requires_grad=True)

    ours = clip_loss(ours_img, ours_txt, ours_scale)
    ours.backward()
    ref = ClipLoss()(ref_img, ref_txt, ref_scale.exp())
    ref.backward()

    torch.testing.assert_close(ours, ref)
    for a, b in [(ours_img, ref_img), (ours_txt, ref_txt), (ours_scale, ref_scale)]:
        torch.testing.assert_close(a.grad, b.grad)


def test_matched_pairs_give_lower_loss_than_shuffled_pairs():
    img, _ = _features(16, 8)
    scale = torch.tensor(math.log(10.0), dtype=torch.float64)
    assert clip_loss(img, img, scale) < clip_loss(img, img.roll(1, 0), scale)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, img, txt, scale, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        share = img.shape[0] // world
        part = slice(rank * share, (rank + 1) * share)
        # the same parameters on every rank, as after DDP's broadcast
        table_img, table_txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
        s = scale.clone().requires_grad_()
        loss = clip_loss(table_img[part], table_txt[part], s)
        loss.backward()
        for t in (table_img.grad, table_txt.grad, s.grad):  # DDP averages gradients over ranks
            dist.all_reduce(t)
            t /= world
        total = loss.detach().clone()
        dist.all_reduce(total)
        if rank == 0:  # plain arrays: tensors shared across processes must not outlive their owner
            out.update(loss=(total / world).numpy(), g_img=table_img.grad.numpy(), g_txt=table_txt.grad.numpy(),
                       g_scale=s.grad.numpy())
        dist.barrier()  # no rank tears the group down while another still talks to it
    finally:
        dist.destroy_process_group()
    # The results are delivered; skip interpreter shutdown, where a C++ thread still joinable
    # ("terminate called without an active exception") aborts about one child in ten.
    os._exit(0)


@pytest.mark.parametrize("world", [2, 3])
def test_processes_sharing_a_batch_give_the_single_process_loss_and_gradients(world):
    img, txt = _features(12, 5, seed=world)
    scale = torch.tensor(1.7, dtype=torch.float64)

    a, b, s = img.clone().requires_grad_(), txt.clone().requires_grad_(), scale.clone().requires_grad_()
    single = clip_loss(a, b, s)
    single.backward()

    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(world, _free_port(), img, txt, scale, out), nprocs=world, join=True)

    torch.testing.assert_close(torch.from_numpy(out["loss"]), single.detach())
    torch.testing.assert_close(torch.from_numpy(out["g_img"]), a.grad)
    torch.testing.assert_close(torch.from_numpy(out["g_txt"]), b.grad)
    torch.testing.assert_close(torch.from_numpy(out["g_scale"]), s.grad)
