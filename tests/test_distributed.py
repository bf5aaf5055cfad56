"""Under torch.distributed each process measures its shard and the float64 sums are all-reduced: two gloo
processes on the CPU, started here, each return the one-process measurement of all the data to 1e-12."""
from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.multiprocessing
from torch import nn

from representation_analysis import measure_separation

MODULES = ["1", "3"]
SHARD_STOP = 150   # process 0 measures samples 0..149, process 1 the other 90 (whole batches of 30)


def problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded network and 240 samples of 5 imbalanced classes, far from the origin."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 80), nn.Tanh(), nn.Linear(80, 300), nn.Identity())
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (240,), generator=generator) ** 2 % 5    # classes 0, 1 and 4, imbalanced
    labels[:3] = torch.tensor([2, 3, 3])                                  # classes 2, 3: only in shard 0
    centers = 2 * torch.randn(5, 10, generator=generator)
    return net, centers[labels] + torch.randn(240, 10, generator=generator) + 20.0, labels


def measure_shard(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world_size)
    try:
        net, inputs, labels = problem()
        shard = slice(0, SHARD_STOP) if rank == 0 else slice(SHARD_STOP, None)
        results = {"tensor": measure_separation(net, inputs[shard], labels[shard], MODULES, batch_size=30,
                                                measure="nc1")}
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs[shard], labels[shard]),
                                             batch_size=30)
        results["loader"] = measure_separation(net, loader, modules=MODULES, num_classes=5, measure="cdnv")
        try:
            measure_separation(net, inputs[shard], labels[shard], MODULES, passes=1)
        except ValueError as error:
            results["passes=1"] = str(error)
        with open(f"{out}/rank{rank}.json", "w") as file:
            json.dump(results, file)
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_give_the_one_process_measurement_to_1e_12(tmp_path):
    torch.multiprocessing.spawn(measure_shard, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    net, inputs, labels = problem()
    for key, measure, batches in (("tensor", "nc1", inputs), ("loader", "cdnv", inputs)):
        whole = measure_separation(net, batches, labels, MODULES, batch_size=30, measure=measure, passes=2)
        one_pass = measure_separation(net, batches, labels, MODULES, batch_size=30, measure=measure, passes=1)
        for result in ranks:
            for got, expected, streamed in zip(result[key]["layers"], whole["layers"], one_pass["layers"]):
                assert got["dim"] == expected["dim"]
                for value in ("D", "value", "within_trace", "between_trace"):
                    assert got[value] == pytest.approx(expected[value], rel=1e-12, abs=0)
                    assert got[value] == pytest.approx(streamed[value], rel=1e-10, abs=0)
            assert result[key]["fit"]["slope"] == pytest.approx(whole["fit"]["slope"], rel=1e-10)
        assert ranks[0][key] == ranks[1][key]   # every process returns the same profile
    assert ranks[0]["passes=1"].startswith("passes=1 under torch.distributed: the one-pass sums are not summed")
