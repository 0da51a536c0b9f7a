"""Sphinx extension of the course site: a note above each saved ipywidgets panel on how to run it live.

A static page keeps the widgets' state as it was when the notebook was executed: the sliders are drawn
(by @jupyter-widgets/html-manager) in their default positions and can be moved, but no Python runs behind
them, so nothing is recomputed. Each widget output that holds a control (a slider, a checkbox, a menu, a
button, ...) therefore gets a note that says so, with the command that runs the notebook live; a widget
that only shows something (a progress bar, text, an output area) gets none.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from docutils import nodes

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: widget models that only display: containers, text, progress bars, output areas, media
PASSIVE = {"Box", "HBox", "VBox", "GridBox", "HTML", "HTMLMath", "Label", "Output", "Image", "Audio", "Video"}
PASSIVE |= {"FloatProgress", "IntProgress", "Valid", "Accordion", "Tab", "Stack"}


def _is_control(name: str) -> bool:
    name = name.removesuffix("Model")
    return not (name in PASSIVE or name.endswith("Style") or name == "Layout")


def widget_state(path) -> dict:
    """``{model_id: {"model_name": ..., "state": ...}}`` saved in a notebook (empty when none)."""
    try:
        metadata = json.loads(path.read_text())["metadata"]
    except (OSError, ValueError, KeyError):
        return {}
    return metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def has_control(model_id: str, state: dict, seen: set | None = None) -> bool:
    """Whether the widget ``model_id`` or any widget it holds is a control a reader would want to move."""
    seen = set() if seen is None else seen
    model = state.get(model_id)
    if model is None or model_id in seen:
        return False
    seen.add(model_id)
    if _is_control(model.get("model_name", "")):
        return True
    children = model.get("state", {}).get("children", [])
    return any(has_control(child.removeprefix("IPY_MODEL_"), state, seen) for child in children)


def live_note(docname: str) -> nodes.admonition:
    notebook = f"notebooks/{docname.rsplit('/', 1)[-1]}.ipynb"
    note = nodes.admonition(classes=["tip", "course-live-note"])
    note += nodes.title(text="A live panel, shown here as it was saved")
    para = nodes.paragraph()
    para += nodes.Text(
        "These controls are drawn in their default state from the notebook's saved widget state: in this page "
        "no Python runs behind them, so moving a slider recomputes nothing. To use the panel live, run "
    )
    para += nodes.literal(text="make lab")
    para += nodes.Text(" in the course's folder, open ")
    para += nodes.literal(text=notebook)
    para += nodes.Text(" and run its cells.")
    note += para
    return note


def add_live_notes(app, doctree: nodes.document) -> None:
    views = [raw for raw in doctree.findall(nodes.raw) if WIDGET_VIEW in raw.astext()]
    if not views:
        return
    state = widget_state(app.env.doc2path(app.env.docname))
    for raw in views:
        found = re.search(r'"model_id":\s*"([^"]+)"', raw.astext())
        if found and has_control(found.group(1), state):
            raw.parent.insert(raw.parent.index(raw), live_note(app.env.docname))


def setup(app):
    app.connect("doctree-read", add_live_notes)
    # a new env_version makes Sphinx re-read every page: so does any change to this file
    env_version = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8], 16)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1", "env_version": env_version}
