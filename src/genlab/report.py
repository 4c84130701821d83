"""One report for runs of every family: ``genlab report RUN... --out DIR`` writes ``DIR/index.html``
(a static page that works offline: no CDN, no network, a few lines of inline JavaScript to sort the
table) and its markdown twin ``DIR/report.md``, with the images beside them in ``DIR/img/``.

What a run contributes, read from its directory alone (:func:`read_run` never raises: every problem
becomes a reason on the run's row, and the report is always written):

- ``config.yaml``: family, data, steps asked for, and the resolved config shown in full;
- ``metrics.json`` (the end of ``genlab train``, or ``genlab eval --write``): each metric with its unit, its kind (exact / bound /
  estimate), which way is better, its spread over seeds and its real-data floor; the held-out
  likelihood in nats and per dimension (bits/dim, or bits/char for text), labelled with its kind
  (``exact``, ``elbo``, ``iwae-1000`` ... : a bound is shown as one);
- ``metrics.jsonl`` (the trainer's log): the training curves of every player (``loss`` for one,
  ``loss_<player>`` for several) and the validation loss, drawn with matplotlib;
- ``samples.png`` (written with ``metrics.json``), or, for text models, a few hundred characters
  sampled from the run's weights when the report is made (``sample_text=False`` skips it).
- with ``nfe=True`` (the CLI's default), for models sampled by a solver with a ``steps`` option:
  quality against NFE (:func:`genlab.eval.probes.quality_vs_nfe`), measured from the weights when the report is made.

A metric a run does not have is shown as "n/a" when the run was evaluated (``genlab eval`` computes
every metric that applies to the family and data kind, so what it left out does not apply: a GAN's
likelihood, a text model's FD) or "—" when it was not (no readable ``metrics.json``), never as 0. Rows are marked
``unfinished`` (the log stops before ``trainer.steps``, with no early stop), ``not evaluated`` (no
``metrics.json``) or ``broken`` (a file is missing or unreadable), each with its reason.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genlab.errors import GenlabError
from genlab.eval.probes import NFE_METRIC, quality_vs_nfe, sample_text

# metrics of each data kind (for "n/a" against "—"): the metric registry's own kinds
_LIKELIHOOD = "nll"


@dataclass
class RunRow:
    """What the report shows of one run directory."""

    path: Path
    name: str
    family: str = "?"
    data: str = "?"
    kind: str = "?"  # points, images, tokens
    status: str = "ok"  # ok, unfinished, not evaluated, broken
    problems: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    config_text: str = ""
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    step: int | None = None
    steps: int | None = None
    samples: Path | None = None
    text: str | None = None
    evaluated: bool = False  # a readable metrics.json: what it lacks does not apply to the run
    split: str = ""  # what metrics.json measured on: test, val, file, fresh (or "unrecorded")
    nfe: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # sampler -> (NFE, m)
    nfe_metric: str = ""
    sizes: str = ""  # how many samples and held-out examples the figures used

    def mark(self, status: str, reason: str) -> None:
        """Record a problem; the worst status wins (broken > not evaluated > unfinished)."""
        order = ["ok", "unfinished", "not evaluated", "broken"]
        if order.index(status) > order.index(self.status):
            self.status = status
        self.problems.append(reason)


def read_run(path: str | Path, *, sample_text: bool = True, nfe: bool = False) -> RunRow:
    """Everything the report needs from a run directory; problems are recorded, never raised.
    ``nfe``: also measure quality against NFE for models with fixed-step samplers
    (:func:`genlab.eval.probes.quality_vs_nfe`)."""
    path = Path(path)
    row = RunRow(path=path, name=path.name or str(path))
    if not path.is_dir():
        row.mark("broken", f"no such run directory: {path}")
        return row
    _read_config(row)
    _read_metrics(row)
    _read_log(row)
    png = path / "samples.png"
    if png.is_file():
        row.samples = png
    elif row.kind in ("points", "images") and row.status != "broken":
        row.problems.append("no samples.png (genlab eval RUN --write writes it)")
    if sample_text and row.kind == "tokens" and row.status != "broken":
        row.text = _sample_text(row)
    if nfe and row.kind in NFE_METRIC and row.status != "broken":
        try:
            row.nfe_metric = NFE_METRIC[row.kind]
            row.nfe = quality_vs_nfe(row.path)
        except Exception as e:  # the report is always written
            row.problems.append(f"quality against NFE failed: {_short(e)}")
    return row


def _read_config(row: RunRow) -> None:
    cfg_path = row.path / "config.yaml"
    if not cfg_path.is_file():
        row.mark("broken", "no config.yaml (not a genlab run, or one that never started)")
        return
    try:
        row.config_text = cfg_path.read_text(encoding="utf-8")
        raw = yaml.safe_load(row.config_text)
        if not isinstance(raw, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError, yaml.YAMLError) as e:
        row.mark("broken", f"config.yaml unreadable: {_short(e)}")
        return
    model = raw.get("model") or {}
    row.family = str(raw.get("family") or model.get("family") or "?")
    data = raw.get("data") or {}
    row.data = str(data.get("path") or data.get("name") or "?")
    trainer = raw.get("trainer") or {}
    if isinstance(trainer.get("steps"), int):
        row.steps = trainer["steps"]


def _read_metrics(row: RunRow) -> None:
    mpath = row.path / "metrics.json"
    if not mpath.is_file():
        row.mark("not evaluated", "no metrics.json (run `genlab eval RUN --write` on it)")
        return
    try:
        report = json.loads(mpath.read_text(encoding="utf-8"))
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        row.mark("broken", f"metrics.json unreadable: {_short(e)}")
        return
    row.evaluated = True
    row.split = str(report.get("split") or "unrecorded")
    row.family = str(report.get("family", row.family))
    data = report.get("data") or {}
    row.kind = str(data.get("kind", row.kind))
    if row.data == "?":
        row.data = str(data.get("name", "?"))
    for name, entry in (report.get("metrics") or {}).items():
        if isinstance(entry, dict) and _number(entry.get("value")) is not None:
            row.metrics[name] = entry
    row.sizes = sizes(report)
    nll = report.get("nll")
    if isinstance(nll, dict) and _number(nll.get("nats")) is not None:
        from genlab.eval.likelihood import NLL_UNITS, nll_unit

        per = nll_unit(nll)
        kind = str(nll.get("kind", "exact"))
        row.metrics[_LIKELIHOOD] = {
            "value": nll["nats"], "std": nll.get("stderr"), "unit": "nats",
            "kind": "exact" if kind == "exact" else f"bound ({kind})", "better": "lower",
            "per": nll.get(per) if per else None, "per_unit": NLL_UNITS.get(per, ""),
            "of": str(nll.get("of", "data")), "note": str(nll.get("note") or ""),
            "help": "held-out negative log-likelihood (a bound is an upper bound on it)",
        }  # fmt: skip


def sizes(report: dict[str, Any]) -> str:
    """How many samples (and seeds) the sample metrics of a ``metrics.json`` used and how many
    held-out examples its likelihood did, e.g. ``500 samples x 3 seeds; likelihood: 1000 held-out
    examples`` ("" when it records neither)."""
    parts = []
    if report.get("metrics") and _number(report.get("n")) is not None and "nfe" in report:
        parts.append(f"{report['n']} samples x {report.get('seeds', 1)} seed(s)")
    nll = report.get("nll")
    if isinstance(nll, dict) and _number(nll.get("n")) is not None:
        shape = (report.get("data") or {}).get("shape") or []
        if (report.get("data") or {}).get("kind") == "tokens" and shape:
            what = f"windows of {shape[0]} characters"
        else:
            what = "examples"
        parts.append(f"likelihood: {nll['n']} held-out {what}")
    return "; ".join(parts)


def _read_log(row: RunRow) -> None:
    log = row.path / "metrics.jsonl"
    if not log.is_file():
        if row.status != "broken":
            row.problems.append("no training log (metrics.jsonl)")
        return
    bad = 0
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            step = int(rec["step"])
        except (ValueError, KeyError, TypeError):
            bad += 1  # a line cut by a kill, or damaged
            continue
        row.step = step if row.step is None else max(row.step, step)
        for key, v in rec.items():
            if (key == "loss" or key.startswith("loss_") or key == "val_loss") and _number(v):
                row.curves.setdefault(key, []).append((step, float(v)))
    if bad:
        row.problems.append(f"{bad} unreadable line(s) in metrics.jsonl skipped")
    short = row.steps is not None and row.step is not None and row.step < row.steps
    if short and not _stopped_early(row):
        row.mark("unfinished", f"the log stops at step {row.step} of {row.steps}")


def _stopped_early(row: RunRow) -> bool:
    """A run that early stopping ended before ``trainer.steps`` has been evaluated at its end."""
    return (row.path / "metrics.json").is_file() and "val_loss" in row.curves


def _sample_text(row: RunRow, chars: int = 300) -> str | None:
    try:
        return sample_text(row.path, chars)
    except Exception as e:  # the report is always written: a run that cannot sample says why
        row.problems.append(f"could not sample text: {_short(e)}")
        return None


# --- the report -------------------------------------------------------------------------------
#: what a report folder holds; a folder holding anything else is not one (it is not written into)
REPORT_FILES = ("index.html", "report.md", "img")


def check_report_folder(out: str | Path) -> None:
    """Refuse (:class:`GenlabError`) a report folder that would overwrite something that is not a
    report: a file, a run directory, or a folder holding other files. A folder that holds only
    an earlier report (or nothing) is fine: the report is rewritten."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GenlabError(f"--out {str(out)!r} is a file; give a folder for the report")
    if not out.is_dir():
        return
    if (out / "config.yaml").exists():
        raise GenlabError(
            f"--out {str(out)!r} is a run directory; give a folder of its own for the report"
        )
    other = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
    if other:
        shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
        raise GenlabError(
            f"--out {str(out)!r} holds files that are not a report ({shown}); give an empty or "
            "new folder, or the folder of an earlier report"
        )


def write_report(runs: list[RunRow], out: str | Path) -> Path:
    """``out/index.html``, ``out/report.md`` and ``out/img/``; returns the HTML page's path (the
    caller has checked ``out``: :func:`check_report_folder`, or a leaderboard's own folder)."""
    out = Path(out)
    img = out / "img"
    img.mkdir(parents=True, exist_ok=True)
    names = _unique_names(runs)
    images: dict[str, dict[str, str]] = {}
    for row, key in zip(runs, names, strict=True):
        images[key] = {}
        if row.samples is not None:
            dest = img / f"{key}-samples.png"
            try:
                shutil.copyfile(row.samples, dest)
                images[key]["samples"] = f"img/{dest.name}"
            except OSError as e:
                row.problems.append(f"samples.png could not be copied: {_short(e)}")
        if row.curves:
            dest = img / f"{key}-curves.png"
            _plot_curves(row, dest)
            images[key]["curves"] = f"img/{dest.name}"
        if row.nfe:
            dest = img / f"{key}-nfe.png"
            _plot_nfe(row, dest)
            images[key]["nfe"] = f"img/{dest.name}"
    columns = _columns(runs)
    page = out / "index.html"
    page.write_text(_html(runs, names, columns, images), encoding="utf-8")
    (out / "report.md").write_text(_markdown(runs, names, columns, images), encoding="utf-8")
    return page


def report(
    paths: list[str | Path], out: str | Path, *, sample_text: bool = True, nfe: bool = False
) -> Path:
    """Read every run directory and write the report; returns ``out/index.html``. ``out`` must be
    new, empty or an earlier report's folder (:func:`check_report_folder`)."""
    check_report_folder(out)
    return write_report([read_run(p, sample_text=sample_text, nfe=nfe) for p in paths], out)


def _columns(runs: list[RunRow]) -> list[tuple[str, dict[str, Any]]]:
    """Every metric some run has, the likelihood first, with the first run's description."""
    seen: dict[str, dict[str, Any]] = {}
    for row in runs:
        for name, entry in row.metrics.items():
            seen.setdefault(name, entry)
    order = sorted(seen, key=lambda n: (n != _LIKELIHOOD, n))
    return [(n, seen[n]) for n in order]


def _cell(row: RunRow, name: str, runs: list[RunRow]) -> tuple[str, float | None, str]:
    """(text, sort value, css class) of one table cell."""
    entry = row.metrics.get(name)
    if entry is None:
        if not row.evaluated:  # no readable metrics.json: nothing is known yet
            return "—", None, "missing"
        return "n/a", None, "na"
    value = float(entry["value"])
    text = _fmt(value)
    std = _number(entry.get("std"))
    if std:
        text += f" ± {_fmt(std)}"
    if name == _LIKELIHOOD and _number(entry.get("per")) is not None:
        text += f" ({_fmt(float(entry['per']))} {entry.get('per_unit', '')})"
    floor = _number(entry.get("floor"))
    if floor is not None:
        text += f" · floor {_fmt(floor)}"
    if name == _LIKELIHOOD:
        text += f" · {entry.get('kind')}"
        if entry.get("of") == "codes":  # a second stage's prior: not a likelihood of the pixels
            text += " · of the stage-1 codes"
    return text, value, "value"


def data_cell(row: RunRow) -> str:
    """The data a run was trained on and the part its figures were measured on."""
    return f"{row.data} · {SPLIT_LABELS.get(row.split, row.split)}" if row.split else row.data


#: how the report names the part of the data a run's figures were measured on
SPLIT_LABELS = {
    "test": "test split",
    "val": "validation split",
    "file": "given file",
    "fresh": "fresh draws of the law",
    "unrecorded": "split not recorded",
}


def likelihood_note(row: RunRow) -> str | None:
    """What a run's held-out likelihood is of (its levels, binarization, dequantization, bound):
    likelihoods are comparable only between runs that represent the data alike."""
    entry = row.metrics.get(_LIKELIHOOD)
    if entry is None or not entry.get("note"):
        return None
    return str(entry["note"])


def _header(name: str, entry: dict[str, Any]) -> str:
    unit = entry.get("unit") or ""
    better = entry.get("better")
    kind = "" if name == _LIKELIHOOD else str(entry.get("kind") or "")
    bits = [b for b in (unit, kind, f"{better} is better" if better else "") if b]
    return f"{name} ({', '.join(bits)})" if bits else name


def _html(runs, names, columns, images) -> str:
    e = html.escape
    head = ["run", "family", "data", "status"] + [_header(n, m) for n, m in columns]
    helps = ["", "", "", ""] + [str(m.get("help") or "") for _, m in columns]
    th = "".join(
        f'<th data-col="{i}" title="{e(h)}" tabindex="0">{e(t)}</th>'
        for i, (t, h) in enumerate(zip(head, helps, strict=True))
    )
    body = []
    for row, key in zip(runs, names, strict=True):
        cells = [
            (f'<a href="#{e(key)}">{e(row.name)}</a>', row.name),
            (e(row.family), row.family),
            (e(data_cell(row)), data_cell(row)),
            (e(row.status) + "".join(f"<br><small>{e(p)}</small>" for p in row.problems),
             row.status),
        ]  # fmt: skip
        tds = [f'<td data-sort="{e(str(s))}">{c}</td>' for c, s in cells]
        for name, _ in columns:
            text, value, cls = _cell(row, name, runs)
            sort = "" if value is None else repr(value)
            tds.append(f'<td class="{cls}" data-sort="{sort}">{e(text)}</td>')
        body.append(f'<tr class="status-{row.status.replace(" ", "-")}">{"".join(tds)}</tr>')
    sections = []
    for row, key in zip(runs, names, strict=True):
        parts = [f'<section id="{e(key)}"><h2>{e(row.name)}</h2>',
                 f"<p>{e(row.family)} on {e(row.data)} ({e(row.kind)}); {e(_progress(row))}; "
                 f"status: <b>{e(row.status)}</b></p>"]  # fmt: skip
        if row.problems:
            parts.append("<ul>" + "".join(f"<li>{e(p)}</li>" for p in row.problems) + "</ul>")
        if row.sizes:
            parts.append(f"<p>measured with: {e(row.sizes)}</p>")
        if note := likelihood_note(row):
            parts.append(f"<p>likelihood: {e(note)}</p>")
        for what, alt in (("samples", "samples"), ("curves", "training curves"),
                          ("nfe", "quality against NFE")):  # fmt: skip
            if what in images[key]:
                parts.append(f'<figure><img src="{e(images[key][what])}" alt="{alt} of '
                             f'{e(row.name)}"><figcaption>{alt}</figcaption></figure>')  # fmt: skip
        if row.text:
            parts.append(f"<h3>text samples</h3><pre>{e(row.text)}</pre>")
        if row.config_text:
            parts.append(f"<details><summary>resolved config</summary><pre>"
                         f"{e(row.config_text)}</pre></details>")  # fmt: skip
        parts.append("</section>")
        sections.append("".join(parts))
    return _PAGE.format(
        table=f'<table id="runs"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>',
        sections="\n".join(sections),
        count=len(runs),
    )


def _markdown(runs, names, columns, images) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    head = ["run", "family", "data", "status"] + [_header(n, m) for n, m in columns]
    lines = ["# genlab report", "", f"{len(runs)} run(s). Kinds: exact, bound (an upper bound on "
             "the NLL), estimate. n/a: does not apply; —: not measured.", "",
             "| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for row in runs:
        status = row.status + "".join(f"; {p}" for p in row.problems)
        cells = [row.name, row.family, data_cell(row), status]
        cells += [_cell(row, n, runs)[0] for n, _ in columns]
        lines.append("| " + " | ".join(esc(c) for c in cells) + " |")
    for row, key in zip(runs, names, strict=True):
        lines += ["", f"## {row.name}", "", f"{row.family} on {row.data} ({row.kind}); "
                  f"{_progress(row)}; status: {row.status}", ""]  # fmt: skip
        lines += [f"- {p}" for p in row.problems]
        if row.sizes:
            lines += ["", f"measured with: {row.sizes}"]
        if note := likelihood_note(row):
            lines += ["", f"likelihood: {note}"]
        for what in ("samples", "curves", "nfe"):
            if what in images[key]:
                lines += ["", f"![{what} of {row.name}]({images[key][what]})"]
        if row.text:
            lines += ["", "```text", row.text, "```"]
        if row.config_text:
            lines += ["", "<details><summary>resolved config</summary>", "", "```yaml",
                      row.config_text.rstrip(), "```", "", "</details>"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot_curves(row: RunRow, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    for key, pts in sorted(row.curves.items()):
        steps, vals = zip(*pts, strict=True)
        ax.plot(steps, vals, label=key, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{row.name}: training curves", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest)
    plt.close(fig)


def _plot_nfe(row: RunRow, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    for sampler, pts in sorted(row.nfe.items()):
        nfe, vals = zip(*pts, strict=True)
        ax.plot(nfe, vals, marker="o", ms=3, lw=1.2, label=sampler)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations per sample)")
    ax.set_ylabel(f"{row.nfe_metric} (lower is better)")
    ax.set_title(f"{row.name}: quality against NFE", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest)
    plt.close(fig)


def _progress(row: RunRow) -> str:
    if row.step is None:
        return "no training log"
    return f"step {row.step}" + (f" of {row.steps}" if row.steps else "")


def _unique_names(runs: list[RunRow]) -> list[str]:
    out: list[str] = []
    for row in runs:
        base = "".join(c if c.isalnum() or c in "-_" else "-" for c in row.name) or "run"
        key, k = base, 2
        while key in out:
            key, k = f"{base}-{k}", k + 1
        out.append(key)
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>genlab report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
th {{ background: #f2f2f2; cursor: pointer; user-select: none; }}
th.asc::after {{ content: " \\25B2"; }} th.desc::after {{ content: " \\25BC"; }}
td.na {{ color: #999; }} td.missing {{ color: #b60; }}
tr.status-broken td {{ background: #fdecea; }} tr.status-not-evaluated td {{ background: #fff8e1; }}
tr.status-unfinished td {{ background: #eef5ff; }}
img {{ max-width: 420px; border: 1px solid #ddd; }} figure {{ display: inline-block; margin: 0.5em; }}
pre {{ background: #f7f7f7; padding: 0.6em; overflow-x: auto; max-width: 60em; }}
</style></head>
<body>
<h1>genlab report</h1>
<p>{count} run(s). Click a column to sort. Kinds: <b>exact</b>, <b>bound</b> (an upper bound on the
negative log-likelihood), <b>estimate</b>. <b>n/a</b>: the metric does not apply to the run;
<b>—</b>: it applies but was not measured. Floors: the same metric on real data.</p>
{table}
{sections}
<script>
(function () {{
  var table = document.getElementById("runs");
  var heads = table.querySelectorAll("th");
  function key(td) {{
    var s = td.getAttribute("data-sort");
    var v = parseFloat(s);
    return {{ num: s !== "" && !isNaN(v) && isFinite(s), v: v, s: s }};
  }}
  function sortBy(col, dir) {{
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {{
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x.s === "" && y.s !== "") return 1;   // missing values last, either way
      if (y.s === "" && x.s !== "") return -1;
      var c = x.num && y.num ? x.v - y.v : x.s.localeCompare(y.s);
      return dir * c;
    }});
    rows.forEach(function (r) {{ body.appendChild(r); }});
  }}
  heads.forEach(function (th) {{
    function go() {{
      var col = parseInt(th.getAttribute("data-col"), 10);
      var dir = th.classList.contains("asc") ? -1 : 1;
      heads.forEach(function (h) {{ h.classList.remove("asc", "desc"); }});
      th.classList.add(dir === 1 ? "asc" : "desc");
      sortBy(col, dir);
    }}
    th.addEventListener("click", go);
    th.addEventListener("keydown", function (ev) {{ if (ev.key === "Enter") go(); }});
  }});
}})();
</script>
</body></html>
"""

__all__ = ["RunRow", "read_run", "report", "write_report"]
