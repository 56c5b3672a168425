"""scripts/setup.sh's decisions, on stand-in machines: what it installs, what it asks for by hand, when it stops.

Each test runs the script as written in a folder of its own, with a PATH that holds only stand-ins (apt-get,
dpkg-query, sudo, python3, the compiler, git, pkg-config, ...) which record how they were called, and the
few real tools the script uses. So no test needs root, a network or a package manager, and the real
installs are not repeated here: the script's real run on a minimal Debian 12 is described in docs/testing.md.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from projects import REPOSITORY

# The Debian packages the script names, for the pipeline and for the tests.
PIPELINE_PACKAGES = ["python3-venv", "python3-dev", "build-essential", "git", "pkg-config", "libopencv-dev",
                     "libturbojpeg0-dev"]
TEST_PACKAGES = ["postgresql", "chromium", "npm"]

# python3, as the script asks it: its version, whether ensurepip and Python.h are there, and a venv that
# either is made (with a pip that records its installs) or fails half-way, as `python3 -m venv` does
# without ensurepip (a .venv with bin/python and no pip).
PYTHON3 = """#!/bin/sh
echo "python3 $*" >> "$LOG"
case "$*" in
  *version_info*) echo "{version}" ;;
  *ensurepip*) exit {no_ensurepip} ;;
  *Python.h*) exit 0 ;;
  "-m venv .venv")
    mkdir -p .venv/bin && : > .venv/bin/python
    if [ {venv_fails} = 1 ]; then echo "ensurepip is not available" >&2; exit 1; fi
    printf '#!/bin/sh\\necho "pip $*" >> "$LOG"\\nexit $PIP_STATUS\\n' > .venv/bin/pip && chmod +x .venv/bin/pip ;;
  *) echo "python3 stand-in: unexpected $*" >&2; exit 99 ;;
esac
"""
# dpkg-query -W -f='${db:Status-Status}' PACKAGE, on a machine where $NOT_INSTALLED lists what it lacks.
DPKG_QUERY = """#!/bin/sh
for package; do :; done
case " $NOT_INSTALLED " in *" $package "*) exit 1 ;; esac
printf installed
"""
RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >> "$LOG"\n'
SUDO = RECORDER + 'exec "$@"\n'


def machine(tmp_path: Path, version: str = "3.11", ensurepip: bool = True, venv_fails: bool = False,
            apt: bool = True) -> Path:
    """A copy of setup.sh in a folder of its own, and a bin/ of stand-ins for the machine's tools."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy2(REPOSITORY / "scripts" / "setup.sh", project / "scripts" / "setup.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {"python3": PYTHON3.format(version=version, no_ensurepip=int(not ensurepip),
                                          venv_fails=int(venv_fails)),
                 **{name: RECORDER for name in ["cc", "c++", "git", "pkg-config", "pg_ctl", "npm"]}}
    if apt:
        stand_ins |= {"apt-get": RECORDER, "dpkg-query": DPKG_QUERY, "sudo": SUDO}
    for name, text in stand_ins.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for name in ["basename", "dirname", "id", "ls", "mkdir", "rm", "chmod", "sh"]:
        real = shutil.which(name)
        assert real, name
        (bin_dir / name).symlink_to(real)
    return project


def setup_sh(project: Path, *args: str, not_installed: str = "", pip_status: int = 0
             ) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run setup.sh as a user does; its result and the stand-ins' calls, in order."""
    log = project.parent / "calls.log"
    log.write_text("")
    env = {"PATH": str(project.parent / "bin"), "HOME": str(project.parent), "LOG": str(log),
           "NOT_INSTALLED": not_installed, "PIP_STATUS": str(pip_status)}
    result = subprocess.run([shutil.which("bash") or "bash", "scripts/setup.sh", *args], cwd=project, env=env,
                            capture_output=True, text=True, timeout=60)
    return result, log.read_text().splitlines()


@pytest.mark.parametrize("args", [[], ["--tests"]])
def test_without_apt_it_names_what_to_install_and_makes_no_venv(tmp_path, args):
    project = machine(tmp_path, ensurepip=False, apt=False)
    result, calls = setup_sh(project, *args)
    assert result.returncode == 1 and result.stdout == "", result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # one message
    named = PIPELINE_PACKAGES + (TEST_PACKAGES if args else [])
    for package in named:
        assert f"{package}: " in result.stderr, package
    if not args:
        assert not any(f"{package}: " in result.stderr for package in TEST_PACKAGES)
    # Whatever this machine's /usr/bin/chromium, venv is the one lacking among the stand-ins.
    missing = result.stderr.split("Missing here: ")[1].split(".")[0].split()
    assert "python3-venv" in missing and set(missing) <= {"python3-venv", "chromium"}, missing
    assert not (project / ".venv").exists()
    assert not any(call.startswith(("python3 -m", "pip ")) for call in calls), calls


def test_without_apt_it_goes_on_when_everything_is_there(tmp_path):
    project = machine(tmp_path, apt=False)
    result, calls = setup_sh(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("setup: no apt-get here; found what these Debian packages give")
    assert calls[-4:-3] == ["python3 -m venv .venv"] and calls[-1] == "pip install -q -e .[test]", calls
    assert (project / ".venv" / "bin" / "pip").is_file()


@pytest.mark.parametrize("version", ["3.12", "3.10"])
def test_a_python_other_than_3_11_stops_it_before_anything_is_installed(tmp_path, version):
    project = machine(tmp_path, version=version)
    result, calls = setup_sh(project, "--tests", not_installed=" ".join(PIPELINE_PACKAGES))
    assert result.returncode == 1 and result.stdout == "", result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and "needs Python 3.11" in result.stderr, result.stderr
    assert f"python3 here is {version}" in result.stderr
    assert not any(call.startswith(("apt-get", "sudo", "python3 -m", "pip ")) for call in calls), calls
    assert not (project / ".venv").exists()


def test_with_apt_it_installs_only_what_dpkg_lacks_then_the_venv(tmp_path):
    project = machine(tmp_path)
    result, calls = setup_sh(project, not_installed="python3-venv git postgresql")
    assert result.returncode == 0, result.stdout + result.stderr
    installs = [call for call in calls if call.startswith("apt-get install")]
    assert installs == ["apt-get install -y -qq --no-install-recommends python3-venv git"], calls
    assert calls.index(installs[0]) < calls.index("python3 -m venv .venv")
    # Through sudo only where it is needed.
    assert any(call.startswith("sudo ") for call in calls) == (os.getuid() != 0), calls
    assert result.stdout.splitlines()[-1] == "Set up: activate with 'source .venv/bin/activate'"


def test_with_apt_and_everything_installed_it_needs_no_apt_get_nor_sudo(tmp_path):
    project = machine(tmp_path)
    result, calls = setup_sh(project, "--tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(call.startswith(("apt-get", "sudo")) for call in calls), calls
    # The test prerequisites are asked for with --tests only.
    _, calls = setup_sh(machine(tmp_path / "without", apt=True), not_installed=" ".join(TEST_PACKAGES))
    assert not any(call.startswith("apt-get install") for call in calls), calls


def test_a_failed_set_up_leaves_no_half_made_venv(tmp_path):
    # `python3 -m venv` fails half-way (ensurepip missing after all): what it made is removed.
    project = machine(tmp_path, venv_fails=True, apt=False)
    result, _ = setup_sh(project)
    assert result.returncode == 1 and "removed the unfinished .venv" in result.stderr, result.stderr
    assert not (project / ".venv").exists()

    # What an earlier failure left (a .venv without pip) is made afresh; then pip fails (no network, say):
    # the .venv this run made is removed too.
    project = machine(tmp_path / "again", apt=False)
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "left-over").touch()
    result, calls = setup_sh(project, pip_status=1)
    assert result.returncode == 1 and "python3 -m venv .venv" in calls, calls
    assert not (project / ".venv").exists()

    # A finished .venv from an earlier set-up is kept when an update of it fails.
    assert setup_sh(project)[0].returncode == 0
    result, calls = setup_sh(project, pip_status=1)
    assert result.returncode == 1 and "python3 -m venv .venv" not in calls, calls
    assert (project / ".venv" / "bin" / "pip").is_file()
