"""`make system-deps` on a machine without redis-server: the install recipe runs, whatever this machine has.

The recipe runs for real (GNU make, /bin/sh, the Makefile and its script), but with a PATH that holds
only a few real tools and recorders for ``id``, ``sudo`` and ``apt-get``: redis-server is absent even
where this machine has it, and the exact install commands are asserted without installing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL_TOOLS = ("sh", "env", "sha1sum", "cut", "chmod")
INSTALL = [
    "apt-get DEBIAN_FRONTEND=noninteractive update -qq",
    "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq redis-server",
]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _fake_bin(tmp_path: Path, *, uid: int, sudo: bool, apt_installs: bool = True, redis: bool = False) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in REAL_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed by this test"
        (bin_dir / tool).symlink_to(found)
    log = tmp_path / "calls.log"
    _script(bin_dir / "id", f'[ "$1" = -u ] && echo {uid}\n')
    # A recorder: what was asked, and the DEBIAN_FRONTEND it ran with; `install` puts redis-server on PATH.
    installed = f'printf "#!/bin/sh\\n" > {bin_dir}/redis-server; chmod +x {bin_dir}/redis-server\n'
    _script(
        bin_dir / "apt-get",
        f'echo "apt-get DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}} $*" >> {log}\n'
        + (f'[ "$1" = install ] && {{ {installed.strip()}; }}\n' if apt_installs else "")
        + "exit 0\n",
    )
    if sudo:
        _script(bin_dir / "sudo", f'echo "sudo $*" >> {log}\nexec "$@"\n')
    if redis:
        _script(bin_dir / "redis-server", "exit 0\n")
    return bin_dir


def _make_system_deps(bin_dir: Path, target: str = "system-deps") -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make is not None
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [make, "--no-print-directory", "-C", str(ROOT), target],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_as_root_without_redis_it_installs_the_debian_package(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=0, sudo=False)
    done = _make_system_deps(bin_dir)
    assert done.returncode == 0, done.stderr
    assert _calls(tmp_path) == INSTALL
    assert "installing redis-server" in done.stdout


def test_as_a_user_it_installs_through_sudo(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=1000, sudo=True)
    done = _make_system_deps(bin_dir)
    assert done.returncode == 0, done.stderr
    assert _calls(tmp_path) == [
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        INSTALL[0],
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server",
        INSTALL[1],
    ]


def test_with_redis_on_path_nothing_is_installed(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=0, sudo=False, redis=True)
    done = _make_system_deps(bin_dir)
    assert done.returncode == 0, done.stderr
    assert _calls(tmp_path) == []


def test_a_user_without_sudo_is_told_what_to_do(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=1000, sudo=False)
    done = _make_system_deps(bin_dir)
    assert done.returncode != 0
    assert _calls(tmp_path) == []
    assert "not root and has no sudo" in done.stderr
    assert "QU_REDIS_URL" in done.stderr


def test_an_install_that_leaves_no_redis_server_on_path_says_so(tmp_path: Path) -> None:
    # apt-get's exit status decides: an install recorded but not on this PATH is a warning naming what to do
    # (../shared/tools/check-bootstrap runs the recipe with exactly such a recorder and needs it to succeed).
    bin_dir = _fake_bin(tmp_path, uid=0, sudo=False, apt_installs=False)
    done = _make_system_deps(bin_dir)
    assert done.returncode == 0, done.stderr
    assert _calls(tmp_path) == INSTALL
    assert "not on PATH" in done.stderr and "QU_REDIS_URL" in done.stderr


def test_a_failed_install_fails_the_recipe(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=0, sudo=False)
    log = tmp_path / "calls.log"
    _script(bin_dir / "apt-get", f'echo "apt-get $*" >> {log}\n[ "$1" = install ] && exit 100\nexit 0\n')
    done = _make_system_deps(bin_dir)
    assert done.returncode != 0
    assert _calls(tmp_path)[-1] == "apt-get install -y -qq redis-server"


def test_the_tests_deps_add_chromium_and_install_only_what_is_missing(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=0, sudo=False, redis=True)
    done = _make_system_deps(bin_dir, "test-deps")
    assert done.returncode == 0, done.stderr
    assert _calls(tmp_path) == [INSTALL[0], "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq chromium"]
    assert "installing chromium (Debian packages)" in done.stdout
