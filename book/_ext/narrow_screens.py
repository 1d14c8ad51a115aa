"""Let wide content scroll sideways inside its own box on a phone, instead of being cut.

On a 390-pixel-wide screen a table, a long line of output (the harness's reports) or a
display equation is wider than the text column. The theme clips some of them at the
column's edge, so the end of the line cannot be read at all. ``static/narrow-screens.css``
gives each such block its own horizontal scroll bar; the page itself never scrolls
sideways.

This extension adds its ``static/`` folder to ``html_static_path`` and links the style
sheet from every page. (A root ``_static/`` folder is avoided on purpose: Jupyter Book adds
every ``.js`` file found there to every page.)

Registered in ``_config.yml``::

    sphinx:
      local_extensions:
        narrow_screens: book/_ext
"""

from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx

STATIC = Path(__file__).parent / "static"
STYLESHEET = "narrow-screens.css"


def _add_static_path(app: Sphinx, config) -> None:
    if str(STATIC) not in config.html_static_path:
        config.html_static_path.append(str(STATIC))


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _add_static_path)
    app.add_css_file(STYLESHEET)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
