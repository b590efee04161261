"""The documentation site builds with `mkdocs build --strict`: no broken link or anchor, no page left out of the
navigation, no docstring that does not parse, no public name on the API pages without a docstring
(docs/hooks/check_docstrings.py), and nothing fetched from the network."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_site_builds_strict(tmp_path):
    import importlib.util

    missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
               if importlib.util.find_spec(m.split(".")[0]) is None]
    assert not missing, f"the docs tools are not installed ({missing}): pip install -e '.[dev]'"
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0 and not warnings, done.stderr[-5000:]
    assert (site / "index.html").is_file() and (site / "api" / "layers.html").is_file()
    # The API reference was generated from the docstrings.
    assert "keras_adapterfusion.layers.adapter_fusion.AdapterFusion" in (site / "api" / "layers.html").read_text()
    # Offline: no page loads a script, stylesheet, font or image from another host.
    external = re.compile(r'<(?:script|link|img)\b[^>]*(?:src|href)="(?:https?:)?//', re.I)
    for page in site.rglob("*.html"):
        match = external.search(page.read_text(encoding="utf-8"))
        assert match is None, f"{page.relative_to(site)} loads {match.group(0)!r}"
