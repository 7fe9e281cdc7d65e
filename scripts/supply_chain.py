#!/usr/bin/env python3
"""Supply-chain checks on requirements.lock (made by scripts/lock.sh from pyproject.toml).

    scripts/supply_chain.py pins       # every == pin in pyproject.toml is in the lock, same version, hashed
    scripts/supply_chain.py audit      # no locked version is affected by an advisory in security/advisories
    scripts/supply_chain.py vendor --from DIR   # refresh security/advisories from an advisory-database copy

``audit`` reads the OSV records (YAML, as in the PyPA advisory database) under
``security/advisories/<package>/``: a locked version is affected when it is listed in an
advisory's ``versions`` or lies in one of its ``ECOSYSTEM`` ranges (``introduced`` up to, not
including, ``fixed``, or up to and including ``last_affected``). Withdrawn advisories are skipped.
Exit status 1 with one line per finding; 0 when clean. It runs offline (``make lint``); ``pins``
needs only the standard library (``make venv`` runs it before anything is installed), ``audit``
also ``packaging`` and PyYAML.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
ADVISORIES = ROOT / "security" / "advisories"
LOCKED_EXTRAS = ("test", "dev")  # the extras scripts/lock.sh locks besides the runtime dependencies

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
# a requirement pinned to one version: name, optional [extras], ==version, optional ; marker
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;,=<>!~]+)\s*(?:;.*)?$")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -, _ and . as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Locked:
    name: str
    version: str
    hashes: int


def read_lock(path: Path = LOCK) -> dict[str, list[Locked]]:
    """Package (normalized name) -> its locked versions (one, or one per environment marker of a
    universal lock, e.g. per Python version) with their numbers of sha256 hashes."""
    out: dict[str, list[Locked]] = {}
    current: Locked | None = None
    for line in path.read_text().splitlines():
        match = _ENTRY.match(line)
        if match:
            current = Locked(normalize(match.group(1)), match.group(2), 0)
            out.setdefault(current.name, []).append(current)
            current.hashes += len(_HASH.findall(line))
        elif current is not None and line.startswith((" ", "\t")):
            current.hashes += len(_HASH.findall(line))
        elif line.strip() and not line.startswith("#"):
            current = None
    return out


def pinned(path: Path = PYPROJECT) -> dict[str, tuple[str, str]]:
    """Every == pin of the runtime dependencies and the locked extras: name -> (version, where)."""
    project = tomllib.loads(path.read_text())["project"]
    groups = {"dependencies": project.get("dependencies", [])}
    for extra in LOCKED_EXTRAS:
        groups[f"optional-dependencies.{extra}"] = project.get("optional-dependencies", {}).get(extra, [])
    out: dict[str, tuple[str, str]] = {}
    for where, requirements in groups.items():
        for text in requirements:
            match = _PIN.match(text)
            if match:
                out[normalize(match.group(1))] = (match.group(2), where)
    return out


def pin_problems(pyproject: Path = PYPROJECT, lock: Path = LOCK) -> list[str]:
    """Why pyproject.toml and the lock disagree (empty: they agree)."""
    if not lock.exists():
        return [f"{lock.name} is missing: run scripts/lock.sh"]
    locked = read_lock(lock)
    problems = []
    for name, (version, where) in sorted(pinned(pyproject).items()):
        entries = locked.get(name)
        if not entries:
            problems.append(f"{name}=={version} ({where}) is not in {lock.name}")
        elif [e.version for e in entries] != [version]:
            problems.append(f"{name}=={version} ({where}) but {lock.name} has "
                            f"{' and '.join(e.version for e in entries)}")
    for entry in (e for entries in locked.values() for e in entries):
        if entry.hashes == 0:
            problems.append(f"{entry.name}=={entry.version} in {lock.name} has no --hash")
    return problems


# -- advisories ---------------------------------------------------------------------------------
def _version(text: str) -> Version | None:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def in_range(version: Version, events: list[dict[str, str]]) -> bool:
    """Whether ``version`` is affected by one OSV ``ECOSYSTEM`` range (its ``events``)."""
    affected = False
    keyed = []
    for event in events:
        (kind, text), = event.items()
        if kind == "limit":
            continue
        at = _version("0" if kind == "introduced" and text == "0" else text)
        if at is None:
            continue
        keyed.append((at, 0 if kind == "introduced" else 1, kind))
    for at, _, kind in sorted(keyed):
        if kind == "introduced" and version >= at:
            affected = True
        elif (kind == "fixed" and version >= at) or (kind == "last_affected" and version > at):
            affected = False
    return affected


def affects(advisory: dict[str, Any], package: str, version: str) -> bool:
    if advisory.get("withdrawn"):
        return False
    parsed = _version(version)
    for affected in advisory.get("affected") or []:
        pkg = affected.get("package") or {}
        if pkg.get("ecosystem") != "PyPI" or normalize(pkg.get("name", "")) != package:
            continue
        if version in (affected.get("versions") or []):
            return True
        if parsed is None:
            continue
        for rng in affected.get("ranges") or []:
            if rng.get("type") == "ECOSYSTEM" and in_range(parsed, rng.get("events") or []):
                return True
    return False


def audit(lock: Path = LOCK, advisories: Path = ADVISORIES) -> list[str]:
    """One line per locked package version that an advisory under ``advisories`` affects."""
    import yaml

    findings = []
    for name, entries in sorted(read_lock(lock).items()):
        folder = advisories / name
        if not folder.is_dir():
            continue
        for path, entry in ((p, e) for p in sorted(folder.glob("*.y*ml")) + sorted(folder.glob("*.json"))
                            for e in entries):
            advisory = yaml.safe_load(path.read_text())  # JSON is YAML too
            if affects(advisory, name, entry.version):
                aliases = ", ".join(advisory.get("aliases") or [])
                summary = (advisory.get("summary") or advisory.get("details") or "").strip().splitlines()[0][:100]
                findings.append(f"{name}=={entry.version}: {advisory['id']}"
                                f"{f' ({aliases})' if aliases else ''}: {summary}")
    return findings


def vendor(source: Path, lock: Path = LOCK, advisories: Path = ADVISORIES) -> int:
    """Copy the advisories of every locked package from an advisory-database copy: a checkout
    (``<source>/vulns/<package>/``) or a bare git repository (its HEAD)."""
    names = set(read_lock(lock))
    if (source / "vulns").is_dir():
        def listing() -> list[str]:
            return [str(p.relative_to(source)) for p in (source / "vulns").glob("*/*") if p.is_file()]

        def read(rel: str) -> bytes:
            return (source / rel).read_bytes()

        revision = "(a checkout)"
    else:
        git = ["git", f"--git-dir={source}"]

        def listing() -> list[str]:
            return subprocess.run([*git, "ls-tree", "-r", "--name-only", "HEAD", "vulns"], check=True,
                                  capture_output=True, text=True).stdout.split()

        def read(rel: str) -> bytes:
            return subprocess.run([*git, "show", f"HEAD:{rel}"], check=True, capture_output=True).stdout

        revision = subprocess.run([*git, "log", "-1", "--format=%H %cI"], check=True, capture_output=True,
                                  text=True).stdout.strip()
    if advisories.exists():
        shutil.rmtree(advisories)
    count = 0
    for rel in sorted(listing()):
        parts = rel.split("/")
        if len(parts) != 3 or normalize(parts[1]) not in names:
            continue
        target = advisories / normalize(parts[1]) / parts[2]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read(rel))
        count += 1
    (advisories / "SOURCE").write_text(
        f"pypa/advisory-database {revision}\n{count} advisories for the packages in requirements.lock\n")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pins", help="pyproject's == pins and requirements.lock agree, every entry hashed")
    audit_p = sub.add_parser("audit", help="no locked version is affected by a vendored advisory")
    audit_p.add_argument("--advisories", type=Path, default=ADVISORIES)
    audit_p.add_argument("--lock", type=Path, default=LOCK)
    vendor_p = sub.add_parser("vendor", help="refresh security/advisories from an advisory-database copy")
    vendor_p.add_argument("--from", dest="source", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "pins":
        problems = pin_problems()
        for line in problems:
            print(f"lock: {line}", file=sys.stderr)
        if problems:
            print("lock: run scripts/lock.sh and commit requirements.lock", file=sys.stderr)
            return 1
        print(f"lock: {len(read_lock())} packages, pyproject's pins agree, every entry hashed")
        return 0
    if args.command == "audit":
        findings = audit(args.lock, args.advisories)
        for line in findings:
            print(f"advisory: {line}", file=sys.stderr)
        if findings:
            return 1
        source = (args.advisories / "SOURCE").read_text().splitlines()[0] if (args.advisories / "SOURCE").exists() \
            else str(args.advisories)
        print(f"audit: {len(read_lock(args.lock))} locked packages, no known advisory ({source})")
        return 0
    count = vendor(args.source)
    print(f"vendored {count} advisories into {ADVISORIES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
