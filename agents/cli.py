"""The ``debtor-segments`` command line.

Embedded commands (no broker): ``replay``, ``demo``, ``simulate``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
import orjson
from tqdm import tqdm

from debtor_segments.agents.inputs import bounded_lines, load_model_file, open_input
from debtor_segments.agents.replay import ReplayStats, replay_lines
from debtor_segments.agents.service_cli import publish, tail, worker
from debtor_segments.agents.settings import Settings
from debtor_segments.agents.treatment_io import ReactingRunner, experiment_tables, load_policy_for_cli
from debtor_segments.streams.engine import Engine, Output
from debtor_segments.streams.events import DecodeError, parse_time
from debtor_segments.streams.page import render_page
from debtor_segments.streams.personas import UNKNOWN
from debtor_segments.streams.report import (
    ALL_PERSONAS,
    ALL_QUADRANTS,
    distribution,
    format_table,
    row_shares,
    transition_matrix,
)
from debtor_segments.streams.simulation import MIXES, Portfolio, simulate
from debtor_segments.streams.treatment_runner import TreatmentRunner

__all__ = ["main"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _open_output(path: Path) -> IO[bytes]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")
    except OSError as error:
        raise click.ClickException(f"cannot write {path}: {error.strerror}") from None


def _lines_with_progress(stream: IO[bytes], total_bytes: int | None, limit: int) -> Iterator[bytes]:
    """Lines of ``stream`` (at most ``limit + 1`` bytes of each); a progress bar on stderr when it is a terminal."""
    with tqdm(total=total_bytes, unit="B", unit_scale=True, disable=not sys.stderr.isatty(), leave=False) as bar:
        for line in bounded_lines(stream, limit):
            bar.update(len(line))
            yield line


def _run_replay(lines: Iterator[bytes], output: Path, dead_letters: Path, engine: Engine, settings: Settings, **kwargs: Any) -> ReplayStats:
    with _open_output(output) as out, _open_output(dead_letters) as dlq:

        def write_output(item: Output) -> None:
            out.write(orjson.dumps(item.value, option=orjson.OPT_APPEND_NEWLINE))

        def write_dead_letter(record: dict[str, Any]) -> None:
            dlq.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

        return replay_lines(
            lines,
            engine,
            write_output,
            write_dead_letter,
            max_amount_cents=settings.max_amount_cents,
            emitted_at=_now,
            limits=settings.limits,
            **kwargs,
        )


def _summary(stats: ReplayStats, seconds: float) -> str:
    outcomes = ", ".join(f"{count} {name}" for name, count in sorted(stats.outcomes.items()))
    bad = sum(stats.dead_letters.values())
    return (
        f"{stats.lines} lines in {seconds:.1f}s ({stats.lines / max(seconds, 1e-9):,.0f}/s): {outcomes or 'no events'}; "
        f"{stats.changes} change events; "
        + (f"{stats.treatments} treatment events; " if stats.treatments else "")
        + f"{bad} dead letters"
        + (f" ({', '.join(f'{n} {r}' for r, n in sorted(stats.dead_letters.items()))})" if bad else "")
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Streaming segmentation of debtors into personas and willingness x ability quadrants."""


@main.command()
@click.argument("input_path", metavar="INPUT.jsonl")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where change events go (JSON lines, emission order).")
@click.option("--dead-letters", type=click.Path(dir_okay=False, path_type=Path), help="Where bad lines go [default: OUTPUT with .dead-letters.jsonl].")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), help="Model snapshot: restored if it exists, saved after the run.")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Treatment policy (YAML or JSON, schemas/policy.json): treatment_assigned, contact_due and experiment_concluded join the output. None: no treatment events.",
)
@click.option("--experiments-report", type=click.Path(dir_okay=False, path_type=Path), help="With --policy: write the experiments' figures and decisions here (JSON).")
def replay(input_path: str, output: Path, dead_letters: Path | None, model_path: Path | None, policy_path: Path | None, experiments_report: Path | None) -> None:
    """Run INPUT.jsonl (all inbound event types mixed; - for stdin) through the engine, no broker."""
    settings = Settings()
    dead_letters = dead_letters or output.with_suffix(".dead-letters.jsonl")
    if experiments_report is not None and policy_path is None:
        raise click.UsageError("--experiments-report needs --policy")
    policy = load_policy_for_cli(policy_path)
    treatments = TreatmentRunner(policy, default_timezone=settings.default_timezone) if policy is not None else None
    engine = Engine(settings.engine_config(), load_model_file(model_path))
    stream = open_input(input_path)
    size = Path(input_path).stat().st_size if input_path != "-" else None
    started = time.perf_counter()
    try:
        # A file has no wall clock of its own (a backfill, a simulated or next year's portfolio):
        # replay judges event times by the fixed bounds only; the worker also by its clock.
        stats = _run_replay(_lines_with_progress(stream, size, settings.max_record_bytes), output, dead_letters, engine, settings, treatments=treatments)
    except OSError as error:
        raise click.ClickException(f"reading {input_path} failed: {error}") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if model_path is not None:
        model_path.write_bytes(orjson.dumps(engine.model.snapshot()))
    click.echo(_summary(stats, time.perf_counter() - started), err=True)
    click.echo(f"changes: {output}\ndead letters: {dead_letters}", err=True)
    if treatments is not None and experiments_report is not None:
        with _open_output(experiments_report) as out:
            out.write(orjson.dumps(treatments.book.report(), option=orjson.OPT_INDENT_2))
        click.echo(f"experiments report: {experiments_report}", err=True)


@main.command()
@click.argument("history_path", metavar="HISTORY.jsonl")
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the fitted snapshot goes (learning on from it if it exists); replay --model and worker --model start from it.",
)
@click.option("--passes", type=click.IntRange(1, 10), default=1, show_default=True, help="Times over the history (a file, not stdin, for more than one).")
def fit(history_path: str, model_path: Path, passes: int) -> None:
    """Learn the model's centres from a portfolio's history (HISTORY.jsonl, as replay reads), to
    onboard a portfolio: the service then starts from its behaviour instead of the prototypes."""
    if history_path == "-" and passes > 1:
        raise click.UsageError("--passes above 1 needs a file: stdin cannot be read twice")
    settings = Settings()
    model = load_model_file(model_path)
    started, stats = time.perf_counter(), None
    for _ in range(passes):
        # Fresh debtor states every pass, one model learning on: a pass replays the history.
        engine = Engine(settings.engine_config(), model)
        stream = open_input(history_path)
        try:
            stats = replay_lines(
                bounded_lines(stream, settings.max_record_bytes),
                engine,
                lambda _: None,
                lambda _: None,
                max_amount_cents=settings.max_amount_cents,
                emitted_at=_now,
                limits=settings.limits,
            )
        except OSError as error:
            raise click.ClickException(f"reading {history_path} failed: {error}") from None
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    assert stats is not None
    if model.version == 0:
        raise click.ClickException(f"{history_path} taught the model nothing: no debtor had enough history (is it a portfolio's events?)")
    model_path.write_bytes(orjson.dumps(model.snapshot()))
    seconds = time.perf_counter() - started
    click.echo(f"fitted {model.version} updates from {stats.lines} lines x {passes} in {seconds:.1f}s; {sum(stats.dead_letters.values())} bad lines per pass: {model_path}", err=True)


def _portfolio_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a simulated portfolio (``simulate``, ``demo``): its size, span, seed and persona mix."""
    for option in reversed(
        (
            click.option("--debtors", default=3000, show_default=True),
            click.option("--months", default=12, show_default=True),
            click.option("--seed", default=7, show_default=True),
            click.option("--mix", type=click.Choice(sorted(MIXES)), default="retailer", show_default=True, help="Published persona mix to draw from."),
        )
    ):
        command = option(command)
    return command


@main.command(name="simulate")
@_portfolio_options
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path))
def simulate_command(debtors: int, months: int, seed: int, mix: str, output: Path) -> None:
    """Write a simulated portfolio (JSON lines, delivery order) and its truth (OUTPUT.truth.jsonl)."""
    portfolio = simulate(debtors, months, seed, mix=mix)
    _write_portfolio(portfolio, output)
    click.echo(f"{len(portfolio.lines)} events for {debtors} debtors -> {output}", err=True)


def _write_portfolio(portfolio: Portfolio, output: Path) -> Path:
    truth_path = output.with_suffix(".truth.jsonl")
    with _open_output(output) as out:
        out.write(b"\n".join(portfolio.lines) + b"\n")
    with _open_output(truth_path) as out:
        for debtor in portfolio.truth.values():
            row = {
                "debtor_id": debtor.debtor_id,
                "persona": debtor.persona,
                "initial_persona": debtor.initial_persona,
                "quadrant": debtor.quadrant,
                "change": debtor.change,
            }
            out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return truth_path


@main.command()
@_portfolio_options
@click.option("--out-dir", default=Path("out/demo"), show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Treatment policy: assign plans, run its experiments on the simulated reaction, show the persona x plan table.",
)
def demo(debtors: int, months: int, seed: int, mix: str, out_dir: Path, policy_path: Path | None) -> None:
    """Simulate a portfolio, segment it live, and show what came out."""
    started = time.perf_counter()
    policy = load_policy_for_cli(policy_path)
    click.echo(f"Simulating {debtors} debtors over {months} months ({mix} persona mix, seed {seed})...")
    portfolio = simulate(debtors, months, seed, mix=mix)
    input_path = out_dir / "portfolio.jsonl"
    truth_path = _write_portfolio(portfolio, input_path)
    click.echo(f"  {len(portfolio.lines):,} events; injected {portfolio.injected}")
    settings = Settings()
    engine = Engine(settings.engine_config())
    true_personas = {d: t.persona for d, t in portfolio.truth.items()}
    treatments = ReactingRunner(policy, true_personas, seed, default_timezone=settings.default_timezone) if policy is not None else None
    halfway = portfolio.start_ts + (portfolio.end_ts - portfolio.start_ts) / 2
    mid_personas: dict[str, str] = {}
    # Monthly snapshots of the mix for the portfolio page (every 30 days of event time).
    persona_mix: list[tuple[str, dict[str, int]]] = []
    quadrant_mix: list[tuple[str, dict[str, int]]] = []
    next_snapshot = [portfolio.start_ts + 30 * 86_400]

    def snapshot(ts: float) -> None:
        label = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
        persona_mix.append((label, distribution((s.persona for s in engine.states.values()), ALL_PERSONAS)))
        quadrant_mix.append((label, distribution((s.quadrant for s in engine.states.values()), ALL_QUADRANTS)))

    def lines() -> Iterator[bytes]:
        for line in portfolio.lines:
            if b'"occurred_at":"' in line:
                ts = _line_ts(line)
                if not mid_personas and ts >= halfway:
                    mid_personas.update({d: s.persona for d, s in engine.states.items()})
                if ts >= next_snapshot[0]:
                    snapshot(next_snapshot[0])
                    next_snapshot[0] += 30 * 86_400
            yield line

    output, dead_letters = out_dir / "changes.jsonl", out_dir / "dead-letters.jsonl"
    replay_started = time.perf_counter()
    # The simulated portfolio's own clock: it may reach past today's date.
    stats = _run_replay(lines(), output, dead_letters, engine, settings, now=lambda: portfolio.end_ts, treatments=treatments)
    click.echo("Replayed: " + _summary(stats, time.perf_counter() - replay_started))
    states = engine.states
    personas = distribution((s.persona for s in states.values()), ALL_PERSONAS)
    truth = distribution((d.persona for d in portfolio.truth.values()), ALL_PERSONAS)
    quadrants = distribution((s.quadrant for s in states.values()), ALL_QUADRANTS)
    n = max(1, len(states))
    click.echo("\nPersonas at the end (simulated truth alongside):")
    click.echo(format_table(["persona", "debtors", "share", "truth"], [[p, str(personas[p]), f"{personas[p] / n:.1%}", f"{truth[p] / n:.1%}"] for p in ALL_PERSONAS]))
    click.echo("\nQuadrants at the end:")
    click.echo(format_table(["quadrant", "debtors", "share"], [[q, str(quadrants[q]), f"{quadrants[q] / n:.1%}"] for q in ALL_QUADRANTS]))
    after = {d: s.persona for d, s in states.items()}
    shares = row_shares(transition_matrix(mid_personas, after))
    click.echo("\nPersona transitions, halfway -> end (row shares; once a Tamara, always a Tamara?):")
    click.echo(format_table(["from \\ to", *ALL_PERSONAS], [[row, *(f"{shares[row][col]:.1%}" for col in ALL_PERSONAS)] for row in ALL_PERSONAS]))
    known = [d for d, s in states.items() if s.persona != UNKNOWN]
    named = sum(states[d].persona == portfolio.truth[d].persona for d in known)
    click.echo(f"\nNamed persona equals the simulated one for {named / max(1, len(known)):.1%} of {len(known)} known debtors.")
    snapshot(portfolio.end_ts)
    page = out_dir / "portfolio.html"
    page.write_text(
        render_page(f"Portfolio: {debtors} simulated debtors ({mix} mix)", persona_mix, quadrant_mix, shares, treatments.book.report() if treatments is not None else None),
        encoding="utf-8",
    )
    if treatments is not None:
        click.echo("\nCollected share at 60 days by true persona and plan (simulated reaction, calibrated on the published comparison):")
        click.echo(treatments.persona_plan_table(ALL_PERSONAS))
        click.echo("\nContact guard decisions (debtor.contact-decisions; contact rules of policy " + treatments.policy.contact_rules.version + "):")
        click.echo(treatments.decision_summary())
        report = treatments.book.report()
        click.echo("\n" + experiment_tables(report))
        report_path = out_dir / "experiments.json"
        report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        click.echo(f"Experiments report: {report_path}")
    click.echo(f"Portfolio page: {page}")
    click.echo(f"Change events: {output}\nDead letters:  {dead_letters}\nInput:         {input_path} (truth: {truth_path})")
    click.echo(f"Done in {time.perf_counter() - started:.1f}s.")


def _line_ts(line: bytes) -> float:
    start = line.index(b'"occurred_at":"') + 15
    text = line[start : line.index(b'"', start)].decode()
    try:
        return parse_time(text)
    except DecodeError:
        return 0.0


# Commands that need a broker.
main.add_command(worker)
main.add_command(publish)
main.add_command(tail)
