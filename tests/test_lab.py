"""``make lab``: JupyterLab with the project's configuration opens the chapters as notebooks.

A JupyterLab server is started on a free localhost port with ``jupyter/jupyter_lab_config.py``
(what ``make lab`` uses), on a copy of ``book/`` so that nothing the server or the page might
save touches the sources. Then:

- its contents API reads ``book/02-dense.md`` as a notebook with the chapter's cells;
- the Markdown default viewer is "Jupytext Notebook" (a double-click opens a notebook);
- a kernel started for the chapter runs its first code cell;
- with Chromium (Debian's ``chromium``) and the ``playwright`` package, the JupyterLab page
  opens the chapter and shows its notebook cells; a screenshot is kept in
  ``_build/lab/02-dense.png``.

Without JupyterLab (the ``lab`` extra) or Chromium the tests are skipped, unless
``CNN_LESSONS_LAB_TEST=require`` (as in CI), where a missing piece fails them.
"""

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = "book/02-dense.md"
CHROMIUM = "/usr/bin/chromium"
REQUIRED = os.environ.get("CNN_LESSONS_LAB_TEST") == "require"
START_TIMEOUT = 180          # seconds: a busy machine takes a while to import JupyterLab


def missing(what: str):
    """Skip, or fail where the lab tests are required."""
    if REQUIRED:
        pytest.fail(f"{what} (CNN_LESSONS_LAB_TEST=require)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab server: ``url``, ``token``, and ``api(path, method, body)``."""

    def __init__(self, url, token, process):
        self.url, self.token, self.process = url, token, process

    def api(self, path, method="GET", body=None, timeout=60):
        request = urllib.request.Request(
            f"{self.url}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    try:
        import jupyterlab  # noqa: F401
        import jupytext  # noqa: F401
    except ImportError:
        missing("JupyterLab or jupytext is not installed (pip install -e '.[lab]')")
    tmp = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "book", tmp / "book")
    port, token = free_port(), uuid.uuid4().hex
    env = {**os.environ,
           # the user's own Jupyter settings and files stay out of the test
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "run"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "IPYTHONDIR": str(tmp / "ipy"),
           "MPLBACKEND": "Agg"}
    env.pop("JUPYTER_CONFIG_PATH", None)
    command = [sys.executable, "-m", "jupyterlab",
               f"--config={ROOT / 'jupyter' / 'jupyter_lab_config.py'}",
               f"--ServerApp.root_dir={tmp}", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", "--no-browser"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = open(tmp / "server.log", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               cwd=tmp)
    server = Lab(f"http://127.0.0.1:{port}", token, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {process.returncode}:\n"
                            + (tmp / "server.log").read_text()[-3000:])
            try:
                server.api("/api/status", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {START_TIMEOUT} s:\n"
                                + (tmp / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        server.tmp = tmp
        yield server
    finally:
        try:
            server.api("/api/shutdown", method="POST", timeout=10)
            process.wait(timeout=30)
        except Exception:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def code_cells_of(path: Path) -> list[str]:
    """The sources of the ``{code-cell}`` blocks of a MyST chapter, read independently of
    jupytext: the lines between an opening fence and the closing fence, less the cell's
    option lines (``:tags:`` or a ``---`` YAML block) at the top."""
    cells, current, fence = [], None, None
    for line in path.read_text().splitlines():
        if current is None:
            match = re.match(r"^(`{3,})\{code-cell\}", line)
            if match:
                current, fence = [], match.group(1)
        elif line.rstrip() == fence:
            cells.append(current)
            current = None
        else:
            current.append(line)
    sources = []
    for lines in cells:
        if lines and lines[0] == "---":
            lines = lines[lines.index("---", 1) + 1:]
        while lines and lines[0].startswith(":"):
            lines = lines[1:]
        sources.append("\n".join(lines).strip("\n"))
    return sources


def test_contents_api_reads_the_chapter_as_a_notebook(lab):
    model = lab.api(f"/api/contents/{CHAPTER}?type=notebook&content=1")
    assert model["type"] == "notebook" and model["format"] == "json"
    cells = model["content"]["cells"]
    code = [c["source"].strip("\n") for c in cells if c["cell_type"] == "code"]
    assert code == code_cells_of(ROOT / CHAPTER)
    assert len(code) > 10
    markdown = "".join(c["source"] for c in cells if c["cell_type"] == "markdown")
    assert "# The dense layer" in markdown
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"


def test_markdown_files_open_as_notebooks_by_default(lab):
    settings = lab.api("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    viewers = settings["schema"]["properties"]["defaultViewers"]["default"]
    assert viewers["markdown"] == viewers["myst"] == "Jupytext Notebook"
    # and the Jupytext Notebook viewer is there to be the default
    page = urllib.request.urlopen(
        urllib.request.Request(f"{lab.url}/lab", headers={"Authorization": f"token {lab.token}"}),
        timeout=60).read().decode()
    assert "jupyterlab-jupytext" in page


async def run_in_kernel(lab, kernel_id: str, code: str, timeout=120) -> tuple[dict, str]:
    """Execute ``code`` in the kernel through the server's websocket: ``(reply, stdout)``."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect
    ws_url = lab.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(
        ws_url, headers={"Authorization": f"token {lab.token}"}))
    msg_id = uuid.uuid4().hex
    conn.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    reply, stdout, idle = None, [], False
    deadline = time.monotonic() + timeout
    while reply is None or not idle:
        raw = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
        assert raw is not None, "the kernel's websocket closed"
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "execute_reply":
            reply = msg["content"]
        elif kind == "stream" and msg["content"]["name"] == "stdout":
            stdout.append(msg["content"]["text"])
        elif kind == "error":
            stdout.append("\n".join(msg["content"]["traceback"]))
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    conn.close()
    return reply, "".join(stdout)


def test_a_kernel_runs_a_cell_of_the_chapter(lab):
    session = lab.api("/api/sessions", method="POST", body={
        "path": CHAPTER, "name": "02-dense.md", "type": "notebook",
        "kernel": {"name": "python3"}})
    kernel = session["kernel"]["id"]
    try:
        first = code_cells_of(ROOT / CHAPTER)[0]
        assert "from cnn_lessons" in first
        reply, out = asyncio.run(run_in_kernel(lab, kernel, first))
        assert reply["status"] == "ok", out
        reply, out = asyncio.run(run_in_kernel(
            lab, kernel, "import os\nprint(os.getcwd())\n"
                         "print(Dense(3, 2, rng=rng).forward(np.ones((4, 3))).shape)"))
        assert reply["status"] == "ok", out
        cwd, shape = out.split("\n")[:2]
        assert Path(cwd) == lab.tmp / "book"          # the chapter's folder, as in the book
        assert shape == "(4, 2)"
    finally:
        lab.api(f"/api/sessions/{session['id']}", method="DELETE")


def test_the_page_shows_the_chapter_as_a_notebook(lab):
    if not os.path.exists(CHROMIUM):
        missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[lab,browser]')")
    n_cells = len(lab.api(f"/api/contents/{CHAPTER}?type=notebook&content=1")
                  ["content"]["cells"])
    shot = ROOT / "_build" / "lab" / "02-dense.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # /lab/tree/<path> opens the file with its default viewer, as a double-click does
            page.goto(f"{lab.url}/lab/tree/{CHAPTER}?token={lab.token}", timeout=120_000)
            page.wait_for_function(
                "n => document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length >= n",
                arg=n_cells, timeout=180_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-MarkdownCell h1", state="visible",
                                   timeout=60_000)
            # the chapter's kernel has started: the status bar says so
            page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(
                timeout=180_000)
            page.screenshot(path=str(shot))
            tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current "
                               ".lm-TabBar-tabLabel").inner_text()
            code_cells = page.locator(".jp-NotebookPanel .jp-CodeCell").count()
            first_heading = page.locator(".jp-NotebookPanel .jp-MarkdownCell h1").first.inner_text()
        finally:
            browser.close()
    assert tab == "02-dense.md"
    assert code_cells == len(code_cells_of(ROOT / CHAPTER))
    assert first_heading.startswith("The dense layer")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
