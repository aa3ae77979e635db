"""The helpers both packages share: value checks (physvid.checks) and whole-or-nothing files (physvid.files)."""
import errno
import os

import pytest

from physvid.checks import Checks
from physvid.errors import ConfigError
from physvid.files import atomic_path, atomic_write_text
from stmoe.models import ModelConfigError


def test_checks_name_the_field_say_what_is_allowed_and_show_the_value():
    check = Checks(ConfigError)
    with pytest.raises(ConfigError, match=r"^n must be an integer >= 1, got True$"):
        check.int("n", True)  # bool is not an integer
    with pytest.raises(ConfigError, match=r"^k must be an integer in \[0, 3\] or null, got 4$"):
        check.int("k", 4, low=0, high=3, optional=True)
    assert check.int("k", None, optional=True) is None
    with pytest.raises(ConfigError, match=r"^lr must be > 0.0, got 0$"):
        check.float("lr", 0, low=0.0, low_open=True)
    with pytest.raises(ConfigError, match=r"^x must be a finite number, got nan$"):
        check.float("x", float("nan"))
    assert check.float("x", 1) == 1.0 and isinstance(check.float("x", 1), float)
    with pytest.raises(ConfigError, match=r"^unknown mode 'z'; allowed: a, b$"):
        check.choice("mode", "z", ("a", "b"))
    with pytest.raises(ConfigError, match=r"^flag must be true or false, got 1$"):
        check.bool("flag", 1)


def test_field_first_checks_build_the_models_error():
    check = Checks(ModelConfigError, field_first=True)
    with pytest.raises(ModelConfigError) as err:
        check.choice("decoder", "x", ("conv", "identity"))
    assert err.value.field == "decoder" and str(err.value) == "decoder: unknown value 'x'; allowed: conv, identity"


def test_atomic_path_keeps_the_old_file_when_the_block_fails(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_fsync_of_the_file_is_a_failed_write(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    atomic_write_text(target, "log\n", durable=False)  # logs skip the fsyncs
    assert target.read_text() == "log\n"
