"""The project's licence and the third-party table: every runtime dependency of
every image and every model file has an entry, and nothing in the default
deployment forbids commercial or clinical use. (`make check-images` also holds
each built image's installed packages to its section.)"""

from __future__ import annotations

import pytest

from schizodot import licences
from tests.deploy.support import REPO


@pytest.fixture(scope="module")
def table() -> dict[str, dict[str, dict[str, str]]]:
    return licences.parse(licences.TABLE.read_text())


def test_the_project_is_apache_2_licensed():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("spec", licences.IMAGES, ids=lambda spec: spec.name)
def test_every_dependency_of_every_image_has_an_entry(spec, table):
    """A new requirement (or a new dependency of one) fails here until `make licences` runs."""
    needed = set(licences.closure(spec))
    listed = {name for name in table.get(spec.name, {}) if not name.startswith("debian:")}
    assert not needed - listed, (
        f"{spec.name}: no licence entry for {sorted(needed - listed)}: run `make licences`")
    assert not listed - needed, (
        f"{spec.name}: {licences.TABLE.name} lists {sorted(listed - needed)}, which the image no longer "
        "installs: run `make licences`")
    system = {f"debian:{name}" for name in licences.system_packages(spec)}
    assert system == {name for name in table[spec.name] if name.startswith("debian:")}


def test_every_row_names_a_licence_it_can_categorise(table):
    for section, rows in table.items():
        for name, row in rows.items():
            assert row["licence"] and row["licence"] != "UNKNOWN", f"{section}: {name} has no licence"
            assert row["category"] != "unknown", f"{section}: {name}: {row['licence']!r} needs a category"


def test_every_model_file_names_its_licence(table):
    from schizodot.models import MODEL_FILES, NPM_MODEL_FILES, SPLIT_MODEL_FILES

    assert set(table["Model files"]) == {model.filename
                                         for model in (*MODEL_FILES, *NPM_MODEL_FILES, *SPLIT_MODEL_FILES)}
    for filename, _carrier, licence, what in licences.model_files():
        assert licence and what, f"{filename}: add its licence to MODEL_LICENCES in schizodot/licences.py"


def test_nothing_in_the_default_deployment_forbids_commercial_or_clinical_use(table):
    assert licences.violations(table) == []
    # The pending exception is a real one, named until its fix lands.
    for (image, name), why in licences.PENDING.items():
        if name in table.get(image, {}):
            assert table[image][name]["category"] == "restricted", (image, name, why)


def test_the_cpu_vision_image_needs_no_torch():
    vision = set(licences.closure(next(s for s in licences.IMAGES if s.name == "vision")))
    assert not vision & {"torch", "torchvision", "ultralytics", "deepface"}
    assert not [name for name in vision if name.startswith("nvidia-")]
    cuda = set(licences.closure(next(s for s in licences.IMAGES if s.name == "vision-cuda")))
    assert {"torch", "ultralytics", "deepface"} <= cuda


@pytest.mark.parametrize(("licence", "category"), [
    ("MIT License", "permissive"),
    ("Apache-2.0 OR BSD-2-Clause", "permissive"),
    ("Apache Software License; BSD License", "permissive"),
    ("MPL-2.0 AND MIT", "weak copyleft"),
    ("GNU Lesser General Public License v2 or later (LGPLv2+)", "weak copyleft"),
    ("GNU General Public License v3 or later (GPLv3+)", "copyleft"),
    ("GPL-3.0-or-later", "copyleft"),
    ("AGPL-3.0-only", "network copyleft"),
    ("GNU Affero General Public License v3 or later (AGPLv3+)", "network copyleft"),
    ("LicenseRef-NVIDIA-Proprietary", "proprietary"),
    ("audEERING research licence (openSMILE), wrapper MIT", "restricted"),
    ("CC-BY-NC-4.0", "restricted"),
    ("UNKNOWN", "unknown"),
    ("GPL-3.0-only OR MIT", "permissive"),
    ("MIT AND GPL-3.0-only", "copyleft"),
])
def test_licences_are_categorised_by_their_strictest_binding_term(licence, category):
    assert licences.category(licence) == category


def test_a_copyleft_or_restricted_package_in_the_default_images_is_a_violation():
    table = {"audio": {"praat-parselmouth": {"category": "copyleft", "licence": "GPL-3.0"},
                       "somelib": {"category": "copyleft", "licence": "GPL-3.0"}},
             "vision": {"ultralytics": {"category": "network copyleft", "licence": "AGPL-3.0"},
                        "nvidia-cublas": {"category": "proprietary", "licence": "NVIDIA"}},
             "vision-cuda": {"ultralytics": {"category": "network copyleft", "licence": "AGPL-3.0"},
                             "nvidia-cublas": {"category": "proprietary", "licence": "NVIDIA"}},
             "fusion": {"researchware": {"category": "restricted", "licence": "research only"}}}
    assert sorted(licences.violations(table)) == [
        "audio: somelib is copyleft (GPL-3.0)",
        "fusion: researchware is restricted (research only)",
        "vision: nvidia-cublas is proprietary (NVIDIA)",
        "vision: ultralytics is network copyleft (AGPL-3.0)",
    ]
