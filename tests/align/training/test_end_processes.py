"""end_processes: a launched run's process group is torn down by the command that owns the process."""

from __future__ import annotations

import socket

import torch.distributed as dist

from tokalign.align.training.accelerator import end_processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_it_destroys_an_initialized_group_and_is_a_no_op_without_one():
    end_processes()  # nothing initialized: nothing happens
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        end_processes()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
