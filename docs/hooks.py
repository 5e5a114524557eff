"""MkDocs hook (mkdocs.yml `hooks:`): MathJax for the rendered notebooks, served from the site itself.

The notebooks' markdown is LaTeX ($Z^I$, $$…$$). mkdocs-jupyter renders it with MathJax 2, which it
would otherwise fetch from a CDN; the site is meant to read offline (and is tested offline), so the
MathJax that the PyPI package jupyter-server-mathjax ships is copied to build/site/assets/mathjax/
and mkdocs.yml points the notebook pages at it (`custom_mathjax_url`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

# Not needed by the TeX-AMS-MML_HTMLorMML-full configuration in English: about a third of the files.
_SKIP = shutil.ignore_patterns("localization", "SVG", "*.md")


def on_post_build(config, **kwargs) -> None:
    try:
        import jupyter_server_mathjax
    except ImportError as e:          # the docs extra installs it; without it the notebooks' maths stays raw
        raise RuntimeError("the documentation needs jupyter-server-mathjax: pip install -e '.[docs]'") from e
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(static, Path(config["site_dir"]) / "assets" / "mathjax", ignore=_SKIP, dirs_exist_ok=True)
