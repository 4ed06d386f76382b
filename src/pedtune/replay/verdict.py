"""What the replayed sweeps say: regret per variant with its spread over seeds, plots and the verdict.

A sweep's pick is the trial the tune stage would pick (:func:`pedtune.tune.results.best_trial`:
the best final score among the trials that ran every epoch), judged on the one recorded seed
its trial replayed. Its *regret* is how much worse the picked configuration is than the
table's best, both measured by the mean final score over all recorded seeds: what a user
would get from retraining the pick, not the lucky seed the sweep saw.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from pedtune.config import StudyConfig
from pedtune.io import atomic_path, write_json
from pedtune.replay.family import ALPHA, CONFIDENCE, Comparison, Share, VariantSummary, compare_family, summarise
from pedtune.replay.noise import TableResamples, final_scores, resample_table
from pedtune.replay.outcome import Outcome
from pedtune.replay.real import ALPHA as REAL_ALPHA
from pedtune.replay.real import REAL_FOLDER, RealCheck, RealSweep, check_real, real_json
from pedtune.replay.sweep import ReplayedTrial, Sweep
from pedtune.replay.table import Table
from pedtune.replay.variant import Variant
from pedtune.tune.results import COMPLETED, ERROR, STOPPED_EARLY, TrialRecord, best_trial




def _record(trial: ReplayedTrial, epochs: int, metric: str, reported: int, final: bool) -> TrialRecord:
    scores = trial.scores[:reported]
    if final and trial.errored:
        status = ERROR
    else:
        status = COMPLETED if len(scores) >= epochs else STOPPED_EARLY
    return TrialRecord(trial_id=str(trial.proposal), overrides={"configuration": trial.configuration},
                       status=status, is_initial=trial.proposal == 1, metric=metric,
                       history=tuple({"epoch": e, metric: s} for e, s in enumerate(scores, start=1)), time_s=0.0)


def _pick(records: list[TrialRecord]) -> int:
    return _configuration(best_trial(records))


def _configuration(record: TrialRecord | None) -> int:
    return -1 if record is None else int(record.overrides["configuration"])


def judge(sweep: Sweep, table: Table, metric: str) -> Outcome:
    by_proposal = {t.proposal: t for t in sweep.trials}
    best = table.best_config(metric)
    top = table.true_score(best, metric)

    def worth(config: int) -> float:
        return table.true_score(config, metric) if config >= 0 else 0.0

    reported: dict[int, int] = {}
    curve = []
    for proposal, epoch in sweep.events:
        reported[proposal] = epoch
        records = [_record(by_proposal[p], table.epochs, metric, n, final=False) for p, n in sorted(reported.items())]
        curve.append(worth(_pick(records)))
    final = [_record(t, table.epochs, metric, len(t.scores), final=True) for t in sweep.trials]
    pick = best_trial(final)
    picked = _configuration(pick)
    of_best = [r for r, t in zip(final, sweep.trials) if t.configuration == best]
    return Outcome(
        seed=sweep.seed, picked=picked, picked_score=math.nan if pick is None else pick.final,
        regret=top - worth(picked), trial_epochs=len(sweep.events),
        found_best=picked == best, best_tried=bool(of_best),
        best_stopped_early=any(r.status == STOPPED_EARLY for r in of_best), curve=tuple(curve), wall_s=sweep.wall_s,
    )


def curve_matrix(outcomes: list[Outcome], length: int) -> np.ndarray:
    """Sweeps × reports; a sweep that ended keeps its final value (it spends no more trial-epochs)."""
    rows = []
    for outcome in outcomes:
        curve = list(outcome.curve) or [0.0]
        rows.append(curve + [curve[-1]] * (length - len(curve)))
    return np.asarray(rows, dtype=np.float64)


def _pct(share: Share) -> str:
    low, high = share.interval
    return f"{share.value:.0%} [{low:.0%}, {high:.0%}]"


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 0.001 else "< 0.001"


def _short(variant: Variant) -> str:
    return f"{variant.searcher}+{variant.scheduler}"


def fixed_params(config: StudyConfig) -> dict[str, Any]:
    """Searched parameters with a single value: fixed for the replay and the real sweeps alike."""
    return {d.param: d.values[0] for d in config.tune.search_space if d.type == "choice" and len(d.values or []) == 1}


def recording_time(table: Table, provenance: dict[str, Any]) -> str:
    """How long the recording took: its runs' measured train and val time, and the logged sittings' wall time."""
    measured = sum(row.get("epoch_time_s", 0.0) + row.get("eval_time_s", 0.0)
                   for run in table.runs.values() for row in run.epochs)
    timed = [s for s in provenance.get("sittings", []) if s.get("wall_s") is not None]
    text = f"{len(table.runs)} runs, {measured / 3600:.1f} h of training and val scoring (the table's per-epoch times)"
    if timed:
        text += (f"; {len(provenance['sittings'])} sittings, of which {len(timed)} timed recorded "
                 f"{sum(s['runs'] for s in timed)} runs in {sum(s['wall_s'] for s in timed) / 3600:.1f} h wall time")
    return text


def scope(config: StudyConfig, table: Table) -> str:
    model = config.model
    return (f"on this recorded problem ({model.arch}, weights {model.weights}, {table.epochs} epochs, "
            f"{model.min_size}-{model.max_size} px images; {table.configs} configurations × {len(table.seeds)} "
            f"training seeds)")


def findings(comparisons: list[Comparison], config: StudyConfig, table: Table, budget: int) -> list[str]:
    """The verdict's sentences for one budget, generated from the comparisons."""
    lines = [f"On {scope(config, table).removeprefix('on ')}, at a budget of {budget} trials per sweep:", ""]
    for c in (c for c in comparisons if c.a.budget == budget):
        test = c.test
        measured = (f"Δ regret {test.mean:+.4f}, {CONFIDENCE:.0%} interval with the table's noise "
                    f"[{c.with_table[0]:+.4f}, {c.with_table[1]:+.4f}], Holm-adjusted p {_p(c.p_holm)}")
        if c.significant and c.beyond_table_noise:
            lines.append(f"- {_short(c.a)} picked configurations with {c.word} than {_short(c.b)} ({measured}).")
        elif c.significant:
            lines.append(f"- {_short(c.a)} picked configurations with {c.direction} regret than {_short(c.b)} "
                         f"over these searcher seeds ({measured}), but not beyond the table's own noise: the sign "
                         f"flips in {c.sign_flips:.0%} of the table's resamples.")
        else:
            needed = "more than a million" if c.seeds_for_observed is None else f"about {c.seeds_for_observed}"
            lines.append(f"- {_short(c.a)} vs {_short(c.b)}: no detectable difference ({measured}); with these "
                         f"{test.n_a} seeds per variant the smallest |Δ| detectable at 80 % power is "
                         f"{c.detectable:.4f}, and the observed Δ would need {needed} seeds per variant.")
    return [*lines, ""]


def verdict_markdown(rows: list[VariantSummary], comparisons: list[Comparison], noise: TableResamples,
                     config: StudyConfig, table: Table, provenance: dict[str, Any], folder: Path,
                     wall_s: float) -> str:
    metric = config.tune.metric
    best = table.best_config(metric)
    ranked = sorted(range(table.configs), key=lambda c: table.true_score(c, metric), reverse=True)
    runner_up = ranked[1] if len(ranked) > 1 else best
    cfg = config.tune
    fixed = fixed_params(config)
    compare = config.compare
    lines = [
        "# Replayed sweeps on one recorded problem: regret per searcher and scheduler",
        "",
        f"Table: `{folder}` ({table.configs} configurations × {len(table.seeds)} training seeds × {table.epochs} "
        f"epochs, model {config.model.arch} at {config.model.min_size}-{config.model.max_size} px, weights "
        f"{config.model.weights}; dataset hash {provenance['dataset_hash'][:12]}). Recording: "
        f"{recording_time(table, provenance)}.",
        f"Best configuration: #{best} ({_overrides(table.overrides(best))}), mean final val {metric} "
        f"{table.true_score(best, metric):.4f} over its seeds; the runner-up #{runner_up} "
        f"{table.true_score(runner_up, metric):.4f}. A single run's seed noise (pooled sd between seeds): "
        f"{table.seed_spread(metric):.4f}. Resampling each configuration's training seeds, the best configuration "
        f"changes in {noise.best_changed:.0%} of {compare.resamples} resamples.",
    ]
    if fixed:
        lines.append("Not searched: " + ", ".join(f"{p.removeprefix('train.')} fixed at {v:g}" if isinstance(v, float)
                                                  else f"{p.removeprefix('train.')} fixed at {v}"
                                                  for p, v in fixed.items())
                     + " (the grid records one level), in the replay and the real sweeps alike; the verdict says "
                       "nothing about tuning it.")
    lines += [
        f"Sweeps: real Ray Tune sweeps with the project's searcher and scheduler builders; ASHA grace "
        f"{cfg.asha.grace_period}, reduction factor {cfg.asha.reduction_factor:g}, max_t {table.epochs}; "
        f"{cfg.max_concurrent} trial(s) at a time; the first trial is the train section's configuration "
        f"({initial_configuration(config, table)}). {rows[0].sweeps} searcher seeds per variant; {len(rows)} variants in "
        f"{wall_s / 60:.1f} min.",
        "",
    ]
    for budget in sorted({r.variant.budget for r in rows}):
        lines += findings(comparisons, config, table, budget)
    lines += [
        "## Regret per variant",
        "",
        f"Regret = the table's best mean final val {metric} − the picked configuration's (lower is better). "
        f"'over searcher seeds': mean [{CONFIDENCE:.0%} t-interval]; 'with the table's noise': {CONFIDENCE:.0%} "
        f"bootstrap interval resampling the table's training seeds per configuration and the searcher seeds "
        f"({compare.resamples} resamples, seed {compare.resample_seed}); the picks are held fixed, not re-replayed. "
        f"Shares with Wilson {CONFIDENCE:.0%} intervals.",
        "",
        "| variant | budget (trials) | regret over searcher seeds | with the table's noise | sd over seeds | "
        "found the best | best config stopped early | trial-epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mean, low, high = row.regret
        lines.append(
            f"| {_short(row.variant)} | {row.variant.budget} | {mean:.4f} [{low:.4f}, {high:.4f}] | "
            f"[{row.regret_with_table[0]:.4f}, {row.regret_with_table[1]:.4f}] | {row.regret_sd:.4f} | "
            f"{_pct(row.found_best)} | {_pct(row.best_stopped_early)} | {row.trial_epochs:.1f} |"
        )
    lines += [
        "",
        "## The comparison family",
        "",
        f"Δ = mean regret of the first variant − the second's. Paired t-test where both share searcher seeds (same "
        f"searcher), Welch's otherwise; Holm's adjustment over all {len(comparisons)} comparisons. A difference is "
        f"called when the adjusted p is below {ALPHA:g} and the interval with the table's noise excludes 0. "
        f"Detectable: the smallest |Δ| this design finds with 80 % power at the strictest Holm level "
        f"({ALPHA:g}/{max(len(comparisons), 1)}), searcher seeds only.",
        "",
        "| comparison | budget | test | Δ regret [95 % CI, searcher seeds] | p | Holm p | with the table's noise | "
        "sign flips | detectable | seeds for the observed Δ | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        t = c.test
        lines.append(
            f"| {_short(c.a)} − {_short(c.b)} | {c.a.budget} | {t.design} | {t.mean:+.4f} [{t.ci_low:+.4f}, "
            f"{t.ci_high:+.4f}] | {_p(t.p)} | {_p(c.p_holm)} | [{c.with_table[0]:+.4f}, {c.with_table[1]:+.4f}] | "
            f"{c.sign_flips:.0%} | {c.detectable:.4f} | {c.seeds_for_observed or '> 10⁶'} | {c.word} |"
        )
    lines += [
        "",
        "'best config stopped early': share of sweeps in which ASHA stopped a trial of the table's best configuration "
        "before its last epoch. Plots: `best_so_far.png` (the picked configuration's mean score against trial-epochs "
        "spent, mean and 95 % band over seeds), `regret.png` (each sweep's final regret). Per-sweep data: `sweeps.csv`.",
        "",
    ]
    return "\n".join(lines)


def initial_configuration(config: StudyConfig, table: Table) -> str:
    """The grid configuration the train section's values are, or 'not recorded'."""
    initial = {p: getattr(config.train, p.removeprefix("train.")) for p in table.params}
    match = [c for c in range(table.configs) if table.overrides(c) == initial]
    return f"#{match[0]}" if match else "not a recorded configuration"


def real_markdown(sweeps: list[RealSweep], check: RealCheck, metric: str) -> list[str]:
    if not sweeps:
        return []
    lines = [
        "## Real sweeps against the table",
        "",
        f"Each real sweep is the tune stage run for real on the recorded problem (`{REAL_FOLDER}/` beside the table), "
        "its search space restricted to the grid's values, so every real trial trains a recorded configuration. "
        f"Each trial's val {metric} at the epoch it reached is set against that configuration's {CONFIDENCE:.0%} "
        "prediction interval from the table (its seeds' mean ± t · pooled seed sd · √(1 + 1/seeds)).",
        "",
        "| real sweep | variant | seed | trials | picked configuration | trial-epochs |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {s.name} | {s.variant.label} | {s.seed} | {len(s.trials)} | #{s.picked} | {s.trial_epochs} |"
              for s in sweeps]
    lines += ["", f"| real sweep | configuration | epoch | real val {metric} | table's prediction | "
                  f"{CONFIDENCE:.0%} prediction interval | inside |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {c.sweep} | #{c.trial.configuration} | {c.trial.epochs} | {c.trial.score:.4f} | {c.predicted:.4f} | "
              f"[{c.low:.4f}, {c.high:.4f}] | {'yes' if c.inside else 'no'} |" for c in check.trials]
    if check.trials:
        rho = "undefined" if math.isnan(check.rank_correlation) else f"{check.rank_correlation:.2f}"
        lines += ["", f"Inside: {check.inside_share:.0%} of {len(check.trials)} trials (binomial p of fewer than "
                      f"{CONFIDENCE:.0%} inside: {_p(check.inside_p)}); Spearman rank correlation of real and "
                      f"recorded scores {rho} (one-sided p {_p(check.rank_p)}). The check "
                      f"{'passes' if check.passed else 'FAILS'}: it fails when either test rejects at "
                      f"{REAL_ALPHA:g}."]
    if check.repeated_trials:
        lines.append(f"{check.repeated_trials} real trial(s) repeated a checked run (the same configuration to the "
                     "same epoch with the train section's seed, the same score) and are counted once.")
    if check.failed_trials:
        lines.append(f"{check.failed_trials} real trial(s) failed without a score and are not checked.")
    return [*lines, ""]


def _overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('train.')} {v:g}" if isinstance(v, float) else f"{k.removeprefix('train.')} {v}"
                     for k, v in overrides.items())


def sweeps_csv(results: dict[Any, list[Outcome]]) -> str:
    out = io.StringIO()
    fields = ["searcher", "scheduler", "budget", "seed", "picked", "picked_score", "regret", "trial_epochs",
              "found_best", "best_tried", "best_stopped_early", "wall_s"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for variant, outcomes in results.items():
        for o in outcomes:
            writer.writerow({"searcher": variant.searcher, "scheduler": variant.scheduler, "budget": variant.budget,
                             "seed": o.seed, "picked": o.picked,
                             "picked_score": "" if math.isnan(o.picked_score) else f"{o.picked_score:.6g}",
                             "regret": f"{o.regret:.6g}",
                             "trial_epochs": o.trial_epochs, "found_best": str(o.found_best).lower(),
                             "best_tried": str(o.best_tried).lower(),
                             "best_stopped_early": str(o.best_stopped_early).lower(), "wall_s": f"{o.wall_s:.2f}"})
    return out.getvalue()


def plot_best_so_far(results: dict[Any, list[Outcome]], table: Table, metric: str) -> Figure:
    budgets = sorted({v.budget for v in results})
    figure = Figure(figsize=(6.5 * len(budgets), 4.5), layout="constrained")
    for ax, budget in zip(figure.subplots(1, len(budgets), squeeze=False)[0], budgets):
        ax.axhline(table.true_score(table.best_config(metric), metric), color="black", linestyle=":",
                   label="table's best")
        for variant, outcomes in results.items():
            if variant.budget != budget:
                continue
            length = max(len(o.curve) for o in outcomes)
            matrix = curve_matrix(outcomes, length)
            x = np.arange(1, length + 1)
            mean = matrix.mean(axis=0)
            half = stats.t.ppf(0.5 + CONFIDENCE / 2, max(len(outcomes) - 1, 1)) * matrix.std(axis=0, ddof=1) / math.sqrt(len(outcomes)) \
                if len(outcomes) > 1 else np.zeros_like(mean)
            style = "-" if variant.scheduler == "asha" else "--"
            line, = ax.plot(x, mean, style, label=f"{variant.searcher}+{variant.scheduler}")
            ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("cumulative trial-epochs")
        ax.set_ylabel(f"picked configuration's mean val {metric}")
        ax.set_title(f"{budget} trials per sweep (band: 95 % CI of the mean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return figure


def plot_regret(results: dict[Any, list[Outcome]]) -> Figure:
    labels = [f"{v.searcher}+{v.scheduler}\n{v.budget} trials" for v in results]
    figure = Figure(figsize=(max(6.0, 1.3 * len(labels)), 4.5), layout="constrained")
    ax = figure.subplots()
    data = [[o.regret for o in outcomes] for outcomes in results.values()]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize="small")
    rng = np.random.default_rng(0)
    for position, values in enumerate(data, start=1):
        ax.scatter(position + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.4, color="tab:blue")
    ax.set_ylabel("final regret (table's best − picked, mean val score)")
    ax.set_title("final regret per sweep (triangle: mean)")
    ax.grid(alpha=0.3, axis="y")
    return figure


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def comparison_json(rows: list[VariantSummary], comparisons: list[Comparison], noise: TableResamples,
                    config: StudyConfig, wall_s: float, real: list[RealSweep], check: RealCheck) -> dict[str, Any]:
    return {
        "wall_time_s": round(wall_s, 1),
        "resamples": config.compare.resamples, "resample_seed": config.compare.resample_seed,
        "table_best_changed": round(noise.best_changed, 4),
        "variants": {
            f"{_short(r.variant)}+{r.variant.budget}": {
                "regret_mean": _round(r.regret[0]), "regret_ci_low": _round(r.regret[1]),
                "regret_ci_high": _round(r.regret[2]), "regret_table_low": _round(r.regret_with_table[0]),
                "regret_table_high": _round(r.regret_with_table[1]),
                **{name: {"share": round(share.value, 4), "ci_low": round(share.interval[0], 4),
                          "ci_high": round(share.interval[1], 4)}
                   for name, share in (("found_best", r.found_best), ("best_stopped_early", r.best_stopped_early))},
                "trial_epochs": round(r.trial_epochs, 2), "sweeps": r.sweeps,
            }
            for r in rows
        },
        "family": [
            {"a": _short(c.a), "b": _short(c.b), "budget": c.a.budget, "test": c.test.design,
             "delta": _round(c.test.mean), "ci_low": _round(c.test.ci_low), "ci_high": _round(c.test.ci_high),
             "p": _round(c.test.p, 8), "p_holm": _round(c.p_holm, 8), "table_ci_low": _round(c.with_table[0]),
             "table_ci_high": _round(c.with_table[1]), "sign_flips": _round(c.sign_flips, 4),
             "detectable": _round(c.detectable), "seeds_for_observed": c.seeds_for_observed, "verdict": c.word}
            for c in comparisons
        ],
        "real_sweeps": real_json(real, check),
    }


def write_comparison(output: Path, config: StudyConfig, table: Table, provenance: dict[str, Any], folder: Path,
                     sweeps: dict[Any, list[Sweep]], wall_s: float, real: list[RealSweep]) -> list[Comparison]:
    """verdict.md, sweeps.csv, compare.json and the two plots, swapped into ``output`` whole."""
    metric = config.tune.metric
    results = {variant: [judge(s, table, metric) for s in runs] for variant, runs in sweeps.items()}
    rng = np.random.default_rng(config.compare.resample_seed)
    noise = resample_table(final_scores(table, metric), config.compare.resamples, rng)
    rows = summarise(results, noise, rng)
    comparisons = compare_family(results, noise, rng)
    check = check_real(real, table, metric)
    with atomic_path(output) as tmp:
        tmp.mkdir()
        verdict = "\n".join([verdict_markdown(rows, comparisons, noise, config, table, provenance, folder, wall_s),
                             *real_markdown(real, check, metric)])
        (tmp / "verdict.md").write_text(verdict, encoding="utf-8")
        (tmp / "sweeps.csv").write_text(sweeps_csv(results), encoding="utf-8")
        write_json(tmp / "compare.json", comparison_json(rows, comparisons, noise, config, wall_s, real, check))
        plot_best_so_far(results, table, metric).savefig(tmp / "best_so_far.png", dpi=110)
        plot_regret(results).savefig(tmp / "regret.png", dpi=110)
    return comparisons
