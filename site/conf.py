"""Sphinx configuration of the course website (`make site`; sources staged by site/build.py).

Sphinx + MyST-NB + the Book theme: pure Python, installed from the lock, builds offline. Everything the
pages load at view time is served from the site itself: the widgets' HTML manager and MathJax are vendored
under ``_static/vendor`` (site/vendor.json), the theme ships its own fonts and scripts.
"""

project = "UCLSER course"
author = "The UCLSER course contributors"
copyright = "the UCLSER course contributors, MIT licence"
html_title = "UCLSER course"

extensions = ["myst_nb", "sphinx.ext.mathjax", "sphinx.ext.githubpages", "course_site"]
root_doc = "index"
exclude_patterns = ["course-map.md"]  # included into index.md

# MyST: $...$ maths, ::: fences, GitHub-style heading anchors (the notebooks link to docs/method.md#5-views-...)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 4

# notebooks: the executed copies of `make course`, rendered as they are (never re-executed here)
nb_execution_mode = "off"
nb_merge_streams = True
# the widgets' saved state is drawn by @jupyter-widgets/html-manager, from this site (not a CDN, no require.js)
nb_ipywidgets_js = {"vendor/html-manager/embed.js": {}}
# MathJax 3 from this site (Sphinx's default is a CDN)
mathjax_path = "vendor/mathjax/tex-mml-chtml.js"

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["course.css"]
# before MathJax and the widgets' manager: MathJax 2's Hub.Queue, which the manager calls, on MathJax 3
html_js_files = [("mathjax-hub-shim.js", {"priority": 200})]
html_last_updated_fmt = None
html_favicon = "_static/favicon.png"
html_copy_source = True  # the download button offers each page's source: the executed notebook (.ipynb)
html_show_sourcelink = False
html_context = {"default_mode": "auto"}  # light or dark as the reader's system says
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
    "launch_buttons": {},
    "navbar_persistent": [],  # the search box is in the sidebar: no second one in a header bar
}
