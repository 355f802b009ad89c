"""The comparison dashboard: built from a real small sweep, opened in a real headless Chromium.

One real 2-trial sweep (tiny DCGAN on digits). A copy of it gets what a small sweep doesn't
produce on its own: one trial cut short with Tune's state saying TERMINATED (what ASHA's stop
leaves), a hand-made errored trial and one left RUNNING by a driver that went away.
"""

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error, family_sweep, run_cli, start_cli
from dashboards.build import build, reported_keys
from trainables.experiment import leaderboard, load_experiment

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SPACE = """
latent_dim = 16
width = 8
batch_size = 32

[lr_g]
distribution = "loguniform"
low = 1e-4
high = 2e-3

[lr_d]
distribution = "loguniform"
low = 1e-4
high = 2e-3
"""


@pytest.fixture(scope="module")
def sweep(ray_address, tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("dash")
    (storage / "tiny.toml").write_text(SPACE)
    return family_sweep(ray_address, storage, "dcgan", "--dataset", "digits", "--space", str(storage / "tiny.toml"),
                        "--seed", "3", trials=2, max_steps=40, eval_every=20, name="real")


def _rewrite(folder: Path, rows: list[dict]) -> None:
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def damaged(sweep, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the sweep with trials in every state; returns it and {role: trial id}."""
    path = tmp_path_factory.mktemp("copy") / "mixed"
    shutil.copytree(sweep, path, ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "dashboard.html"))
    spec = json.loads((path / "sweep.json").read_text())
    spec["name"] = "mixed"
    (path / "sweep.json").write_text(json.dumps(spec))
    finished, stopped = sorted(load_experiment(path).trials, key=lambda t: t.trial_id)
    # stopped early: reports and checkpoints past step 20 removed, Tune's state left TERMINATED
    _rewrite(stopped.path, [r for r in stopped.results if r["step"] <= 20])
    for ckpt in stopped.checkpoints:
        if ckpt.step > 20:
            shutil.rmtree(ckpt.path)
    # errored: a trial folder with reports up to step 10 and Tune's error.txt
    errored = path / "run_trial_e0e0e0e0_3_handmade"
    errored.mkdir()
    shutil.copy(finished.path / "params.json", errored / "params.json")
    _rewrite(errored, [dict(r, fid=r["fid"] * 3) for r in finished.results if r["step"] <= 10])
    (errored / "error.txt").write_text("Traceback (most recent call last):\nDiverged: loss_d became non-finite at step 11\n")
    # interrupted: RUNNING in Tune's state, last report two hours ago
    gone = path / "run_trial_d0d0d0d0_4_handmade"
    gone.mkdir()
    shutil.copy(stopped.path / "params.json", gone / "params.json")
    _rewrite(gone, [dict(r, fid=r["fid"] * 2, timestamp=r["timestamp"] - 7200) for r in finished.results if r["step"] <= 20])
    (state_file,) = path.glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    state["trial_data"].append([json.dumps({"trial_id": "d0d0d0d0", "status": "RUNNING"}), json.dumps({})])
    state_file.write_text(json.dumps(state))
    return path, {"finished": finished.trial_id, "stopped": stopped.trial_id, "errored": "e0e0e0e0",
                  "interrupted": "d0d0d0d0"}


def test_trial_table_and_curves(damaged):
    path, ids = damaged
    exp = load_experiment(path)
    trials = {t.trial_id: t for t in exp.trials}
    assert set(trials) == set(ids.values())
    table = leaderboard(exp).set_index("trial")
    expected = {"finished": "finished", "stopped": "stopped early", "errored": "errored", "interrupted": "interrupted"}
    assert {table.loc[ids[k], "status"] for k in expected} == set(expected.values())
    for role, status in expected.items():
        assert table.loc[ids[role], "status"] == status, role
    assert [table.loc[ids[k], "steps"] for k in expected] == [40, 20, 10, 20]
    fids = list(leaderboard(exp)["fid"])
    scored = fids[:3]  # best first; the errored trial has only its untrained reading, a reference: no result, last
    assert scored == sorted(scored) and all(f > 0 for f in scored) and math.isnan(fids[3])
    assert table.loc[ids["errored"], "untrained"] == trials[ids["errored"]].results[0]["fid"] > max(scored)
    assert exp.best_of(trials[ids["errored"]]) is None
    assert Path(table.loc[ids["finished"], "checkpoint"]).parent.name == ids["finished"]
    assert table.loc[ids["errored"], "checkpoint"] == "" and table.loc[ids["interrupted"], "checkpoint"] == ""
    assert "non-finite at step 11" in trials[ids["errored"]].error
    # a RUNNING trial is running while it reports, interrupted once its reports stop
    gone = trials[ids["interrupted"]]
    last = gone.results[-1]["timestamp"]
    assert gone.status(40, now=last + 5) == "running" and gone.status(40, now=last + 3600) == "interrupted"
    # curves: losses every 10 steps, FID at every evaluation (step 0 = untrained), NaN skipped
    finished = trials[ids["finished"]]
    steps, values = finished.curve("loss_g")
    assert steps == [10, 20, 30, 40] and all(v > 0 for v in values)
    assert finished.curve("fid")[0] == [0, 20, 40] and trials[ids["stopped"]].curve("fid")[0] == [0, 20]
    assert finished.curve("fid")[1][0] > min(finished.curve("fid")[1])  # training improved on the untrained model
    logged, evaluated = reported_keys(exp)
    assert {"loss_g", "loss_d"} <= set(logged) and {"fid", "kid"} <= set(evaluated) and "fid" not in logged


def test_sweep_writes_its_page_and_bad_input_is_one_line(sweep, tmp_path):
    from trainables.models import get_family

    page = (sweep / "dashboard.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert get_family("dcgan").description in page  # the sweep's page has the family's labels
    assert "classifier-digits" in page and "--resume" in page
    proc = run_cli("dashboards.build", str(tmp_path))
    assert_one_line_error(proc, "is not an experiment directory")


def test_several_experiments_without_out_go_to_a_comparison_page_here(sweep, damaged, tmp_path):
    path, _ = damaged
    own = (sweep / "dashboard.html").read_bytes()
    proc = run_cli("dashboards.build", str(sweep), str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = tmp_path / "comparison.html"
    assert proc.stdout.strip() == str(page)
    assert "real vs mixed" in page.read_text()
    assert (sweep / "dashboard.html").read_bytes() == own and not (path / "dashboard.html").exists()
    # one experiment: its own page, as before
    proc = run_cli("dashboards.build", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(path / "dashboard.html") and "mixed" in (path / "dashboard.html").read_text()


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium and chromium-driver are missing (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--enable-unsafe-swiftshader", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_page_renders_in_headless_chromium(sweep, damaged, tmp_path):
    path, ids = damaged
    out = build([path, sweep], tmp_path / "compare.html", top=2)
    assert out.stat().st_size < 15e6
    driver = _browser()
    try:
        start = time.time()
        driver.get(out.as_uri())
        while not driver.execute_script("return window.dashboardReady === true"):
            assert time.time() - start < 90, "the page did not finish drawing its figures"
            time.sleep(0.1)
        loaded = time.time() - start
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors

        # every figure drawn, with the traces its JSON holds, and SVG or WebGL output
        plots = driver.execute_script("""
            return Array.from(document.querySelectorAll('div.lazy-plot')).map(function (gd) {
              var spec = JSON.parse(document.querySelector('script[data-for="' + gd.id + '"]').textContent);
              return {id: gd.id, drawn: gd.classList.contains('js-plotly-plot'), traces: (gd.data || []).length,
                      expected: spec.data.length, names: (gd.data || []).map(function (t) { return t.name; }),
                      svg: gd.querySelectorAll('.main-svg').length, points: gd.querySelectorAll('.scatterlayer .trace').length};
            });""")
        by_id = {p["id"]: p for p in plots}
        for section in ("e0", "e1"):
            for name in ("losses", "objective", "metrics", "parallel", "scatter", "importance"):
                assert f"{section}-{name}" in by_id, (section, name, sorted(by_id))
        assert {"cmp-0", "cmp-1"} <= set(by_id)  # the comparison of the two experiments
        for p in plots:
            assert p["drawn"] and p["traces"] == p["expected"] > 0 and p["svg"] > 0, p
        assert by_id["e0-losses"]["points"] >= 4 and by_id["e0-objective"]["points"] >= 3
        markers = set(by_id["e0-objective"]["names"])
        assert {"stopped by the scheduler", "errored", "interrupted", "best checkpoint", "untrained (reference)"} <= markers, markers
        # a line per trial with a score of a trained model (the errored one has only its untrained reading), and the colorbar
        assert by_id["e0-parallel"]["traces"] == (len(ids) - 1) + 1

        # sample grids decoded: the best 2 checkpoints and the best trial's checkpoints over time, per experiment
        widths = driver.execute_script("return Array.from(document.images).map(function (i) { return i.naturalWidth; })")
        assert len(widths) >= 2 * (2 + 1) and all(w > 0 for w in widths), widths

        def shown_ids(fig: str) -> set:
            return set(driver.execute_script(f"""
                var ids = [];
                document.getElementById('{fig}').data.forEach(function (t) {{
                  if (t.visible !== false && Array.isArray(t.customdata)) ids = ids.concat(t.customdata);
                }});
                return ids.filter(function (x) {{ return x !== null; }});"""))

        def click_row(trial_id: str) -> None:
            row = driver.find_element("css selector", f'#e0 tr[data-trial="{trial_id}"]')
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
            row.click()

        everyone = shown_ids("e0-objective")
        assert set(ids.values()) <= everyone
        # one trial: pick it in the selector, then clicking its leaderboard row shows all again
        driver.execute_script(f"""var s = document.querySelector('#e0 select.show'); s.value = '{ids["stopped"]}';
                                  s.dispatchEvent(new Event('change', {{bubbles: true}}));""")
        assert shown_ids("e0-objective") == {ids["stopped"]} and shown_ids("e0-losses") == {ids["stopped"]}
        click_row(ids["stopped"])
        assert shown_ids("e0-objective") == everyone
        click_row(ids["finished"])
        assert shown_ids("e0-losses") == {ids["finished"]}
        assert driver.execute_script("return document.querySelector('#e0 select.show').value") == ids["finished"]
        # smoothing changes the curves; the log box switches the training curves' axes
        raw = driver.execute_script("return document.getElementById('e0-losses').data.map(function (t) { return t.y; })")
        driver.execute_script("""var r = document.querySelector('#e0 input.smooth'); r.value = '0.9';
                                 r.dispatchEvent(new Event('input', {bubbles: true}));""")
        smoothed = driver.execute_script("return document.getElementById('e0-losses').data.map(function (t) { return t.y; })")
        assert smoothed != raw
        driver.find_element("css selector", "#e0 input.logy").click()
        assert driver.execute_script("return document.getElementById('e0-losses').layout.yaxis.type") == "log"
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]

        artifacts = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.set_window_size(1400, min(16000, driver.execute_script("return document.body.scrollHeight")))
        shot = artifacts / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"\ndashboard: {out.stat().st_size / 1e6:.1f} MB, all figures drawn {loaded:.1f} s after opening; "
              f"screenshot {shot}")
    finally:
        driver.quit()


def test_a_running_sweep_rebuilds_a_live_page_that_stops_reloading_when_it_ends(ray_address, tmp_path):
    (tmp_path / "tiny.toml").write_text(SPACE)
    output = tmp_path / "driver.log"
    proc = start_cli("orchestrator.sweep", "dcgan", "--dataset", "digits", "--space", str(tmp_path / "tiny.toml"),
                     "--trials", "2", "--max-steps", "120", "--eval-every", "40", "--log-every", "20", "--eval-samples",
                     "300", "--scheduler", "fifo", "--max-concurrent", "1", "--dashboard-every", "1", "--storage",
                     str(tmp_path), "--name", "live", "--address", ray_address, "--seed", "0", output=output)
    page, seen = tmp_path / "live" / "dashboard.html", set()
    try:
        while proc.poll() is None:  # the pages built while it runs
            text = page.read_text() if page.exists() else ""
            if match := re.search(r"running: (\d+) of 2 trials, (\d+) done, updated [\d:]{8}", text):
                assert 'data-reload="30"' in text
                seen.add(match.groups())
            time.sleep(0.2)
    finally:
        proc.kill()
    out = output.read_text()
    assert proc.returncode == 0, out[-3000:]
    # the live page before any trial ended (how often it is rebuilt depends on the machine's load)
    assert ("0", "0") in seen or ("1", "0") in seen, (seen, out[-3000:])
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("[sweep] dashboard:"))
    assert "rebuilt as the sweep runs" in lines[first] and str(page) in lines[first]
    assert first < next(i for i, line in enumerate(lines) if "trials done" in line)
    final = page.read_text()  # the final page: no reload, no running line
    assert "data-reload" not in final and "running:" not in final
    assert len(load_experiment(tmp_path / "live").trials) == 2


def _wait_drawn(driver, reloaded: bool = False, limit: float = 60) -> None:
    """Until the page (after a reload, where `reloaded`: the old one's marker is gone) has drawn every figure."""
    start = time.time()
    while not driver.execute_script("return window.dashboardReady === true && window.oldPage !== true"
                                    if reloaded else "return window.dashboardReady === true"):
        assert time.time() - start < limit, "the page did not (re)load and draw its figures"
        time.sleep(0.1)


def test_a_live_page_reloads_keeping_the_readers_place_and_the_final_one_stays(damaged, tmp_path):
    from dashboards.live import LiveState

    path, ids = damaged
    out = build([path], tmp_path / "live.html", live=LiveState(total_trials=6, reload_seconds=3))
    driver = _browser()
    place = """var s = document.querySelector('#e0 select.show'), r = document.querySelector('#e0 input.smooth');
               return [s.value, r.value, document.querySelector('#e0 input.logy').checked, window.scrollY,
                       document.querySelector('nav.top').textContent];"""
    shown = """var ids = [];
               document.getElementById('e0-objective').data.forEach(function (t) {
                 if (Array.isArray(t.customdata)) ids = ids.concat(t.customdata.filter(function (x) { return x; }));
               });
               return Array.from(new Set(ids));"""
    try:
        driver.get(out.as_uri())
        _wait_drawn(driver)
        assert "running: 4 of 6 trials" in driver.execute_script(place)[4]
        driver.execute_script(f"""var s = document.querySelector('#e0 select.show'); s.value = '{ids["finished"]}';
                                  s.dispatchEvent(new Event('change', {{bubbles: true}}));
                                  var r = document.querySelector('#e0 input.smooth'); r.value = '0.5';
                                  r.dispatchEvent(new Event('input', {{bubbles: true}}));
                                  document.querySelector('#e0 input.logy').click();
                                  window.scrollTo(0, 1200); window.oldPage = true;""")
        _wait_drawn(driver, reloaded=True)  # it reloads itself after 3 s
        pick, smooth, log, scroll, nav = driver.execute_script(place)
        assert (pick, smooth, log) == (ids["finished"], "0.5", True) and abs(scroll - 1200) < 50, (pick, smooth, log, scroll)
        driver.execute_script("document.getElementById('e0-objective').scrollIntoView()")
        assert driver.execute_script(shown) == [ids["finished"]]
        # the sweep ends: its final page replaces the live one, keeps the place and never reloads
        build([path], out)
        driver.execute_script("window.oldPage = true")
        _wait_drawn(driver, reloaded=True)
        pick, smooth, log, scroll, nav = driver.execute_script(place)
        assert "running:" not in nav and (pick, smooth, log) == (ids["finished"], "0.5", True)
        assert driver.execute_script("return document.body.dataset.reload === undefined")
        driver.execute_script("window.oldPage = true")
        time.sleep(4)
        assert driver.execute_script("return window.oldPage === true")  # not reloaded
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
