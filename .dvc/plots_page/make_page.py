"""Write `page.html`, the `dvc plots show` page with vega, vega-lite and vega-embed inlined.

DVC's own page loads them from a CDN, so without internet its curves are silently missing.
`.dvc/config` (`plots.html_template`) points DVC at this page instead. It has no `{scripts}`
placeholder, so DVC adds no CDN tags; `{plot_divs}` and `{refresh_tag}` are DVC's.

Rebuild it from the npm registry (the versions DVC's page asks the CDN for):

    npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
    python .dvc/plots_page/make_page.py vega-5.20.2.tgz vega-lite-5.2.0.tgz vega-embed-6.18.2.tgz

Licences (BSD-3-Clause, and what the builds bundle): LICENSES.md beside this file.
"""

import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).parent
# package name → its browser build inside the npm tarball, in load order (embed needs both)
BUILDS = {
    "vega": "package/build/vega.min.js",
    "vega-lite": "package/build/vega-lite.min.js",
    "vega-embed": "package/build/vega-embed.min.js",
}
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- {names}: inlined from npm (see .dvc/plots_page/make_page.py), no network needed -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""
DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")


def script_of(tarball: Path) -> tuple[str, str]:
    """(name@version, the build's code) of one npm tarball."""
    name, _, version = tarball.name.removesuffix(".tgz").rpartition("-")
    if name not in BUILDS:
        sys.exit(f"error: {tarball}: not one of {', '.join(BUILDS)} (npm pack NAME@VERSION)")
    with tarfile.open(tarball) as archive:
        code = archive.extractfile(BUILDS[name]).read().decode("utf-8")
    # the source map is not shipped: a browser's developer tools would ask the network for it
    code = "\n".join(line for line in code.splitlines() if not line.startswith("//# sourceMap"))
    # inline <script> ends at the first "</script"; DVC fills its placeholders anywhere
    for marker in ("</script", "<!--", *DVC_PLACEHOLDERS):
        if marker in code:
            sys.exit(f"error: {tarball}: its build holds {marker!r}: cannot be inlined")
    return f"{name}@{version}", code


def main(tarballs: list[str]) -> None:
    scripts = dict(script_of(Path(t)) for t in tarballs)
    order = sorted(scripts, key=lambda key: list(BUILDS).index(key.rpartition("@")[0]))
    if [key.rpartition("@")[0] for key in order] != list(BUILDS):
        sys.exit(f"error: give the three tarballs: {', '.join(BUILDS)}")
    tags = "\n".join(f"    <script>{scripts[key]}</script>" for key in order)
    page = PAGE.format(names=", ".join(order), scripts=tags)
    (HERE / "page.html").write_text(page, encoding="utf-8")
    print(f"wrote {HERE / 'page.html'} ({len(page) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1:])
