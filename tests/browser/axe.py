"""axe-core (npm, MPL-2.0) in the browser tests: WCAG 2.1 A and AA rules run inside the page.

The package is fetched once with `npm pack` into the samples cache (never committed, like
`make models`); the page's CSP forbids inline scripts, so contexts that run it are made with
`bypass_csp=True`."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

from schizodot import samples

AXE_PACKAGE = "axe-core@4.14.1"


def axe_script() -> Path:
    folder = samples.cache_dir() / "axe-core-4.14.1"
    script = folder / "package" / "axe.min.js"
    if not script.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(folder), AXE_PACKAGE], check=True,
                       cwd=folder, timeout=180, capture_output=True)
        with tarfile.open(next(folder.glob("axe-core-*.tgz"))) as archive:
            archive.extract("package/axe.min.js", folder, filter="data")
    return script


def violations(page) -> list[str]:
    """axe's WCAG 2.1 A/AA violations on the page as it stands, one line per rule with its nodes."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_script()))
    found = page.evaluate("""async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}))
        .violations.map(v => v.id + ' (' + v.nodes.length + '): ' + v.nodes.slice(0, 4).map(n => n.target.join(' ')).join(' | '))""")
    return list(found)
