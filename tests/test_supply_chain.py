"""Issue 13 item 6: requirements.lock (scripts/lock.sh) matches pyproject's pins with hashes, and
the advisory check of ``make lint`` (scripts/supply_chain.py audit against the vendored OSV
records in security/advisories) finds an advisory that affects a locked version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

from scripts import supply_chain as sc
from tests.harness import ROOT

SCRIPT = ROOT / "scripts" / "supply_chain.py"


def test_lock_agrees_with_pyproject_and_every_entry_is_hashed() -> None:
    problems = sc.pin_problems()
    assert problems == [], "\n".join(problems) + "\nrun scripts/lock.sh and commit requirements.lock"
    locked = sc.read_lock()
    pins = sc.pinned()
    assert {"aiohttp", "confluent-kafka", "pytest", "ruff", "uv"} <= set(pins)
    for name, (version, _) in pins.items():
        assert [e.version for e in locked[name]] == [version]
    # transitive dependencies are locked too, each with at least one sha256
    assert {"multidict", "yarl", "attrs"} <= set(locked)
    assert all(e.hashes >= 1 for entries in locked.values() for e in entries)


def test_pins_check_names_every_disagreement(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = ["aiohttp==0.0.1", "not-locked-anywhere==1.0", "yarl>=1"]\n'
        '[project.optional-dependencies]\ntest = ["pytest==9.2.0"]\nbench = ["also-not-locked==1.0"]\n')
    lock = tmp_path / "requirements.lock"
    lock.write_text(sc.LOCK.read_text() + "unhashed-pkg==1.2.3\n    # via nothing\n")
    problems = sc.pin_problems(pyproject, lock)
    locked_aiohttp = sc.read_lock()["aiohttp"][0].version
    assert problems == [
        f"aiohttp==0.0.1 (dependencies) but requirements.lock has {locked_aiohttp}",
        "not-locked-anywhere==1.0 (dependencies) is not in requirements.lock",
        "unhashed-pkg==1.2.3 in requirements.lock has no --hash",
    ]  # yarl has no == pin; bench is not a locked extra; pytest agrees
    assert sc.pin_problems(pyproject, tmp_path / "missing.lock") == ["missing.lock is missing: run scripts/lock.sh"]


def test_osv_ranges() -> None:
    events = [{"introduced": "0"}, {"fixed": "3.9.2"}]
    assert sc.in_range(Version("3.9.1"), events) and sc.in_range(Version("0.1"), events)
    assert not sc.in_range(Version("3.9.2"), events) and not sc.in_range(Version("4.0"), events)
    two = [{"introduced": "1.0"}, {"fixed": "1.5"}, {"introduced": "2.0"}, {"last_affected": "2.3"}]
    assert [sc.in_range(Version(v), two) for v in ("0.9", "1.0", "1.4.9", "1.5", "1.9", "2.0", "2.3", "2.3.1")] == [
        False, True, True, False, False, True, True, False]
    assert sc.in_range(Version("5.0"), [{"introduced": "4.0"}])  # no fix yet


def write_advisory(folder: Path, ident: str, package: str, **affected: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"id": ident, "aliases": [f"CVE-0000-{ident[-4:]}"], "details": f"fake advisory {ident}\nmore",
              "affected": [{"package": {"ecosystem": "PyPI", "name": package}, **affected}]}
    (folder / f"{ident}.yaml").write_text(yaml.safe_dump(record))


def run_audit(advisories: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "audit", "--advisories", str(advisories)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def test_audit_of_the_lock_against_the_vendored_advisories_is_clean() -> None:
    source = (sc.ADVISORIES / "SOURCE").read_text()
    assert source.startswith("pypa/advisory-database ")
    vendored = list(sc.ADVISORIES.glob("*/*.yaml"))
    assert len(vendored) > 20 and (sc.ADVISORIES / "aiohttp").is_dir()
    assert {p.parent.name for p in vendored} <= set(sc.read_lock())  # only packages we lock
    result = run_audit(sc.ADVISORIES)
    assert result.returncode == 0, result.stderr
    assert "no known advisory" in result.stdout


def test_the_vendored_records_are_read_as_osv() -> None:
    """A real record (aiohttp's static-route traversal, fixed in 3.9.2) affects 3.9.1, not 3.9.2."""
    record = yaml.safe_load((sc.ADVISORIES / "aiohttp" / "PYSEC-2024-24.yaml").read_text())
    assert sc.affects(record, "aiohttp", "3.9.1")
    assert not sc.affects(record, "aiohttp", "3.9.2") and not sc.affects(record, "yarl", "3.9.1")


def test_audit_fails_on_an_advisory_that_affects_a_locked_version(tmp_path: Path) -> None:
    locked = sc.read_lock()
    aiohttp, yarl, pyyaml = (locked[n][0].version for n in ("aiohttp", "yarl", "pyyaml"))
    nxt = f"{Version(aiohttp).major}.{Version(aiohttp).minor}.{Version(aiohttp).micro + 1}"
    advisories = tmp_path / "advisories"
    # affected: a range up to the next release, an explicit version list, a last_affected bound
    write_advisory(advisories / "aiohttp", "FAKE-0001", "aiohttp",
                   ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": nxt}]}])
    write_advisory(advisories / "yarl", "FAKE-0002", "yarl", versions=[yarl])
    write_advisory(advisories / "pyyaml", "FAKE-0003", "PyYAML",
                   ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"last_affected": pyyaml}]}])
    # not affected: fixed at the locked version, withdrawn, a GIT range only, another ecosystem
    write_advisory(advisories / "aiohttp", "FAKE-0004", "aiohttp",
                   ranges=[{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": aiohttp}]}])
    write_advisory(advisories / "yarl", "FAKE-0005", "yarl", versions=[yarl])
    withdrawn = yaml.safe_load((advisories / "yarl" / "FAKE-0005.yaml").read_text())
    (advisories / "yarl" / "FAKE-0005.yaml").write_text(yaml.safe_dump({**withdrawn, "withdrawn": "2024-01-01"}))
    write_advisory(advisories / "aiohttp", "FAKE-0006", "aiohttp",
                   ranges=[{"type": "GIT", "repo": "x", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}])
    write_advisory(advisories / "aiohttp", "FAKE-0007", "aiohttp", versions=[aiohttp])
    record = yaml.safe_load((advisories / "aiohttp" / "FAKE-0007.yaml").read_text())
    record["affected"][0]["package"]["ecosystem"] = "npm"
    (advisories / "aiohttp" / "FAKE-0007.yaml").write_text(yaml.safe_dump(record))

    result = run_audit(advisories)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        f"advisory: aiohttp=={aiohttp}: FAKE-0001 (CVE-0000-0001): fake advisory FAKE-0001",
        f"advisory: pyyaml=={pyyaml}: FAKE-0003 (CVE-0000-0003): fake advisory FAKE-0003",
        f"advisory: yarl=={yarl}: FAKE-0002 (CVE-0000-0002): fake advisory FAKE-0002",
    ]


@pytest.mark.parametrize("target", ["lint", "venv"])
def test_make_targets_use_the_lock(target: str) -> None:
    """make venv installs from the lock with --require-hashes; make lint runs ruff and mypy (make
    check) and the audit."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split(f"\n{target}:" if target == "lint" else "\n$(VENV)/.installed:", 1)[1].split("\n\n")[0]
    if target == "lint":
        check = makefile.split("\ncheck:", 1)[1].split("\n\n")[0]
        assert recipe.split("\n")[0].split() == ["check"], recipe
        assert "ruff check" in check and "mypy" in check, check
        assert "supply_chain.py audit" in recipe and "supply_chain.py pins" in recipe
    else:
        assert "--require-hashes -r requirements.lock" in recipe and "--no-deps -e ." in recipe


@pytest.mark.parametrize("target", ["test", "test-fast"])
def test_make_test_runs_ruff_and_mypy_first(target: str) -> None:
    """make test and make test-fast start with make check (ruff, mypy), so a finding stops them
    before pytest; ruff and mypy come from the lock (the dev extra) like every other tool."""
    makefile = (ROOT / "Makefile").read_text()
    prerequisites = makefile.split(f"\n{target}:", 1)[1].split("\n", 1)[0].split()
    assert prerequisites[0] == "check", prerequisites
    locked = sc.read_lock()
    assert {"ruff", "mypy"} <= set(locked), sorted(locked)
