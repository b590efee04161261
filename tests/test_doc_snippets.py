"""Every Python snippet in README.md and docs/*.md runs as written.

The ```` ```python ```` blocks of a page run in order, in one namespace (as a reader
follows the page), in an empty temporary working directory, on the TensorFlow
backend. Two markers, both invisible on the rendered page, adjust this:

- A block whose first line is `# not run: <reason>` is skipped; the reason says what
  it needs that a test machine lacks (a TF Serving server, a GPU, the internet). Keep
  these few.
- An HTML comment `<!-- snippet-setup ... -->` holds Python that runs before the
  next block without being shown, to create what the reader is assumed to have,
  such as `data/train.csv`. Setup code sees `REPO`, the repository root, so it can
  use the test fixtures.

Two worker processes (`KAF_SNIPPETS_PARALLEL`) share the pages; each imports TensorFlow once and runs its pages
one after the other, each page in a fresh namespace and its own working directory.
"""

import concurrent.futures
import glob
import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
BLOCK = re.compile(r"^```python[^\n]*\n(?P<code>.*?)^```|^<!-- snippet-setup\n(?P<setup>.*?)^-->", re.S | re.M)
NOT_RUN = re.compile(r"^#\s*not run:\s*(?P<reason>\S.*)$")
PARALLEL = max(1, int(os.environ.get("KAF_SNIPPETS_PARALLEL", "2")))
TIMEOUT_S = 900  # per worker, for all its pages

# Runs pages one after the other in this process, each in a fresh namespace and its own working directory
# (importing TensorFlow once per worker rather than once per page); prints one JSON line per page.
DRIVER = r'''
import json, os, sys, time, traceback
for page in json.load(open(sys.argv[1])):
    os.chdir(page["cwd"])
    namespace = {"__name__": "__main__", "REPO": sys.argv[2]}
    result = {"page": page["page"], "ok": True, "ran": [], "error": ""}
    started = time.perf_counter()
    for block in page["blocks"]:
        try:
            exec(compile(block["code"], block["where"], "exec"), namespace)
        except BaseException:
            result.update(ok=False, error=block["where"] + "\n" + traceback.format_exc())
            break
        result["ran"].append(block["where"])
    result["seconds"] = time.perf_counter() - started
    print("\nPAGE-RESULT " + json.dumps(result), flush=True)  # on its own line, after any progress bar
'''


def snippets(page):
    """`(runnable, skipped)`: runnable blocks and setups as dicts (`where`, `code`, `setup`); skipped as
    `(where, reason)`."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        text = f.read()
    runnable, skipped = [], []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        code = match.group("code") if match.group("code") is not None else match.group("setup")
        where = f"{page}:{line}"
        first = code.lstrip("\n").splitlines()[0] if code.strip() else ""
        skip = NOT_RUN.match(first)
        if match.group("code") is not None and skip:
            skipped.append((where, skip.group("reason")))
            continue
        runnable.append({"where": where, "code": code, "setup": match.group("setup") is not None})
    return runnable, skipped


PAGES_WITH_CODE = [p for p in PAGES if snippets(p)[0]]


def _cost(page):
    """A rough guess of a page's run time, to share the pages fairly between the workers."""
    code = "".join(b["code"] for b in snippets(page)[0])
    return 1 + 4 * code.count(".fit(") + 4 * code.count("export_saved_model(") + code.count("load_encoder(")


def _run_pages(pages, workdir):
    """Run `pages` in one subprocess; return page -> result (`ok`, `error`, `seconds`, `blocks`)."""
    plan = []
    for page in pages:
        cwd = os.path.join(workdir, page.replace("/", "_").replace(".md", ""))
        os.makedirs(cwd)
        plan.append({"page": page, "cwd": cwd, "blocks": snippets(page)[0]})
    plan_file = os.path.join(workdir, "snippets.json")
    with open(plan_file, "w", encoding="utf-8") as f:
        json.dump(plan, f)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    try:
        done = subprocess.run([sys.executable, "-c", DRIVER, plan_file, ROOT], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        out, err, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        out, err, code = str(e.stdout or ""), str(e.stderr or ""), "timeout"
    results = {}
    for line in out.splitlines():
        if "PAGE-RESULT " in line:
            result = json.loads(line.split("PAGE-RESULT ", 1)[1])
            results[result["page"]] = result
    for page in pages:
        result = results.setdefault(page, {"ok": False, "seconds": 0.0, "error": f"the worker ended (exit {code}) "
                                           f"before this page finished\n--- stderr\n{err[-5000:]}"})
        result["blocks"] = sum(not b["setup"] for b in snippets(page)[0])
    return results


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    """Every page's result; the pages are shared between `PARALLEL` worker processes."""
    workers = [[] for _ in range(PARALLEL)]
    load = [0] * PARALLEL
    for page in sorted(PAGES_WITH_CODE, key=_cost, reverse=True):
        i = load.index(min(load))
        workers[i].append(page)
        load[i] += _cost(page)
    workers = [w for w in workers if w]
    with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
        parts = pool.map(lambda w: _run_pages(w, str(tmp_path_factory.mktemp("snippets"))), workers)
        results = {page: result for part in parts for page, result in part.items()}
    print("\ndoc snippets (page: blocks, seconds): "
          + ", ".join(f"{p} {r['blocks']}, {r['seconds']:.1f}" for p, r in sorted(results.items())))
    return results


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_page_snippets_run(page, page_runs):
    result = page_runs[page]
    assert result["ok"], f"{page}: a snippet failed at {result['error']}"


def test_skipped_snippets_are_few_and_say_why():
    skipped = [s for page in PAGES for s in snippets(page)[1]]
    runnable = sum(1 for page in PAGES for b in snippets(page)[0] if not b["setup"])
    print(f"\n{runnable} snippets run, {len(skipped)} not run: "
          + "; ".join(f"{where} ({reason})" for where, reason in skipped))
    assert runnable > 3 * len(skipped), skipped
    assert all(len(reason) > 10 for _, reason in skipped), skipped


def test_markers_are_found():
    runnable, skipped = snippets("README.md")
    assert runnable, "README.md: no Python snippet found"
