"""soak.profile.reference: profiles/README.md is the generated key reference, up to date."""

from __future__ import annotations

from soak.profile.loading import PROFILES_DIR
from soak.profile.reference import key_reference
from soak.profile.schema import MATRIX_KEYS, all_keys
from soak.profile.thresholds import default_thresholds

README = PROFILES_DIR / "README.md"


# -- documentation --------------------------------------------------------------------------


def test_every_key_is_documented_in_profiles_readme():
    text = README.read_text(encoding="utf-8")
    for name, key in all_keys():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} is missing from {README}"
        assert key.doc in row
    for metric in default_thresholds():
        assert f"| `{metric}` |" in text
    for key in MATRIX_KEYS:
        assert f"`{key}`" in text


def test_profiles_readme_is_generated_from_the_schema():
    assert README.read_text(encoding="utf-8") == key_reference(), (
        "profiles/README.md is out of date; regenerate: .venv/bin/python -c "
        "\"import soak.profile as p; open('profiles/README.md', 'w').write(p.key_reference())\""
    )
