"""The training cache key: equal for equal inputs, different when data, code or any parameter differ."""

from __future__ import annotations

import pytest

from jobs.core.cache import as_bool, cache_key, code_version

pytestmark = pytest.mark.unit

MANIFEST = {"day": "2026-01-08", "content_hash": "abc", "train_rows": 10}
HP = {"epochs": 10, "seed": 42, "factors": 64, "lr": 0.05}


def test_same_inputs_same_key_and_every_input_counts():
    key = cache_key(MANIFEST, "jobs.train", "code1", HP)
    assert key == cache_key(dict(MANIFEST), "jobs.train", "code1", dict(HP))
    variants = [
        cache_key({**MANIFEST, "content_hash": "abd"}, "jobs.train", "code1", HP),  # a data day changed
        cache_key(MANIFEST, "jobs.popularity", "code1", HP),  # another trainer
        cache_key(MANIFEST, "jobs.train", "code2", HP),  # the trainer's code changed
        cache_key(MANIFEST, "jobs.train", "code1", {**HP, "seed": 43}),  # the seed
        cache_key(MANIFEST, "jobs.train", "code1", {**HP, "epochs": 11}),  # a parameter
    ]
    assert len({key, *variants}) == len(variants) + 1
    # Only the content counts, not where the snapshot is or when it was built.
    assert cache_key({**MANIFEST, "train_rows": 11}, "jobs.train", "code1", HP) == key


def test_code_version_covers_the_named_packages_only():
    assert code_version("train", "core") == code_version("core", "train")
    assert code_version("train", "core") != code_version("popularity", "core")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("True", True), ("false", False), ("0", False)])
def test_booleans_as_jinja_renders_them(text, value):
    assert as_bool(text) is value


def test_a_non_boolean_is_refused():
    with pytest.raises(ValueError, match="'maybe' is not a boolean"):
        as_bool("maybe")
