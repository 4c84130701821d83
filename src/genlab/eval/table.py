"""The terminal table of an evaluation report: what ``genlab eval`` and ``genlab train`` print."""

from __future__ import annotations

from typing import Any

from genlab.eval.likelihood import NLL_UNITS, nll_unit


def format_report(report: dict[str, Any]) -> str:
    """A small fixed-width table of a report, for the terminal."""
    data = report["data"]
    shape = "x".join(map(str, data["shape"])) or "stream"
    lines = [f"{report['family']} on {data['name']} ({data['kind']} {shape})"]
    if report.get("split"):
        lines.append(f"  measured on: {SPLIT_WORDS.get(report['split'], report['split'])}")
    if "nfe" in report:  # samples were drawn (no sample metric exists for text yet)
        given = report.get("samples_given")
        if given:  # genlab score: samples from a file
            lines.append(
                f"  samples: {given['path']} ({given['count']} given, sha256 "
                f"{given['sha256'][:12]})"
            )
        else:
            opts = " ".join(f"{k}={_short(v)}" for k, v in report["options"].items())
            nfe = "" if report["nfe"] is None else f", NFE {report['nfe']:.0f}"
            lines.append(f"  sampling: {opts or 'defaults'}{nfe}")
        lines.append(
            f"  {report['n']} samples x {report['seeds']} seed(s) vs {report['reference']}"
        )
        if report.get("floor"):
            lines.append(f"  floor: {report['floor']}")
    if report.get("note"):
        lines.append(f"  note: {report['note']}")
    feats = report.get("features")
    if feats:
        acc = feats.get("accuracy")
        what = f", held-out accuracy {acc:.2%}" if acc is not None else ""
        lines.append(f"  features: {feats['kind']} network {feats['hash']}{what}")
    metrics = report.get("metrics", {})
    if metrics:
        lines.append(f"  {'metric':<18} {'value':>22} {'floor':>10}  better  unit")
        for name, m in metrics.items():
            val = f"{m['value']:.4g}"
            if m.get("std"):
                val += f" ± {m['std']:.2g}"
            floor = "-" if m.get("floor") is None else f"{m['floor']:.4g}"
            lines.append(f"  {name:<18} {val:>22} {floor:>10}  {m['better']:<6}  {m['unit']}")
    inc = report.get("inception_fid")
    if inc:
        lines.append(
            f"  {'inception_fid':<18} {inc['value']:>22.4g} {'-':>10}  lower   {inc['unit']}"
        )
    nll = report.get("nll")
    if nll:
        unit = nll_unit(nll)
        err = nll.get(f"{unit}_stderr")
        pm = f" ± {err:.4f}" if err is not None else ""
        extra = f" (true law: {nll['true_nats']:.4f} nats)" if "true_nats" in nll else ""
        if "gaussian_nats" in nll:
            extra = (
                f" (full-covariance Gaussian on the training rows: {nll['gaussian_nats']:.4f} nats)"
            )
        per = NLL_UNITS[unit]
        if nll.get("of") == "codes":
            extra += " (of the stage-1 codes, not of the pixels)"
        for b in nll.get("bounds", []):
            lines.append(
                f"  {'nll':<18} {b['nats']:.4f} nats, {b[unit]:.4f} ± {b[f'{unit}_stderr']:.4f} "
                f"{per} [{b['kind']}]"
            )
        lines.append(
            f"  {'nll':<18} {nll['nats']:.4f} nats, {nll[unit]:.4f}{pm} {per} "
            f"[{nll['kind']}]{extra}"
        )
        if nll.get("n"):
            what = f"windows of {shape} characters" if data["kind"] == "tokens" else "examples"
            lines.append(f"  {'':<18} (on {nll['n']} held-out {what})")
    return "\n".join(lines)


SPLIT_WORDS = {
    "test": "the test split (never seen by training or checkpoint selection)",
    "val": "the validation split (it chose the checkpoint: for diagnosis, not for reporting)",
    "file": "the data given with --data",
    "fresh": "fresh draws of the true law",
}


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
