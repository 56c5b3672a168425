"""What must hold before a study run trains anything; each check fails with StudyRunError saying what to do.

Before Ray starts: a clean git tree (the tasks clone a commit), the study's out-of-date nets, and a DVC
remote to bring their results back through. Once the cluster is known: a tracking store every task can
write to, and a node that each net's task fits on.
"""

from pathlib import Path

from resnet_repro.config import Params
from resnet_repro.dispatch.common import Net, StudyRunError
from resnet_repro.gitinfo import changed_files, git_commit


def require_clean_tree(root: Path) -> str:
    """The commit every task trains; a tree with uncommitted changes is refused, naming them."""
    commit, status = git_commit(root), changed_files(root, untracked=False)
    if commit is None or status is None:
        raise StudyRunError(f"{root} is not a git checkout with a commit, which the tasks would clone")
    # What DVC itself writes (its lock file, the .gitignore beside each output) changes nothing a task
    # trains: a task restores the stages before its own from the run-cache whatever its dvc.lock says.
    changed = [path for path in status if Path(path).name not in ("dvc.lock", ".gitignore")]
    if changed:
        raise StudyRunError("the git tree has uncommitted changes, which the tasks (clones of a commit) would not "
                            f"see; commit or stash them first: {', '.join(changed[:10])}")
    return commit


def out_of_date_nets(root: Path, params: Params) -> list[Net]:
    """The study's nets whose `train@` stage has missing or stale outputs, as `dvc status` sees them; if
    there are any, the project must have a default DVC remote, through which the tasks bring them back."""
    from dvc.repo import Repo

    nets = [Net(variant, seed) for variant in params.study.variants for seed in params.study.seeds]
    with Repo(str(root)) as repo:
        stale = [net for net in nets if repo.status(targets=[net.stage], with_deps=False)]
        if stale and not repo.config["core"].get("remote"):
            raise StudyRunError("no default DVC remote: the tasks bring their results back through one. On one "
                                "machine any directory will do (`dvc remote add --local -d scratch "
                                "/var/tmp/resnet-repro-dvc-remote`); on a cluster, a remote every node reaches")
    return stale


def local_dvc_config(root: Path) -> str | None:
    """.dvc/config.local (a remote's credentials, or the remote itself), which a clone does not carry."""
    path = root / ".dvc" / "config.local"
    return path.read_text() if path.exists() else None


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.split(":", 1)[0] in ("http", "https", "databricks")


def require_a_shareable_store(tracking_uri: str, local_cluster: bool) -> None:
    """A tracking store on a file (sqlite) serves the tasks of one machine only, through a local server."""
    if not is_server(tracking_uri) and not local_cluster:
        raise StudyRunError(f"the tracking store {tracking_uri} is a file on this machine, which the nodes of a "
                            "cluster cannot share (and sqlite takes one writer at a time): start an `mlflow server` "
                            "and set MLFLOW_TRACKING_URI=http://HOST:PORT")


def task_resources(params: Params, nodes: list[dict], nets: int) -> dict[str, int]:
    """What each net's task asks Ray for, given the cluster's `nodes` (ray.nodes()). With GPUs:
    train.nproc of them, and a CPU for each training process and each of its loader's workers. Without:
    an even share of the cluster's CPUs (no more than a node has), which the training's compute threads
    and its loader's workers share."""
    resources = [node["Resources"] for node in nodes if node["Alive"]]
    if any(node.get("GPU", 0) > 0 for node in resources):
        return {"num_gpus": params.train.nproc, "num_cpus": params.train.nproc * (1 + params.loader.num_workers)}
    share = int(sum(node.get("CPU", 0) for node in resources)) // nets
    return {"num_cpus": max(1, min(share, int(max((node.get("CPU", 0) for node in resources), default=1))))}


def require_a_node_for(request: dict[str, int], nodes: list[dict]) -> None:
    """Ray waits for ever for a task that no node can hold: refuse it now, saying what it needs."""
    needs = {"CPU": request.get("num_cpus", 0), "GPU": request.get("num_gpus", 0)}
    resources = [node["Resources"] for node in nodes if node["Alive"]]
    if any(all(node.get(kind, 0) >= amount for kind, amount in needs.items()) for node in resources):
        return
    largest: dict[str, float] = max(resources, key=lambda node: (node.get("GPU", 0), node.get("CPU", 0)), default={})
    raise StudyRunError(f"each net's task needs {needs['GPU']} GPU(s) (train.nproc) and {needs['CPU']} CPU(s) (one "
                        f"for each training process and for each of its loader.num_workers workers), but no node "
                        f"of the cluster has as many (the largest: {largest.get('GPU', 0):g} GPUs, "
                        f"{largest.get('CPU', 0):g} CPUs): lower loader.num_workers or train.nproc, or add a node "
                        f"that has them")
