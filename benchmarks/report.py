"""Markdown tables and plots from the JSON results of :mod:`benchmarks.run`."""

from __future__ import annotations

import math
from collections import defaultdict

__all__ = ["headline", "markdown", "plot_accuracy"]


def _measured_at(part: dict) -> list[str]:
    """The line naming the commit a part was measured at (a partial run keeps older parts)."""
    git = part.get("git") or {}
    if not git.get("commit"):
        return ["Measured at an unrecorded commit (results from before commits were recorded per part).", ""]
    dirty = " with uncommitted changes to odesolve/ or benchmarks/" if git.get("modified") else ""
    return [f"Measured at commit `{git['commit']}`{dirty}.", ""]


def _f(v, fmt="{:.3g}"):
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return "inf" if v == math.inf else "nan"
    return fmt.format(v)


def _ok(row):
    return row.get("error") is None and row.get("finite", False) and math.isfinite(row.get("rmse", math.inf))


def best_by_lib(acc: dict, problem: str, setup: str, nfe: int, metric="rmse", registered_only=True, end=None) -> dict:
    """{lib: row of the lowest metric} at an NFE budget (training-free, registered methods; with
    ``end``, only runs that end at that time)."""
    best = {}
    for r in acc["rows"]:
        if r["problem"] != problem or r["setup"] != setup or r["nfe_budget"] != nfe or not _ok(r):
            continue
        if end is not None and r.get("t_end") != end:
            continue
        if not r.get("training_free", True) or (registered_only and not r.get("registered", True)):
            continue
        if r["lib"] not in best or r[metric] < best[r["lib"]][metric]:
            best[r["lib"]] = r
    return best


def headline(results: dict) -> dict:
    """The numbers the targets are judged on."""
    out = {}
    acc = results.get("accuracy")
    if acc:
        wins = []
        for pr in sorted({r["problem"] for r in acc["rows"]}):
            for st in sorted({r["setup"] for r in acc["rows"]}):
                for nfe in (5, 10):
                    if nfe not in acc["nfes"]:
                        continue
                    b = best_by_lib(acc, pr, st, nfe)
                    if "odesolve" not in b:
                        continue
                    o = b["odesolve"]
                    # all peer methods, and those that end where odesolve ends (sigma = 0, same grid)
                    same = best_by_lib(acc, pr, st, nfe, end=o["t_end"])
                    entry = {
                        "problem": pr,
                        "setup": st,
                        "nfe": nfe,
                        "odesolve": o["method"],
                        "odesolve_rmse": o["rmse"],
                    }
                    for tag, bb in (("", b), ("_same_end", same)):
                        peers = {k: v for k, v in bb.items() if k != "odesolve"}
                        bp = min(peers.values(), key=lambda r: r["rmse"]) if peers else None
                        ratio = o["rmse"] / bp["rmse"] if bp else None
                        entry.update(
                            {
                                f"best_peer{tag}": bp["key"] if bp else None,
                                f"peer_rmse{tag}": bp["rmse"] if bp else None,
                                f"ratio{tag}": ratio,
                                # a tie (identical method, same numbers) is not a win
                                f"met{tag}": bool(ratio is None or ratio < 1 - 1e-6),
                                f"tie{tag}": bool(ratio is not None and abs(ratio - 1) <= 1e-6),
                            }
                        )
                    wins.append(entry)
        out["accuracy_target"] = wins
        tw = [r for r in acc["rows"] if "twin_rel_rms" in r]
        fin = [r for r in tw if math.isfinite(r["twin_rel_rms"])]
        out["twins"] = {"count": len(tw), "non_finite_peer_runs": sorted({r["key"] for r in tw if r not in fin})}
        for lib in ("k-diffusion", "diffusers"):
            per = defaultdict(float)
            for r in fin:
                if r["lib"] == lib:
                    per[r["method"]] = max(per[r["method"]], r["twin_rel_rms"])
            out["twins"][lib] = dict(per)
    ov = results.get("overhead")
    if ov:
        tgt = []
        for r in ov["rows"]:
            if r["mode"] == "loop" and r["lib"] == "odesolve" and "ratio_vs_fastest_peer" in r:
                tgt.append(
                    {
                        "lib": r["lib"],
                        "shape": r["shape"],
                        "family": r["family"],
                        "ratio_vs_fastest_peer": r["ratio_vs_fastest_peer"],
                        "vs_floor": r["vs_floor"],
                    }
                )
        out["overhead_target"] = tgt
    return out


def markdown(results: dict) -> str:
    L = ["# odesolve benchmarks", ""]
    env = results.get("environment", {})
    if env:
        L += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("notes",)), ""]
    for n in results.get("notes", []):
        L.append(f"- note: {n}")
    L.append("")
    hl = results.get("headline", {})
    if hl.get("accuracy_target"):
        L += [
            "## Target: odesolve's best training-free method beats every peer method (NFE 5 and 10)",
            "",
            "All peers / only peers that end where odesolve ends (sigma = 0 on the same grid). "
            "ratio = odesolve RMSE / best peer RMSE; a tie (identical method) is not a win.",
            "",
            "| problem | setup | NFE | odesolve best | RMSE | best peer | RMSE | ratio | met | best peer, same end | "
            "ratio | met |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for w in hl["accuracy_target"]:

            def m(tag, w=w):
                return "tie" if w[f"tie{tag}"] else ("yes" if w[f"met{tag}"] else "no")

            L.append(
                f"| {w['problem']} | {w['setup']} | {w['nfe']} | {w['odesolve']} | {_f(w['odesolve_rmse'])} | "
                f"{w['best_peer']} | {_f(w['peer_rmse'])} | {_f(w['ratio'], '{:.3f}')} | {m('')} | "
                f"{w['best_peer_same_end']} | {_f(w['ratio_same_end'], '{:.3f}')} | {m('_same_end')} |"
            )
        L.append("")
    acc = results.get("accuracy")
    if acc:
        L += _accuracy_md(acc)
    ov = results.get("overhead")
    if ov:
        L += _overhead_md(ov)
    mem = results.get("memory")
    if mem:
        L += _memory_md(mem)
    return "\n".join(L) + "\n"


def _accuracy_md(acc) -> list[str]:
    L = [
        "## Accuracy against NFE",
        "",
        *_measured_at(acc),
        "RMSE of the final samples against a float64 DOP853 reference from the same start "
        "(lower is better); NLL = exact mean negative log-likelihood of the samples (the reference's "
        "own NLL in brackets). Best training-free registered method per library at each budget; "
        "NFE = counted model calls.",
        "",
    ]
    problems = sorted({r["problem"] for r in acc["rows"]})
    setups = list(acc.get("setups", {})) or sorted({r["setup"] for r in acc["rows"]})
    for nfe in [n for n in (5, 10) if n in acc["nfes"]]:
        L += [
            f"### Best method per library at NFE {nfe}",
            "",
            "| problem | setup | library | method | NFE | RMSE | same mode | NLL [ref] |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for pr in problems:
            for st in setups:
                b = best_by_lib(acc, pr, st, nfe)
                for lib in ("odesolve", "k-diffusion", "diffusers"):
                    if lib in b:
                        r = b[lib]
                        L.append(
                            f"| {pr} | {st} | {lib} | {r['method']} | {r['nfe']} | {_f(r['rmse'])} | "
                            f"{_f(r.get('same_mode'), '{:.3f}')} | {_f(r.get('nll'), '{:.3f}')} "
                            f"[{_f(r.get('nll_reference'), '{:.3f}')}] |"
                        )
        L.append("")
    # identical methods
    tw = [r for r in acc["rows"] if "twin_rel_rms" in r]
    if tw:
        agg = defaultdict(list)
        for r in tw:
            agg[(r["lib"], r["method"], r["twin"].split("[")[0])].append(r)
        L += [
            "### Identical methods across libraries",
            "",
            "Samples of a peer sampler against the odesolve method that implements the same formula, same "
            "grid, same start (all problems, setups and budgets). rel. RMS = RMS difference / RMS of the samples.",
            "",
            "| library | method | odesolve twin | runs | max rel. RMS | max abs |",
            "|---|---|---|---|---|---|",
        ]
        for (lib, m, t), rows in sorted(agg.items()):
            L.append(
                f"| {lib} | {m} | {t} | {len(rows)} | {_f(max(r['twin_rel_rms'] for r in rows), '{:.2e}')} | "
                f"{_f(max(r['twin_max_abs'] for r in rows), '{:.2e}')} |"
            )
        L.append("")
    # full tables
    L += ["### All methods (RMSE by NFE budget)", ""]
    for pr in problems:
        for st in setups:
            rows = [r for r in acc["rows"] if r["problem"] == pr and r["setup"] == st]
            if not rows:
                continue
            nfes = acc["nfes"]
            L += [
                f"#### {pr}, {st}",
                "",
                "| method | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                "|---|" + "---|" * len(nfes),
            ]
            by = defaultdict(dict)
            for r in rows:
                by[r["key"]][r["nfe_budget"]] = r
            for key, d in by.items():
                cells = []
                for n in nfes:
                    r = d.get(n)
                    if r is None:
                        cells.append("")
                    elif r.get("error"):
                        cells.append("error")
                    else:
                        s = _f(r.get("rmse"))
                        cells.append(s if r["nfe"] == n else f"{s} ({r['nfe']})")
                L.append(f"| {key} | " + " | ".join(cells) + " |")
            L.append("")
    notes = {r["key"]: r["note"] for r in acc["rows"] if r.get("note")}
    errs = {r["key"]: r["error"] for r in acc["rows"] if r.get("error")}
    if notes:
        L += ["Notes:", ""] + [f"- {k}: {v}" for k, v in sorted(notes.items())] + [""]
    if errs:
        L += ["Errors:", ""] + [f"- {k}: {v}" for k, v in sorted(errs.items())] + [""]
    L += ["References:", "", "| problem | setup | samples | seconds | est. error (max) |", "|---|---|---|---|---|"]
    for r in acc["references"]:
        L.append(
            f"| {r['problem']} | {r['setup']} | {r['samples']} | {r['seconds']:.1f} | "
            f"{_f(max(r['error_estimate_max'] or [0]), '{:.1e}')} |"
        )
    L.append("")
    return L


def _overhead_md(ov) -> list[str]:
    L = [
        "## Overhead per step (model returns a precomputed tensor)",
        "",
        *_measured_at(ov),
        f"{ov['dtype']} on {ov['device']}, EDM Karras grid with {ov['steps']} steps; times are medians over "
        "interleaved repetitions; ratio = odesolve time / fastest peer time, paired per repetition "
        "(median [p25, p75]); floor = the time of the plan's minimal memory traffic (see README).",
        "",
    ]
    for mode in ("loop", "with_setup"):
        rows = [r for r in ov["rows"] if r["mode"] == mode]
        if not rows:
            continue
        L += [
            f"### {mode.replace('_', ' ')}",
            "",
            "| shape | method | library | us/step | ratio vs fastest peer | x floor |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            ratio = (
                (
                    f"{r['ratio_vs_fastest_peer']:.2f} [{r['ratio_p25']:.2f}, {r['ratio_p75']:.2f}] "
                    f"vs {r['fastest_peer']}"
                )
                if "ratio_vs_fastest_peer" in r
                else ""
            )
            L.append(
                f"| {tuple(r['shape'])} | {r['family']} | {r['lib']} | {r['per_step_s'] * 1e6:.1f} | {ratio} | "
                f"{r['vs_floor']:.2f} |"
            )
        L.append("")
    L += [
        "Floor measurements:",
        "",
        "| shape | MB/tensor | add (3 tensors) us | copy us | launch us | add GB/s |",
        "|---|---|---|---|---|---|",
    ]
    for shp, f in ov["floors"].items():
        L.append(
            f"| {shp} | {f['bytes'] / 1e6:.3g} | {f['t_add'] * 1e6:.1f} | {f['t_copy'] * 1e6:.1f} | "
            f"{f['t_launch'] * 1e6:.1f} | {f['bw_add_GBps']:.2f} |"
        )
    L.append("")
    return L


def _memory_md(mem) -> list[str]:
    L = [
        "## Peak extra memory of a sampling run",
        "",
        *_measured_at(mem),
        f"Shape {tuple(mem['shape'])} float32; method: {mem['method']}.",
        "",
        "| method | library | peak MB | tensors | beyond the model (tensors) |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(mem["rows"], key=lambda r: (r.get("family", ""), r["lib"])):
        if "peak_extra_MB" in r:
            L.append(
                f"| {r['family']} | {r['lib']} | {r['peak_extra_MB']:.1f} | {r['peak_extra_tensors']:.2f} | "
                f"{r['beyond_model_tensors']:.2f} |"
            )
    for e in mem.get("errors", []):
        L.append(f"\nerror: {e}")
    L.append("")
    return L


def plot_accuracy(acc: dict, path: str):
    """Error against NFE: one panel per (problem, setup); the best method of each library as a thick line
    and every method as a thin line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = sorted({r["problem"] for r in acc["rows"]})
    setups = list(acc.get("setups", {})) or sorted({r["setup"] for r in acc["rows"]})
    fig, axes = plt.subplots(
        len(problems), len(setups), figsize=(5.2 * len(setups), 4.2 * len(problems)), squeeze=False
    )
    colors = {"odesolve": "tab:blue", "k-diffusion": "tab:orange", "diffusers": "tab:green"}
    for i, pr in enumerate(problems):
        for j, st in enumerate(setups):
            ax = axes[i][j]
            rows = [r for r in acc["rows"] if r["problem"] == pr and r["setup"] == st and _ok(r)]
            by = defaultdict(list)
            for r in rows:
                by[(r["lib"], r["method"])].append(r)
            for (lib, _method), rs in by.items():
                pts = sorted({(r["nfe"], r["rmse"]) for r in rs})
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors.get(lib, "gray"), alpha=0.18, lw=0.8)
            for lib, c in colors.items():
                pts = []
                for n in acc["nfes"]:
                    b = best_by_lib(acc, pr, st, n)
                    if lib in b:
                        pts.append((n, b[lib]["rmse"]))
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        color=c,
                        lw=2.2,
                        marker="o",
                        label=f"{lib} (best per NFE)",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(acc["nfes"])
            ax.set_xticklabels([str(n) for n in acc["nfes"]])
            ax.set_title(f"{pr} / {st}")
            ax.set_xlabel("NFE (counted)")
            ax.set_ylabel("RMSE vs reference")
            ax.grid(True, which="both", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
