"""bench/planning_quality.py's plot: held-out success against horizon, with 95% intervals."""

from __future__ import annotations

from pathlib import Path

from grasp_kernels.quality import FAMILIES


def plot(report: dict, path: Path) -> None:
    """Held-out success vs horizon with 95% intervals: every family (solid), the GRASP ablations (dashed) and,
    in a pixels report, the state model's families under the same protocol (dotted)."""
    from grasp_kernels.plotting import pyplot, save_figure
    from grasp_kernels.quality import wilson_interval

    plt = pyplot()

    pixels = report.get("mode") == "pixels"
    horizons = [int(h) for h in report["horizons"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    # (label, the cell's entry of each horizon, line style, the family whose colour it takes)
    series = [(family, lambda cell, f=family: cell["held_out"].get(f), "-", None) for family in FAMILIES]
    series += [(name, lambda cell, n=name: cell["ablations"].get(n), "--", None)
               for name in dict.fromkeys(name for h in report["horizons"].values() for name in h["ablations"])]
    if pixels:  # the state model's line in its pixel family's colour, dotted, hollow markers
        series += [(f"{family} (state model)", lambda cell, f=family: cell.get("state", {}).get("held_out", {}).get(f),
                    ":", family) for family in FAMILIES]
    colours: dict[str, str] = {}
    for label, entry_of, style, colour_of in series:
        points = [(int(h), entry_of(cell)) for h, cell in report["horizons"].items()]
        points = [(h, e) for h, e in points if e]
        if not points:
            continue
        xs = [h for h, _ in points]
        ys = [100 * e["successes"] / e["trials"] for _, e in points]
        ci = [wilson_interval(e["successes"], e["trials"]) for _, e in points]
        err = [[y - lo for y, (lo, _) in zip(ys, ci)], [hi - y for y, (_, hi) in zip(ys, ci)]]
        if colour_of is None:
            line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, linestyle=style)
            colours[label] = line[0].get_color()
        else:
            ax.errorbar(xs, ys, yerr=err, marker="s", capsize=3, label=label, linestyle=style, mfc="none",
                        **({"color": colours[colour_of]} if colour_of in colours else {}))
    ax.set_xscale("log")
    ax.minorticks_off()  # the horizons are the only ticks
    ax.set_xticks(horizons, [str(h) for h in horizons])
    ax.set_xlabel("horizon H (model steps)")
    ax.set_ylabel("executed open-loop success % (95% CI)" if pixels else "open-loop success % (95% CI)")
    ax.set_title(f"{report['env']} from pixels vs state (held-out pairs)" if pixels
                 else f"{report['env']}: success vs horizon (held-out pairs)")
    ax.set_ylim(-5, 105)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=120)
