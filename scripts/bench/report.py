"""Turn the raw figures into the markdown table (and update docs/benchmarks.md)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

COLUMNS = [
    ("direct", "direct"),
    ("nginx", "nginx"),
    ("litellm", "LiteLLM"),
    ("relay1", "relay + 1 agent"),
    ("relay1h", "relay + 1 agent, Hypercorn front"),
    ("relay4", "relay + 4 agents"),
]
# Shown only in runs that have them: a --baseline REF.
OPTIONAL_COLUMNS = [("relay1base", "relay + 1 agent, baseline")]
BEGIN = "<!-- bench:results:begin (written by scripts/bench/run.py) -->"
END = "<!-- bench:results:end -->"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "max": max(values) if values else None,
    }


def brief(scenario: str, res: dict[str, Any]) -> str:
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    if "error" in res:
        return f"error: {res['error'][:200]}"
    cpu = res.get("cpu_s", {})
    cpu_text = " cpu " + " ".join(f"{k}={v:.2f}s" for k, v in cpu.items()) if cpu else ""
    if scenario in ("c1", "c64", "bigreq", "bigresp"):
        errors = sum(res["errors"].values())
        return (
            f"{res['requests']} req, {res['rps']:.0f} req/s, p50 {res['p50'] / 1000:.2f} ms, "
            f"p99 {res['p99'] / 1000:.2f} ms, errors {errors}, "
            f"wrk={res['cpu_s_wrk']:.2f}s{cpu_text}"
        )
    if scenario == "ttfb":
        t = res["ttfb"]
        return (
            f"{t['n']} streams, ttfb p50 {t['p50'] * 1000:.2f} ms "
            f"p99 {t['p99'] * 1000:.2f} ms, errors {res['errors']}{cpu_text}"
        )
    if scenario in ("burst", "paced"):
        return (
            f"{res['streams']} streams, {res['events']} events, {res['events_per_s']:.0f} ev/s, "
            f"errors {res['errors']}{cpu_text}"
        )
    if scenario == "cancel":
        lat = res["latency"]
        p50 = f"{lat['p50'] * 1000:.1f}" if lat["p50"] is not None else "-"
        p99 = f"{lat['p99'] * 1000:.1f}" if lat["p99"] is not None else "-"
        return (
            f"{res['backend_saw_close']}/{res['cancelled']} closes seen, p50 {p50} ms p99 {p99} ms"
        )
    if scenario == "hold":
        per = res["rss_per_stream"]
        text = " ".join(f"{k}={v / 1024:.1f}KiB" for k, v in per.items() if v is not None)
        return (
            f"opened {res.get('opened')}, ok {res['ok']}, early {res['early']}, "
            f"non-200 {res['non_200']}, open failed {res['open_failed']}, rss/stream {text}"
        )
    if scenario == "failover":
        return (
            f"{res['on_killed_agent']} on the killed agent, {res['completed_ok']} completed, "
            f"all done {res['time_to_all_s']} s after SIGKILL"
        )
    return ""


# --- the table ------------------------------------------------------------------


def _get(res: dict[str, Any], *path: str) -> Any:  # noqa: ANN401
    cur: Any = res
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _ok(res: dict[str, Any] | None) -> bool:
    return isinstance(res, dict) and "skipped" not in res and "error" not in res


class Row:
    def __init__(
        self,
        label: str,
        value: Callable[[dict[str, Any], dict[str, Any]], float | None],
        fmt: str,
        scenario: str,
        target: str = "",
        check: Callable[[float], bool] | None = None,
    ) -> None:
        self.label, self.value, self.fmt, self.scenario = label, value, fmt, scenario
        self.target, self.check = target, check


def _lat(scenario: str, q: str) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    def value(r: dict[str, Any], _d: dict[str, Any]) -> float | None:
        v = _get(r, scenario, q)
        return v / 1000 if v is not None else None

    return value


def _added(scenario: str, q: str) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    def value(r: dict[str, Any], d: dict[str, Any]) -> float | None:
        v, base = _get(r, scenario, q), _get(d, scenario, q)
        return (v - base) / 1000 if v is not None and base is not None else None

    return value


def _cpu_per_req(role: str) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    def value(r: dict[str, Any], _d: dict[str, Any]) -> float | None:
        c = _get(r, "c64")
        if not _ok(c) or not c["requests"]:
            return None
        cpu = c["cpu_s"].get(role)
        return cpu / c["requests"] * 1000 if cpu else None

    return value


def _cpu_per_event(
    scenario: str, role: str
) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    def value(r: dict[str, Any], _d: dict[str, Any]) -> float | None:
        c = _get(r, scenario)
        if not _ok(c) or not c.get("events"):
            return None
        cpu = c["cpu_s"].get(role)
        return cpu / c["events"] * 1e6 if cpu else None

    return value


def _ttfb(q: str, added: bool = False) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    def value(r: dict[str, Any], d: dict[str, Any]) -> float | None:
        v = _get(r, "ttfb", "ttfb", q)
        if v is None:
            return None
        if added:
            base = _get(d, "ttfb", "ttfb", q)
            return (v - base) * 1000 if base is not None else None
        return v * 1000

    return value


def _field(
    *path: str, scale: float = 1.0
) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    def value(r: dict[str, Any], _d: dict[str, Any]) -> float | None:
        if not _ok(_get(r, path[0])):
            return None
        v = _get(r, *path)
        return v * scale if isinstance(v, (int, float)) else None

    return value


def _hold_rss(role: str) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    return _field("hold", "rss_per_stream", role, scale=1 / 1024)


def _hold_dropped(r: dict[str, Any], _d: dict[str, Any]) -> float | None:
    h = _get(r, "hold")
    if not _ok(h):
        return None
    return h["early"] + h["non_200"] + h["open_failed"] + h.get("not_opened", 0)


def _cancel(q: str) -> Callable[[dict[str, Any], dict[str, Any]], float | None]:
    def value(r: dict[str, Any], _d: dict[str, Any]) -> float | None:
        c = _get(r, "cancel")
        if not _ok(c):
            return None
        if c["not_seen_within_5s"]:
            return float("inf")  # some backend connections were never closed
        v = c["latency"][q]
        return v * 1000 if v is not None else None

    return value


ROWS = [
    Row("latency c=1, small request: p50 (ms)", _lat("c1", "p50"), "{:.2f}", "c1"),
    Row("latency c=1, small request: p99 (ms)", _lat("c1", "p99"), "{:.2f}", "c1"),
    Row(
        "**added** latency c=1: p50 (ms)",
        _added("c1", "p50"),
        "{:.2f}",
        "c1",
        "≤ 2 ms",
        lambda v: v <= 2,
    ),
    Row(
        "**added** latency c=1: p99 (ms)",
        _added("c1", "p99"),
        "{:.2f}",
        "c1",
        "≤ 6 ms",
        lambda v: v <= 6,
    ),
    Row("throughput c=64 (req/s)", _field("c64", "rps"), "{:.0f}", "c64", "≥ 10× LiteLLM"),
    Row(
        "CPU per request, front process (ms)",
        _cpu_per_req("front"),
        "{:.3f}",
        "c64",
        "relay ≤ 0.8 ms",
        lambda v: v <= 0.8,
    ),
    Row(
        "CPU per request, agent process(es) (ms)",
        _cpu_per_req("agents"),
        "{:.3f}",
        "c64",
        "agent ≤ 0.5 ms",
        lambda v: v <= 0.5,
    ),
    Row("CPU per request, backend (ms)", _cpu_per_req("backend"), "{:.3f}", "c64"),
    Row("added latency, 1 MiB request body: p50 (ms)", _added("bigreq", "p50"), "{:.2f}", "bigreq"),
    Row(
        "added latency, 1 MiB response body: p50 (ms)",
        _added("bigresp", "p50"),
        "{:.2f}",
        "bigresp",
    ),
    Row("streaming TTFB: p50 (ms)", _ttfb("p50"), "{:.2f}", "ttfb"),
    Row("**added** streaming TTFB: p50 (ms)", _ttfb("p50", True), "{:.2f}", "ttfb"),
    Row("**added** streaming TTFB: p99 (ms)", _ttfb("p99", True), "{:.2f}", "ttfb"),
    Row(
        "chunk throughput, backend as fast as it can (events/s)",
        _field("burst", "events_per_s"),
        "{:.0f}",
        "burst",
    ),
    Row(
        "CPU per chunk, burst: front (µs)",
        _cpu_per_event("burst", "front"),
        "{:.1f}",
        "burst",
        "relay ≤ 30 µs",
        lambda v: v <= 30,
    ),
    Row(
        "CPU per chunk, burst: agent(s) (µs)", _cpu_per_event("burst", "agents"), "{:.1f}", "burst"
    ),
    Row(
        "CPU per chunk, paced 64 streams × 50/s: front (µs)",
        _cpu_per_event("paced", "front"),
        "{:.1f}",
        "paced",
        "relay ≤ 30 µs",
        lambda v: v <= 30,
    ),
    Row(
        "CPU per chunk, paced 64 streams × 50/s: agent(s) (µs)",
        _cpu_per_event("paced", "agents"),
        "{:.1f}",
        "paced",
    ),
    Row(
        "held streams: RSS per stream, front (KiB)",
        _hold_rss("front"),
        "{:.1f}",
        "hold",
        "≤ 64 KiB",
        lambda v: v <= 64,
    ),
    Row("held streams: RSS per stream, agent (KiB)", _hold_rss("agents"), "{:.1f}", "hold"),
    Row(
        "held streams: ended early or refused",
        _hold_dropped,
        "{:.0f}",
        "hold",
        "0",
        lambda v: v == 0,
    ),
    Row("cancellation → backend sees close: p50 (ms)", _cancel("p50"), "{:.1f}", "cancel"),
    Row(
        "cancellation → backend sees close: p99 (ms)",
        _cancel("p99"),
        "{:.1f}",
        "cancel",
        "≤ 20 ms",
        lambda v: v <= 20,
    ),
    Row(
        "failover: SIGKILL, 16 in flight → all done (s)",
        _field("failover", "time_to_all_s"),
        "{:.3f}",
        "failover",
        "≤ 1 s",
        lambda v: v <= 1,
    ),
]


def _cell(row: Row, res: dict[str, Any], direct: dict[str, Any]) -> tuple[str, float | None]:
    scen = _get(res, row.scenario)
    if scen is None:
        return "—", None
    if "skipped" in scen:
        return "n/a", None
    if "error" in scen:
        return "error", None
    value = row.value(res, direct)
    if value is None:
        return "—", None
    if value == float("inf"):
        return "never", value
    return row.fmt.format(value), value


def _throughput_verdict(results: dict[str, dict[str, Any]], col: str) -> str:
    lite = _get(results.get("litellm", {}), "c64", "rps")
    mine = _get(results.get(col, {}), "c64", "rps")
    if not lite or not mine:
        return "—"
    ratio = mine / lite
    return f"{'PASS' if ratio >= 10 else 'FAIL'} ({ratio:.1f}×)"


def columns(results: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The fixed columns, then each optional one this run measured."""
    return COLUMNS + [(k, label) for k, label in OPTIONAL_COLUMNS if results.get(k)]


def table(results: dict[str, dict[str, Any]]) -> str:
    shown = columns(results)
    direct = results.get("direct", {})
    head = (
        "| figure | "
        + " | ".join(label for _, label in shown)
        + " | target (relay + agent) | relay + 1 | relay + 4 |"
    )
    lines = [head, "|" + "---|" * (len(shown) + 4)]
    for row in ROWS:
        cells = []
        values: dict[str, float | None] = {}
        for key, _ in shown:
            text, value = _cell(row, results.get(key, {}), direct)
            cells.append(text)
            values[key] = value
        verdicts = []
        for key in ("relay1", "relay4"):
            if row.target.startswith("≥ 10×"):
                verdicts.append(_throughput_verdict(results, key))
            elif row.check is None:
                verdicts.append("")
            elif values[key] is None:
                verdicts.append("—")
            else:
                verdicts.append("PASS" if row.check(values[key]) else "FAIL")  # type: ignore[arg-type]
        lines.append(
            f"| {row.label} | "
            + " | ".join(cells)
            + f" | {row.target} | {verdicts[0]} | {verdicts[1]} |"
        )
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Any]]) -> str:
    direct = results.get("direct", {})
    nginx = results.get("nginx", {})
    lite = results.get("litellm", {})

    def div(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}×" if a is not None and b else "—"

    def total_cpu(r: dict[str, Any]) -> float | None:
        c = _get(r, "c64")
        if not _ok(c) or not c["requests"]:
            return None
        return (c["cpu_s"].get("front", 0) + c["cpu_s"].get("agents", 0)) / c["requests"]

    lines = [
        "| setup | c=1 p50 latency ÷ direct | c=1 p50 ÷ nginx | c=64 req/s ÷ direct "
        "| c=64 req/s ÷ nginx | c=64 req/s ÷ LiteLLM | proxy CPU/request ÷ nginx "
        "| chunk throughput ÷ direct | TTFB p50 ÷ direct |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in columns(results)[1:]:
        r = results.get(key, {})
        if not r:
            continue
        lines.append(
            f"| {label} | {div(_get(r, 'c1', 'p50'), _get(direct, 'c1', 'p50'))} "
            f"| {div(_get(r, 'c1', 'p50'), _get(nginx, 'c1', 'p50'))} "
            f"| {div(_get(r, 'c64', 'rps'), _get(direct, 'c64', 'rps'))} "
            f"| {div(_get(r, 'c64', 'rps'), _get(nginx, 'c64', 'rps'))} "
            f"| {div(_get(r, 'c64', 'rps'), _get(lite, 'c64', 'rps'))} "
            f"| {div(total_cpu(r), total_cpu(nginx))} "
            f"| {div(_get(r, 'burst', 'events_per_s'), _get(direct, 'burst', 'events_per_s'))} "
            f"| {div(_get(r, 'ttfb', 'ttfb', 'p50'), _get(direct, 'ttfb', 'ttfb', 'p50'))} |"
        )
    return "\n".join(lines)


def notes(doc: dict[str, Any]) -> str:
    results = doc["results"]
    out = []
    direct = results.get("direct", {})
    c64 = _get(direct, "c64")
    if _ok(c64):
        backend_cpu = c64["cpu_s"]["backend"] / c64["elapsed_s"]
        out.append(
            f"- Backend capacity (direct, c=64): {c64['rps']:.0f} req/s at "
            f"{backend_cpu * 100:.0f}% of a core; wrk used "
            f"{c64['cpu_s_wrk'] / c64['elapsed_s'] * 100:.0f}% of a core."
        )
    burst = _get(direct, "burst")
    if _ok(burst):
        out.append(
            f"- Backend streaming capacity (direct, burst): {burst['events_per_s']:.0f} events/s; "
            f"load generator CPU {burst['loadgen_cpu_s'] / burst['events'] * 1e6:.1f} µs per event."
        )
    for key, label in columns(results):
        c = _get(results.get(key, {}), "c64")
        if _ok(c) and key != "direct":
            cores = {role: v / c["elapsed_s"] for role, v in c["cpu_s"].items()}
            out.append(
                f"- {label}, c=64: front {cores.get('front', 0) * 100:.0f}% of a core, agents "
                f"{cores.get('agents', 0) * 100:.0f}%, "
                f"backend {cores.get('backend', 0) * 100:.0f}%, "
                f"wrk {c['cpu_s_wrk'] / c['elapsed_s'] * 100:.0f}%."
            )
    for key, res in results.items():
        for scen, r in res.items():
            if isinstance(r, dict) and "error" in r:
                out.append(f"- {key} / {scen}: error: {r['error'].splitlines()[0][:300]}")
            elif isinstance(r, dict) and "skipped" in r:
                out.append(f"- {key} / {scen}: {r['skipped']}")
    for key, why in doc.get("skipped", {}).items():
        out.append(f"- {key}: skipped: {why}")
    for key in ("cancel",):
        for col, label in columns(results):
            c = _get(results.get(col, {}), key)
            if _ok(c) and c["not_seen_within_5s"]:
                out.append(
                    f"- {label}: the backend saw only {c['backend_saw_close']} of "
                    f"{c['cancelled']} cancelled streams close within 5 s (the rest kept "
                    f'streaming until the harness ended them): "never".'
                )
    return "\n".join(out)


def render(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    la0 = ", ".join(f"{x:.1f}" for x in m["loadavg_start"])
    la1 = ", ".join(f"{x:.1f}" for x in m.get("loadavg_end", ()))
    versions = "; ".join(
        f"{name}: {info['version']}"
        for name, info in m.get("setups", {}).items()
        if info.get("version")
    )
    parts = [
        f"Run {m['date']} ({m['mode']} run, {m['duration_s']:.0f} s): `{m['command']}`",
        "",
        f"Machine: {m['nproc']} × {m['cpu']}, {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {la0}, at end {la1}; "
        f"a busy loop got {m.get('cpu_share_start', 0):.0%} of a core at start, "
        f"{m.get('cpu_share_end', 0):.0%} at end (other work on the machine). "
        f"{m.get('wrk') or ''}. {versions}",
        "",
        table(doc["results"]),
        "",
        "Ratios (the machine is shared and noisy: compare these, not only absolute times):",
        "",
        ratios(doc["results"]),
        "",
        "Notes:",
        "",
        notes(doc),
    ]
    return "\n".join(parts)


def write_doc(path: Path, markdown: str) -> None:
    block = f"{BEGIN}\n\n{markdown}\n\n{END}"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            text = re.sub(
                re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: block, text, flags=re.S
            )
            path.write_text(text)
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Benchmarks\n\n## Latest results\n\n{block}\n")
