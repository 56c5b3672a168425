"""The paper's claims that a study's nets can test, each with its margin, its seed spread and a verdict.

    table = judge(runs, params)     # runs: variant -> [Run per seed], from report.study.collect_runs
    print("\\n".join(sentences(table)))

A claim compares two nets. Its *margin* is measured per seed in the direction the paper states (positive:
the paper's way) and averaged over seeds, in percentage points of error (C5: in units of the responses'
std). Its *spread* is the range (max - min) of the per-seed margins: measured by the study's own seeds
when it has several, else taken from `study.seed_spread` when that was measured at the study's scale,
else (a claim on test error alone, at the length of `study.seed_spread.quoted`) *quoted*: two standard
deviations of the margin, 2 * sqrt(std_a^2 + std_b^2), from the two nets' test-error stds over seeds that
someone else measured. A measured spread always replaces a quoted one. The verdict:

- *shown*: the margin is positive and larger than the spread;
- *not shown*: the margin is not positive, or not larger than the spread;
- *not tested*: the study lacks the nets the claim needs, or has one seed and no spread measured at its
  scale, or (C4) is shorter than the claim needs and the effect is not there yet ("not tested at this
  length": a short run cannot refute a claim about converged nets).
"""

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resnet_repro import models
from resnet_repro.config import Params
from resnet_repro.report.measured import Run, label, sort_key
from resnet_repro.train.recipe import RECIPES

SHOWN, NOT_SHOWN, NOT_TESTED = "shown", "not shown", "not tested"


@dataclass(frozen=True)
class Measure:
    """What a claim reads of one net's run, and how the table names it."""
    name: str
    unit: str
    read: Callable[[Run, str], float]  # (run, evaluation view) -> value


def _test_error(run: Run, view: str) -> float:
    error = run.error(view, 1)
    assert error is not None  # _view picks a view that every run measured
    return error


def _train_error(run: Run, view: str) -> float:
    return 100 * float(run.training["final_train_error"])


def _mean_response_std(run: Run, view: str) -> float:
    return statistics.fmean(float(row["std"]) for row in run.responses)


TEST_ERROR = Measure("test error", "%", _test_error)
TRAIN_ERROR = Measure("final training error", "%", _train_error)
RESPONSE_STD = Measure("mean std of layer responses", "", _mean_response_std)


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    where: str  # where the paper shows it (CIFAR-10; image folders cite Table 2 and Figure 4 instead)
    where_imagenet: str
    measures: tuple[Measure, ...]  # each must go the paper's way; the margin is the smallest of them
    # the two nets it compares, (expected worse, expected better), chosen from nets of one design
    nets: Callable[[list[str]], tuple[str, str] | None]
    needs: str  # which nets it needs, for "not tested"
    needs_iterations: int | None = None  # below this length a missing effect is "not tested", not "not shown"


def _of_family(variants: list[str], family: str) -> list[str]:
    return sorted((v for v in variants if models.spec(v).family == family), key=sort_key)


def _deeper_and_shallower(family: str) -> Callable[[list[str]], tuple[str, str] | None]:
    """(worse, better) as the paper expects: the deeper plain net is worse, the shallower ResNet is."""
    def pick(variants: list[str]) -> tuple[str, str] | None:
        nets = _of_family(variants, family)
        depths = sorted({models.spec(v).depth for v in nets})
        if len(depths) < 2:
            return None
        shallow = next(v for v in nets if models.spec(v).depth == depths[0])
        deep = next(v for v in nets if models.spec(v).depth == depths[-1])
        return (deep, shallow) if family == "plain" else (shallow, deep)
    return pick


def _plain_and_residual_at_deepest(variants: list[str]) -> tuple[str, str] | None:
    plain, residual = _of_family(variants, "plain"), _of_family(variants, "residual")
    common = {models.spec(v).depth for v in plain} & {models.spec(v).depth for v in residual}
    if not common:
        return None
    depth = max(common)
    return (next(v for v in plain if models.spec(v).depth == depth),
            next(v for v in residual if models.spec(v).depth == depth))


CLAIMS = (
    Claim("C1", "the deeper plain net has higher training error than the shallower one (degradation)",
          "Section 4.2, Figure 6 (left)", "Section 4.1, Figure 4 (left)", (TRAIN_ERROR,),
          _deeper_and_shallower("plain"), "two plain nets of different depths"),
    Claim("C2", "the deeper plain net has higher test error than the shallower one",
          "Section 4.2, Figure 6 (left)", "Section 4.1, Table 2", (TEST_ERROR,),
          _deeper_and_shallower("plain"), "two plain nets of different depths"),
    Claim("C3", "at the deeper depth, the residual net has lower training and test error than the plain net",
          "Section 4.2, Figure 6 (left, middle)", "Section 4.1, Table 2, Figure 4", (TRAIN_ERROR, TEST_ERROR),
          _plain_and_residual_at_deepest, "a plain and a residual net of the same depth"),
    Claim("C4", "the deeper ResNet has lower test error than the shallower one",
          "Section 4.2, Table 6, Figure 6 (middle)", "Section 4.1, Table 2", (TEST_ERROR,),
          _deeper_and_shallower("residual"), "two residual nets of different depths",
          needs_iterations=RECIPES["cifar"]["iterations"]),
    Claim("C5", "residual layers respond with a smaller std than the plain net's layers",
          "Section 4.3, Figure 7", "Section 4.3, Figure 7", (RESPONSE_STD,),
          _plain_and_residual_at_deepest, "a plain and a residual net of the same depth"),
)
CLAIM_IDS = tuple(claim.id for claim in CLAIMS)


def _view(runs: list[Run], dataset: str) -> str:
    """The evaluation view both nets have: 10-crop on image folders where measured, else the single view."""
    if dataset != "cifar10" and all(run.error("10-crop", 1) is not None for run in runs):
        return "10-crop"
    return "1-crop"


def _spread(claim: Claim, nets: tuple[str, str], margins: list[float],
            params: Params) -> tuple[float | None, str, str | None]:
    """The seed spread the claim's margin is judged against, where it comes from, and whether it was
    "measured" or "quoted" (None: no spread)."""
    if len(margins) > 1:
        return max(margins) - min(margins), f"{len(margins)} seeds of this study", "measured"
    measured = params.study.seed_spread
    at_this_scale = (measured.iterations == params.train.iterations and measured.subset == params.data.subset)
    if at_this_scale and claim.id in measured.margins:
        return (measured.margins[claim.id],
                f"study.seed_spread ({measured.seeds} seeds at {measured.iterations:,} iterations)", "measured")
    quoted, why_not_quoted = _quoted_spread(claim, nets, params)
    if quoted is not None:
        return quoted, why_not_quoted, "quoted"
    if measured.iterations is not None and not at_this_scale:
        return None, (f"one seed; study.seed_spread was measured at {measured.iterations:,} iterations and subset "
                      f"{measured.subset}, not this study's {params.train.iterations:,} and {params.data.subset}"
                      f"{why_not_quoted}"), None
    return None, f"one seed, and no seed spread measured at this scale (study.seed_spread){why_not_quoted}", None


def _quoted_spread(claim: Claim, nets: tuple[str, str], params: Params) -> tuple[float | None, str]:
    """Two standard deviations of the margin between two nets trained independently, from their quoted
    test-error stds: (spread, where from); or (None, why none applies, as a clause for the reason)."""
    quoted = params.study.seed_spread.quoted
    if not quoted.test_error_std:
        return None, ""
    if quoted.iterations != params.train.iterations or params.data.subset is not None:
        return None, (f"; the quoted spreads are of {quoted.iterations:,} iterations on the whole training set, "
                      f"not this study's {params.train.iterations:,} on {params.data.subset or 'all'} images")
    if any(measure is not TEST_ERROR for measure in claim.measures):
        return None, "; the quoted spreads are of test error only"
    missing = [label(net) for net in nets if net not in quoted.test_error_std]
    if missing:
        return None, f"; no spread is quoted for {', '.join(missing)}"
    worse, better = (quoted.test_error_std[net] for net in nets)
    spread = 2 * math.hypot(worse, better)
    return spread, (f"quoted, not measured: 2 × √({worse:.2f}² + {better:.2f}²), the test-error stds over seeds "
                    f"of {label(nets[0])} and {label(nets[1])} in {quoted.source}")


def _design(variant: str) -> tuple:
    """What nets of one design share whatever their depth: input size (stem), stage widths and block. The
    claims compare depths and families within one design (the paper's CIFAR nets, say), never across."""
    s = models.spec(variant)
    return s.dataset, s.widths, s.block


def _main_design(variants: list[str]) -> list[str]:
    """The nets of the design most of the study's nets have (the first in the paper's order on a tie)."""
    designs: dict[tuple, list[str]] = {}
    for variant in sorted(variants, key=sort_key):
        designs.setdefault(_design(variant), []).append(variant)
    return max(designs.values(), key=len)


def _judge_one(claim: Claim, runs: dict[str, list[Run]], params: Params) -> dict:
    entry: dict[str, Any] = {"id": claim.id, "claim": claim.statement,
                             "where": claim.where if params.data.dataset == "cifar10" else claim.where_imagenet,
                             "nets": [], "numbers": {}, "margin": None, "unit": claim.measures[0].unit,
                             "seed_margins": {}, "spread": None, "spread_from": None,
                             "spread_kind": None}
    pair = claim.nets(_main_design(list(runs)))
    if pair is None:
        return {**entry, "verdict": NOT_TESTED,
                "reason": f"the study lacks {claim.needs} ({', '.join(map(label, sorted(runs, key=sort_key)))})"}
    worse, better = pair
    by_seed = {run.seed: run for run in runs[better]}
    seeds = sorted(seed for seed in (run.seed for run in runs[worse]) if seed in by_seed)
    view = _view(runs[worse] + runs[better], params.data.dataset)
    seed_margins = {}
    for seed in seeds:
        worse_run = next(run for run in runs[worse] if run.seed == seed)
        seed_margins[seed] = min(m.read(worse_run, view) - m.read(by_seed[seed], view) for m in claim.measures)
    numbers = {f"{label(variant)} {m.name}": statistics.fmean(m.read(run, view) for run in runs[variant]
                                                              if run.seed in seed_margins)
               for m in claim.measures for variant in (worse, better)}
    margin = statistics.fmean(seed_margins.values())
    spread, spread_from, spread_kind = _spread(claim, pair, list(seed_margins.values()), params)
    quoted = spread_kind == "quoted"
    entry.update(nets=[worse, better], numbers=numbers, margin=margin, seed_margins=seed_margins,
                 spread=spread, spread_from=spread_from,
                 spread_kind=spread_kind)
    spread_name = "quoted spread (not measured here)" if quoted else "spread"
    iterations = params.train.iterations
    too_short = claim.needs_iterations is not None and iterations < claim.needs_iterations
    if margin > 0 and spread is not None and margin > spread:
        return {**entry, "verdict": SHOWN, "reason": f"margin {margin:.2f} > {spread_name} {spread:.2f}"}
    if too_short:
        return {**entry, "verdict": NOT_TESTED,
                "reason": f"not tested at this length: the paper's nets train {claim.needs_iterations:,} iterations, "
                          f"this study {iterations:,} (margin so far {margin:+.2f})"}
    if margin <= 0:
        return {**entry, "verdict": NOT_SHOWN, "reason": f"the margin is {margin:+.2f}: the other way round"}
    if spread is None:
        return {**entry, "verdict": NOT_TESTED, "reason": spread_from}
    return {**entry, "verdict": NOT_SHOWN,
            "reason": f"margin {margin:.2f} is within the {'quoted' if quoted else 'seed'} spread {spread:.2f}"}


def judge(runs: dict[str, list[Run]], params: Params) -> list[dict]:
    """One entry per claim of CLAIMS, in order: nets, numbers, margin, spread, verdict and its reason."""
    return [_judge_one(claim, runs, params) for claim in CLAIMS]


def _amount(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}{' points' if unit == '%' else ''}"


def markdown(table: list[dict]) -> list[str]:
    """The claims table that opens the report."""
    lines = ["## The paper's claims, judged", "",
             ("Each claim compares two nets of the study; its margin is in the paper's direction (positive: "
              "as the paper says), in percentage points of error (C5: in the responses' std), the mean over "
              "seeds. A claim is *shown* only if its margin is larger than the seed spread (max − min of the "
              "per-seed margins) measured at this scale, or, where none was measured, for a claim on test error "
              "alone, the spread *quoted* from someone else's runs of the same length: 2 × √(σ_a² + σ_b²) of "
              "the two nets' test-error stds over seeds, two standard deviations of the margin between two "
              "nets trained independently. The seed spread column says which it is."), "",
             "| claim | the paper | nets and numbers | margin | seed spread | verdict |",
             "|---|---|---|---:|---:|---|"]
    for entry in table:
        numbers = "; ".join(f"{name} {value:.2f}{entry['unit']}" for name, value in entry["numbers"].items()) or "-"
        spread = "-" if entry["spread"] is None else f"{entry['spread']:.2f} ({entry['spread_from']})"
        lines.append(f"| **{entry['id']}** {entry['claim']} | {entry['where']} | {numbers} "
                     f"| {_amount(entry['margin'], entry['unit'])} | {spread} "
                     f"| **{entry['verdict']}**: {entry['reason']} |")
    return lines


def sentences(table: list[dict]) -> list[str]:
    """The claims in words, one line each: what was shown, what was not, and why."""
    lines = []
    for entry in table:
        nets = " against ".join(map(label, entry["nets"]))
        margin = f" ({nets}: margin {_amount(entry['margin'], entry['unit'])})" if entry["nets"] else ""
        lines.append(f"{entry['id']} {entry['verdict'].upper()}: {entry['claim']}{margin}; {entry['reason']}.")
    return lines

