"""report.html opened in a real headless Chromium: it loads clean, every section is there, the plots draw.

The pages are rendered from the fixtures in tests/report_fixtures.py (a profiled single artifact and a
four-cell comparison). Without chromium these tests skip with the reason, except on CI (env CI set), where
chromium is installed and a missing browser is a failure. Screenshots of both pages are left in /tmp for a
person to look at.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kiln.report import plots
from kiln.report.html import render_comparison_html, render_html
from kiln.schemas import validate_document
from tests import report_fixtures as fx
from tests.browser import BrowserPage, console_messages, find_chromium, render_in_browser

SINGLE_SECTIONS = ["summary", "latency", "per-op", "roofline", "accuracy", "scatter", "batch", "cost", "notes"]
COMPARISON_SECTIONS = ["summary", "matrix", "scatter", "cost", "cells", "notes"]
SCREENSHOTS = {"single": Path("/tmp/kiln-report-single.png"), "comparison": Path("/tmp/kiln-report-comparison.png")}
HOSTILE = "<script>alert(1)</script>"


class Page(HTMLParser):
    """What the tests look at in a DOM: text per section id (nested included), URL attributes, body data."""

    def __init__(self, dom: str):
        super().__init__()
        self.stack: list[str] = []
        self.text: dict[str, str] = {}
        self.urls: list[str] = []
        self.body: dict[str, str] = {}
        self.scripts = 0
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.stack.append(attrs.get("id") or "")
            self.text.setdefault(self.stack[-1], "")
        if tag == "body":
            self.body = {k: v for k, v in attrs.items() if k.startswith("data-")}
        self.scripts += tag == "script"
        self.urls += [v for k, v in attrs.items() if k in ("src", "href", "xlink:href", "srcset", "action") and v]

    def handle_endtag(self, tag):
        if tag == "section" and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        for sid in self.stack:
            self.text[sid] += data

    def plots(self) -> tuple[int, int]:
        return int(self.body.get("data-plots-ok", -1)), int(self.body.get("data-plots-failed", -1))


def need_chromium() -> None:
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); on CI this is a failure")


def open_page(text: str, path: Path, screenshot: Path | None = None) -> tuple[BrowserPage, Page]:
    need_chromium()
    path.write_text(text, encoding="utf-8")
    browser = render_in_browser(path, screenshot)
    return browser, Page(browser.dom)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[str, BrowserPage, Page]:
    text = render_html(fx.single_report())
    return (text, *open_page(text, tmp_path_factory.mktemp("single") / "report.html", SCREENSHOTS["single"]))


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> tuple[str, BrowserPage, Page]:
    text = render_comparison_html(*fx.comparison())
    return (text, *open_page(text, tmp_path_factory.mktemp("cmp") / "report.html", SCREENSHOTS["comparison"]))


def test_browser_helper_sees_script_errors_and_broken_images(tmp_path):
    """The helper is what makes the other tests able to fail: it must catch both kinds of breakage."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body><img src="missing.png">'
                    '<img src="data:image/png;base64,AAAA"><script>undefinedFunction();</script></body></html>')
    browser, _ = open_page(page.read_text(), page)
    errors = "\n".join(browser.console_errors)
    assert "Uncaught ReferenceError: undefinedFunction is not defined" in errors
    assert "missing.png" in errors and "data:image/png" in errors


def test_console_line_format():
    line = ('[31:31:1126/142517.975519:INFO:CONSOLE:1] "Uncaught ReferenceError: f is not defined", '
            "source: file:///tmp/x.html (1)")
    assert console_messages("noise\n" + line) == ["Uncaught ReferenceError: f is not defined"]


def test_single_page_loads_clean_with_every_section_and_plot(single):
    text, browser, page = single
    assert browser.console_errors == []
    assert [s for s in SINGLE_SECTIONS if s not in page.text] == []
    ok, failed = page.plots()
    assert ok >= 4 and failed == 0
    assert "plot not drawn" not in text and "Not measured" not in text
    assert browser.screenshot and browser.screenshot.stat().st_size > 20_000


def test_single_page_says_what_was_measured(single):
    _, _, page = single
    report = fx.single_report()
    assert "compute-bound" in page.text["roofline"] and "use IO binding" in page.text["roofline"]
    assert "DynamicQuantizeMatMul" in page.text["per-op"] and "layer.0/intermediate" in page.text["per-op"]
    assert f"{report['latency_ms']['p50']:.3g}" in page.text["latency"]
    assert f"★ {report['batch_sweep']['best_batch']}" in page.text["batch"] and "budget 60 ms" in page.text["batch"]
    assert "sentence_embedding" in page.text["accuracy"] and "passed" in page.text["accuracy"]


def test_comparison_page_marks_recommendation_and_reasons(comparison):
    text, browser, page = comparison
    assert browser.console_errors == []
    assert [s for s in COMPARISON_SECTIONS if s not in page.text] == []
    matrix_html = re.search(r'<section id="matrix">.*?</section>', browser.dom, re.DOTALL).group(0)
    rec_rows = re.findall(r'<tr class="rec">(.*?)</tr>', matrix_html)
    assert len(rec_rows) == 1 and "★ onnxruntime" in rec_rows[0] and ">int8<" in rec_rows[0]
    matrix = page.text["matrix"]
    assert "failed: NNCF quantization failed: calibration needs at least 16 samples, got 4" in matrix
    assert "refused: tensorrt needs an NVIDIA GPU" in matrix
    assert "★ Recommended: onnxruntime/int8: fastest artifact meeting the accuracy budget" in matrix
    assert re.search(r'<section id="scatter"><h2>[^<]*</h2><figure><svg class="plot"', browser.dom)
    assert re.search(r'<details id="cell-onnxruntime-int8" open', browser.dom)
    assert re.search(r'<details id="cell-openvino-fp32">', browser.dom)
    assert "cell-openvino-int8" not in text and "cell-tensorrt-fp16" not in text
    ok, failed = page.plots()
    assert ok >= 5 and failed == 0


def test_missing_data_still_renders_every_section(tmp_path):
    browser, page = open_page(render_html(fx.sparse_report()), tmp_path / "sparse.html")
    assert browser.console_errors == []
    assert [s for s in SINGLE_SECTIONS if s not in page.text] == []
    for sid, reason in (("per-op", "the profiler is off"), ("roofline", "no roofline in this report"),
                        ("batch", "the model has a fixed batch of 1"), ("cost", "no price per hour given"),
                        ("scatter", "no source-model measurement"), ("latency", "no histogram of the timed runs")):
        assert f"Not measured: {reason}" in page.text[sid], sid
    assert page.plots() == (0, 0)


def test_without_matplotlib_every_section_renders_and_says_how_to_get_plots(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert not plots.available()
    browser, page = open_page(render_html(fx.single_report()), tmp_path / "noplots.html")
    assert browser.console_errors == []
    assert [s for s in SINGLE_SECTIONS if s not in page.text] == []
    for sid in ("latency", "per-op", "roofline", "scatter", "batch"):
        assert 'plots need pip install "modelkiln[report]"' in page.text[sid], sid
    assert page.plots() == (0, 0)
    assert "compute-bound" in page.text["roofline"]  # the text around the plots is still there


def hostile_documents() -> tuple[dict, dict, dict]:
    report = fx.single_report()
    report["model"]["name"] = HOSTILE
    report["notes"].append('<img src=x onerror="alert(2)">')
    report["profile"]["top_nodes"][0]["name"] = '"><svg onload=alert(3)>'
    comp, reports = fx.comparison()
    comp["model"]["name"] = HOSTILE
    comp["cells"][2]["reason"] = HOSTILE
    reports = {k: {**copy.deepcopy(v), "model": {**v["model"], "name": HOSTILE}} for k, v in reports.items()}
    return report, comp, reports


def test_hostile_strings_are_escaped(tmp_path):
    report, comp, reports = hostile_documents()
    for name, text in (("single", render_html(report)), ("comparison", render_comparison_html(comp, reports))):
        assert HOSTILE not in text and "<img src=x" not in text and "<svg onload" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        browser, page = open_page(text, tmp_path / f"{name}.html")
        assert browser.console_errors == []
        assert page.scripts == 2, name  # the page's plot check and the helper's probe: nothing injected
        assert HOSTILE in page.text["matrix" if name == "comparison" else "notes"]  # shown as text
        assert HOSTILE not in browser.dom


@pytest.mark.parametrize("kind", ["single", "comparison"])
def test_no_external_resources(kind, single, comparison):
    text = (single if kind == "single" else comparison)[0]
    page = Page(text)
    assert page.urls and all(u.startswith(("#", "data:")) for u in page.urls), page.urls
    without_xmlns = re.sub(r'xmlns(:\w+)?="http://www\.w3\.org/[^"]*"', "", text)
    assert "http://" not in without_xmlns and "https://" not in without_xmlns
    assert "@import" not in text and not re.search(r"url\(\s*['\"]?(?!#)", text)
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_fixtures_follow_the_schemas():
    """The pages are tested on documents kiln could really write."""
    pytest.importorskip("jsonschema")
    comp, reports = fx.comparison()
    assert validate_document(comp, "comparison") == []
    for report in (fx.single_report(), fx.sparse_report(), *reports.values()):
        assert validate_document(report, "report") == []


def test_pareto_front_keeps_only_undominated_points():
    pts = [{"x": 10, "y": 0.99}, {"x": 20, "y": 0.98}, {"x": 15, "y": 0.97}, {"x": 5, "y": 1.0}]
    assert [(p["x"], p["y"]) for p in plots.pareto_front(pts)] == [(5, 1.0), (10, 0.99), (20, 0.98)]


def test_short_node_names_tell_layers_apart():
    assert plots.short_name("/encoder/layer.3/output/dense/MatMul_quant") == "layer.3/output/MatMul_quant"
    assert plots.short_name("/embeddings/EmbedLayerNormalization") == "embeddings/EmbedLayerNormalization"
    assert len(plots.short_name("x" * 80)) == 36


def test_a_matrix_cell_this_host_could_not_time_renders_beside_the_shared_source_timing():
    """x86-amx next to onnxruntime on a host without AMX: the matrix timed the source once for both, the AMX cell
    has no latency of its own. Its report.md crashed on the missing speedup (a TypeError that failed the cell)."""
    from kiln.report.markdown import render

    report = fx.single_report(target="x86-amx")
    bench_free = {"latency_ms": None, "throughput_per_s": None, "bench": None, "speedup_vs_source": None,
                  "profile": None, "roofline": None, "batch_sweep": None, "cost": None,
                  "bench_skipped": "not measured: host CPU lacks amx_int8, amx_tile"}
    report.update(bench_free)
    text = render(report)
    assert "this artifact was not timed here" in text and "faster at p50" not in text
    assert "not measured: host CPU lacks amx_int8" in render_html(report)


def test_the_curve_drawn_is_the_one_whose_graph_shipped(monkeypatch):
    """ONNX Runtime auto can ship the dynamic-int8 rung's graph: the page then plots that rung's points (with its
    shipped point starred), not the static search's; where a whole recipe ships (float, plain dynamic int8) no point
    is starred. The plot function is replaced by one that records its input."""
    from kiln.report import html

    drawn = []
    monkeypatch.setattr(html.plots, "fallback_curve", lambda points, chosen, target: drawn.append((points, chosen)) or "")

    def point(kept: int, distance: float) -> dict:
        return {"kept": kept, "kept_units": [f"n{i}" for i in range(kept)], "distance": distance,
                "passed": distance <= 0.5}

    static = {"chosen": point(8, 0.4), "curve": [point(0, 3.0), point(8, 0.4)], "evaluations": 2, "seconds": 1.0,
              "timed_out": True}
    rung = {"curve": [point(0, 0.8), point(2, 0.4)], "kept_fp32": ["n0", "n1"], "units": 24,
            "ranked_by_the_static_search": 24, "evaluations": 2}
    block = {"search": static, "shipped": "dynamic-mixed", "kept_fp32": ["n0", "n1"], "dynamic_search": rung,
             "tuning_share": 0.5}
    page = html._mixed({"compile": {"mixed_precision": block}})
    assert drawn == [(rung["curve"], 2)] and "dynamic-int8 rung" in page
    from kiln.report.mixed_precision import markdown_lines

    text = "\n".join(markdown_lines({"mixed_precision": {**block, "units": 58, "budget_met_on_tuning": False}}))
    assert "| nodes float in dynamic int8 (the rung that shipped) |" in text and "| 2 | 0.400 | yes |" in text
    drawn.clear()
    html._mixed({"compile": {"mixed_precision": {**block, "shipped": "mixed", "kept_fp32": ["n0"] * 8}}})
    html._mixed({"compile": {"mixed_precision": {**block, "shipped": "high", "kept_fp32": []}}})
    html._mixed({"compile": {"mixed_precision": {**block, "shipped": "dynamic", "kept_fp32": []}}})
    # the static search's point is starred only where it shipped; float or plain dynamic int8 are no point of it
    assert drawn == [(static["curve"], 8), (static["curve"], None), (static["curve"], None)]
