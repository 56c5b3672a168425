"""What each net's Ray task asks for (`resnet-repro study run`), and the refusal of a net no node can
hold, on node lists as ray.nodes() gives them. (The runs themselves: tests/test_dispatch.py.)"""

import pytest

from projects import params_with
from resnet_repro.config import parse_params
from resnet_repro.dispatch.common import StudyRunError
from resnet_repro.dispatch.preflight import require_a_node_for, task_resources


def node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def params(nproc: int = 1, workers: int = 2):
    return parse_params(params_with({"train": {"nproc": nproc, "batch_size": 128}, "loader": {"num_workers": workers}}))


def test_a_gpu_task_asks_for_a_cpu_per_training_process_and_per_loader_worker():
    assert task_resources(params(), [node(8, gpus=4)], nets=9) == {"num_gpus": 1, "num_cpus": 3}
    assert task_resources(params(nproc=2, workers=3), [node(32, gpus=8)], nets=2) == {"num_gpus": 2, "num_cpus": 8}


def test_a_cpu_task_asks_for_an_even_share_of_the_cpus_that_one_node_can_give():
    two_nodes = [node(4), node(4), node(16, alive=False)]
    assert task_resources(params(), two_nodes, nets=4) == {"num_cpus": 2}
    assert task_resources(params(), two_nodes, nets=1) == {"num_cpus": 4}  # not 8: no node has 8
    assert task_resources(params(), two_nodes, nets=20) == {"num_cpus": 1}


def test_a_net_that_no_node_can_hold_is_refused_saying_what_it_needs():
    request = task_resources(params(), [node(2, gpus=2)], nets=2)
    with pytest.raises(StudyRunError, match=r"needs 1 GPU\(s\) \(train.nproc\) and 3 CPU\(s\) .*\(the largest: "
                                            r"2 GPUs, 2 CPUs\): lower loader.num_workers"):
        require_a_node_for(request, [node(2, gpus=2), node(64, gpus=1, alive=False)])
    require_a_node_for(request, [node(2, gpus=2), node(3, gpus=1)])  # the second one holds it
