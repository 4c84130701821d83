"""``genlab report``: rows for broken and unfinished runs, n/a against "—", the markdown twin, and
the page loaded in a real browser (headless Chromium through Selenium): no console errors, every
image loads, the table sorts, a screenshot kept under ``.artifacts/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from families import TINY

import genlab
from genlab.cli import main as cli_main
from genlab.config import EvalConfig
from genlab.eval.evaluate import evaluate
from genlab.report import read_run, report

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / ".artifacts"


def fake_run(d: Path, *, metrics: dict | None, steps: int = 100, logged: int = 100) -> Path:
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        f"name: {d.name}\nfamily: vae\ndata: {{name: digits}}\ntrainer: {{steps: {steps}}}\n"
    )
    lines = [json.dumps({"step": s, "loss": 10.0 / s}) for s in range(10, logged + 1, 10)]
    (d / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 1')  # a line cut by a kill
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    return d


EVALUATED = {
    "family": "vae", "data": {"name": "digits", "kind": "images", "shape": [1, 8, 8]},
    "metrics": {"fd": {"value": 12.5, "std": 0.5, "unit": "feature units²", "kind": "estimate",
                       "better": "lower", "floor": 3.25}},
    "nll": {"nats": 30.0, "stderr": 0.1, "bits_per_dim": 0.68, "kind": "iwae-100"},
}  # fmt: skip


def test_every_run_gets_a_row_with_its_reason(tmp_path):
    good = fake_run(tmp_path / "good", metrics=EVALUATED)
    unfinished = fake_run(tmp_path / "unfinished", metrics=None, steps=100, logged=40)
    corrupt = fake_run(tmp_path / "corrupt", metrics=None)
    (corrupt / "metrics.json").write_text("{not json")
    empty = tmp_path / "empty"
    empty.mkdir()
    rows = {p.name: read_run(p) for p in (good, unfinished, corrupt, empty, tmp_path / "gone")}
    assert rows["good"].status == "ok" and rows["good"].evaluated
    assert rows["good"].metrics["nll"]["kind"] == "bound (iwae-100)"
    assert any("unreadable line" in p for p in rows["good"].problems)
    assert rows["unfinished"].status == "not evaluated"
    assert any("step 40 of 100" in p for p in rows["unfinished"].problems)
    assert rows["corrupt"].status == "broken"
    assert any("metrics.json unreadable" in p for p in rows["corrupt"].problems)
    assert rows["empty"].status == "broken" and "no config.yaml" in rows["empty"].problems[0]
    assert rows["gone"].status == "broken" and "no such run directory" in rows["gone"].problems[0]

    page = report([good, unfinished, corrupt, empty, tmp_path / "gone"], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 5  # the header and one row per run, broken ones included
    good_row = next(line for line in table if line.startswith("| good "))
    assert "12.5 ± 0.5 · floor 3.25" in good_row and "bound (iwae-100)" in good_row
    broken_row = next(line for line in table if line.startswith("| corrupt "))
    assert "—" in broken_row and " 0 " not in broken_row  # unknown, never zero
    assert page.is_file() and (tmp_path / "out" / "img" / "good-curves.png").is_file()


def test_a_metric_that_does_not_apply_is_na_not_zero(tmp_path):
    text = fake_run(tmp_path / "text", metrics={
        "family": "gpt", "data": {"name": "shakespeare", "kind": "tokens"}, "metrics": {},
        "nll": {"nats": 190.0, "stderr": 1.0, "bits_per_char": 2.2, "kind": "exact"}})  # fmt: skip
    images = fake_run(tmp_path / "images", metrics=EVALUATED)
    report([text, images], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    text_row = next(line for line in md.splitlines() if line.startswith("| text "))
    cells = [c.strip() for c in text_row.strip("|").split("|")]
    assert cells[4].startswith("190 ± 1 (2.2 bits/char)")  # the likelihood column comes first
    assert cells[5] == "n/a"  # fd does not apply to text


def test_the_likelihood_says_what_it_is_of(tmp_path):
    """A second stage's prior scores codes (bits per code, labelled), and every run's page says
    how its data were represented, since likelihoods compare only between runs alike."""
    prior = fake_run(tmp_path / "prior", metrics={
        "family": "vqgan-prior", "data": {"name": "digits", "kind": "images"}, "metrics": {},
        "nll": {"nats": 40.0, "stderr": 0.5, "bits_per_code": 3.6, "kind": "exact",
                "of": "codes", "note": "chain rule over the 16 codes"}})  # fmt: skip
    pixels = fake_run(tmp_path / "pixels", metrics={**EVALUATED, "nll": {
        **EVALUATED["nll"], "note": "images binarized, seeded"}})  # fmt: skip
    rows = {p.name: read_run(p) for p in (prior, pixels)}
    assert rows["prior"].metrics["nll"]["per"] == 3.6
    assert rows["prior"].metrics["nll"]["per_unit"] == "bits/code"
    report([prior, pixels], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    prior_row = next(line for line in md.splitlines() if line.startswith("| prior "))
    assert "(3.6 bits/code)" in prior_row and "of the stage-1 codes" in prior_row
    pixel_row = next(line for line in md.splitlines() if line.startswith("| pixels "))
    assert "codes" not in pixel_row and "(0.68 bits/dim)" in pixel_row
    assert "likelihood: chain rule over the 16 codes" in md
    assert "likelihood: images binarized, seeded" in md


def test_cli_report(tmp_path, capsys):
    run = fake_run(tmp_path / "r", metrics=EVALUATED)
    assert (
        cli_main(["report", str(run), str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 0
    )
    out = capsys.readouterr().out
    assert "missing" in out and "broken" in out and (tmp_path / "o" / "index.html").is_file()
    (tmp_path / "file").write_text("x")
    assert cli_main(["report", str(run), "--out", str(tmp_path / "file")]) == 2


def test_the_report_says_how_many_samples_and_held_out_examples_each_figure_used(tmp_path):
    from genlab.report import sizes

    sampled = {**EVALUATED, "n": 500, "seeds": 3, "nfe": 20.0}
    sampled["nll"] = {**EVALUATED["nll"], "n": 1000}
    assert sizes(sampled) == "500 samples x 3 seed(s); likelihood: 1000 held-out examples"
    text = {"data": {"kind": "tokens", "shape": [256]}, "nll": {"nats": 900.0, "n": 78}}
    assert sizes(text) == "likelihood: 78 held-out windows of 256 characters"
    assert sizes({"metrics": {}}) == ""
    run = fake_run(tmp_path / "r", metrics=sampled)
    report([run], tmp_path / "o")
    md = (tmp_path / "o" / "report.md").read_text()
    assert "measured with: 500 samples x 3 seed(s); likelihood: 1000 held-out examples" in md


# --- the page in a real browser -------------------------------------------------------------------
BROWSER_RUNS = {  # four families, three data kinds
    "flow-matching": ["trainer.steps=200"],
    "gan": ["trainer.steps=200"],
    "vae": ["trainer.steps=150"],
    "gpt": ["trainer.steps=30"],
}


def _driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install "
                    "chromium chromium-driver; `make test` does it where it can)")  # fmt: skip
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_bin), options=opts)


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for family, extra in BROWSER_RUNS.items():
        tiny = TINY[family]
        eval_small = ["eval.n=200", "eval.seeds=1", "eval.nll_n=200"]
        out = root / family
        genlab.train(tiny.path, out, overrides=tiny.args(*extra, *eval_small), verbose=False)
        runs.append(out)
    return runs


def test_quality_against_nfe(four_runs):
    flow, gan = read_run(four_runs[0], nfe=True), read_run(four_runs[1], nfe=True)
    assert gan.nfe == {} and not any("NFE" in p for p in gan.problems)  # no steps to vary
    assert flow.nfe_metric == "w2" and set(flow.nfe) == {"euler", "heun", "dpmpp-2m"}
    euler = flow.nfe["euler"]
    assert [nfe for nfe, _ in euler] == [2, 4, 8, 16, 32]  # one evaluation per step
    assert [nfe for nfe, _ in flow.nfe["heun"]] == [3, 7, 15, 31, 63]  # 2 per step, the last 1
    assert all(w2 > 0 for _, w2 in euler)
    # each point is genlab eval's W2 with that sampler and step count
    run = genlab.load_run(four_runs[0])
    cfg = EvalConfig(n=1000, seeds=1, metrics=["w2"], floor=False, nll=False,
                     options={"sampler": "euler", "steps": 8})  # fmt: skip
    direct = evaluate(run.model, run.dataset, cfg)["metrics"]["w2"]["value"]
    assert euler[2][1] == pytest.approx(direct, rel=1e-9)


def test_report_of_four_families_in_headless_chromium(four_runs, tmp_path):
    driver = _driver()
    try:
        runs = four_runs
        broken = tmp_path / "broken"
        broken.mkdir()
        page = report([*runs, broken], tmp_path / "report", nfe=True)
        driver.get(page.as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        images = driver.find_elements("tag name", "img")
        assert len(images) >= 7  # samples, curves, flow matching's NFE plot (text: curves only)
        for img in images:
            ok = driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", img
            )
            assert ok, img.get_attribute("src")
        # sort by the run name, both ways, then by a numeric column
        header = driver.find_elements("css selector", "#runs th")
        names = lambda: [r.text.split("\n")[0] for r in driver.find_elements(  # noqa: E731
            "css selector", "#runs tbody tr td:first-child")]  # fmt: skip
        header[0].click()
        assert names() == sorted(names())
        header[0].click()
        assert names() == sorted(names(), reverse=True)
        nll_col = next(i for i, h in enumerate(header) if h.text.startswith("nll"))
        header[nll_col].click()
        values = driver.execute_script(
            "return Array.from(document.querySelectorAll('#runs tbody tr')).map("
            f"r => r.cells[{nll_col}].getAttribute('data-sort'))"
        )
        numbers = [float(v) for v in values if v]
        assert len(numbers) >= 3 and numbers == sorted(numbers)  # flow, vae and gpt have one
        assert values[-1] == ""  # runs without a value sort last
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "report.png"))
        assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    finally:
        driver.quit()
