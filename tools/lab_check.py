"""Every notebook run top to bottom in JupyterLab in a real (headless) browser, as a user would.

`make lab-check` runs it on the smoke profile's copy (.profiles/smoke, made by `make repro PROFILE=smoke`), so the
notebooks train and plot at smoke size and the working tree's results stay as they are. For each notebook it
opens the file in JupyterLab, runs all cells through JupyterLab's own command (`notebook:run-all-cells`), and
then reads the notebook's outputs and the page:

- errors: cells whose output is an exception;
- widget outputs: progress bars sent as Jupyter widgets (tqdm.auto with ipywidgets), and how many of them the
  page actually drew as progress-bar elements;
- text fallbacks: "IProgress not found" warnings (tqdm falling back to text because the widgets are missing).

A notebook passes with no error and no text fallback, and every notebook that shows progress draws it as
widgets. Exit 1 if any notebook fails. Needs Chromium and its driver (Debian: `apt-get install chromium
chromium-driver`) and selenium (`make lab-check` installs it into .venv-browser, outside the project's lock).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# JupyterLab's own commands, through the application object `--expose-app-in-browser` puts on `window`.
OPEN_AND_RUN = """
const [path, done] = [arguments[0], arguments[arguments.length - 1]];
const app = window.jupyterapp;
(async () => {
  await app.restored;  // the plugins that register the commands are active
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await panel.context.ready;
  await panel.sessionContext.ready;
  const t0 = performance.now();
  await app.commands.execute('notebook:run-all-cells');
  while (panel.sessionContext.session?.kernel?.status !== 'idle') { await new Promise(r => setTimeout(r, 200)); }
  await new Promise(r => setTimeout(r, 1000));  // the last widget messages reach the page
  const cells = [];
  for (let i = 0; i < panel.content.model.cells.length; i++) {
    const cell = panel.content.model.cells.get(i);
    if (cell.type === 'code') cells.push(cell.outputs.toJSON());
  }
  const drawn = panel.node.querySelectorAll('.widget-progress, .widget-hprogress, progress').length;
  const seconds = (performance.now() - t0) / 1000;
  await panel.sessionContext.shutdown();
  panel.context.model.dirty = false;
  panel.dispose();
  done(JSON.stringify({cells, drawn, seconds}));
})().catch(e => done(JSON.stringify({failed: String(e)})));
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(jupyter: str, root: Path, port: int, token: str) -> subprocess.Popen:
    env = {**os.environ, "REPLICATION_ROOT": str(root), "PYTHONPATH": str(root)}
    cmd = [
        jupyter,
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--expose-app-in-browser",
        "--allow-root",
    ]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    for _ in range(120):
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}: run `{' '.join(cmd)}` to see why")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("jupyter lab did not answer within 60 s")


def browser(chromium: str, driver: str):
    from selenium import webdriver  # in .venv-browser only (see the module's docstring)
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(driver))


def summarise(name: str, raw: dict) -> dict:
    """The check's verdict for one notebook from its outputs (as nbformat JSON) and the page's count."""
    if "failed" in raw:
        return {"notebook": name, "ok": False, "why": raw["failed"]}
    outputs = [o for cell in raw["cells"] for o in cell]
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]
    widgets = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    text = ["".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream"]
    fallbacks = sum(t.count("IProgress not found") for t in text)
    ok = not errors and not fallbacks and (widgets == 0 or raw["drawn"] > 0)
    return {
        "notebook": name,
        "ok": ok,
        "seconds": round(raw["seconds"], 1),
        "errors": errors,
        "widget_outputs": widgets,
        "progress_bars_drawn": raw["drawn"],
        "text_fallbacks": fallbacks,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path(".profiles/smoke"), help="the project copy to run in")
    ap.add_argument("--jupyter", default=".venv/bin/jupyter")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--driver", default="/usr/bin/chromedriver")
    ap.add_argument("--only", nargs="*", help="notebook names (default: every notebook, in order)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per notebook")
    ap.add_argument(
        "--keep-state",
        action="store_true",
        help="keep the copy's training checkpoints and image cache (by default they are deleted first, so every "
        "notebook trains and generates as on a first run and shows its progress bars)",
    )
    a = ap.parse_args(argv)
    root = a.root.resolve()
    if not (root / "params.yaml").exists():
        print(f"{root} is not a project copy: run `make repro PROFILE=smoke` first", file=sys.stderr)
        return 2
    if not a.keep_state:
        if (root / ".git").exists():
            print(f"{root} is a git checkout, not a profile copy: pass --keep-state to run there", file=sys.stderr)
            return 2
        for state in (".checkpoints", ".cache"):
            shutil.rmtree(root / state, ignore_errors=True)
    for exe in (a.chromium, a.driver):
        if not Path(exe).exists():
            print(f"{exe} not found: install Chromium and its driver (apt-get install chromium chromium-driver)")
            return 2
    notebooks = sorted(p.name for p in (root / "notebooks").glob("*.ipynb"))
    if a.only:
        notebooks = [n for n in notebooks if n in a.only or Path(n).stem in a.only]
    port, token = free_port(), secrets.token_hex(16)
    lab = start_lab(str(Path(a.jupyter).resolve()), root, port, token)
    results = []
    try:
        drv = browser(a.chromium, a.driver)
        try:
            drv.set_script_timeout(a.timeout)
            drv.get(f"http://127.0.0.1:{port}/lab?token={token}")
            for _ in range(240):
                if drv.execute_script("return !!(window.jupyterapp && window.jupyterapp.shell)"):
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError("JupyterLab's page did not start within 120 s")
            for name in notebooks:
                raw = json.loads(drv.execute_async_script(OPEN_AND_RUN, f"notebooks/{name}"))
                r = summarise(name, raw)
                results.append(r)
                print(json.dumps(r), flush=True)
        finally:
            drv.quit()
    finally:
        lab.terminate()
        lab.wait(timeout=30)
    bad = [r["notebook"] for r in results if not r["ok"]]
    shown = sum(r.get("widget_outputs", 0) > 0 for r in results)
    print(
        f"{len(results) - len(bad)}/{len(results)} notebooks ran top to bottom in JupyterLab without an error or a "
        f"text fallback; {shown} of them drew their progress as widgets"
        + (f"; failed: {', '.join(bad)}" if bad else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
