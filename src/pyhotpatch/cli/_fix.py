"""Publishing a fix: a cumulative hotpatch when the builder can make one, else a baseline.

The publisher names the fixed releases; this module finds the product's current
baseline and the fixes already shipped on it, builds one cumulative package from
the baseline's own wheels to the fixed ones, and publishes it. When the builder
refuses any part (a changed class layout, say), the same fixes ship instead as an
unplanned baseline (the baseline's lock with the fixed versions, and their wheels),
which replaces the month's hotpatch, with the builder's reasons kept in its notes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyhotpatch.catalog._lock import parse_lock, wheel_pin
from pyhotpatch.cli._access import CatalogAccess
from pyhotpatch.errors import HotpatchError, NotHotpatchable, SourceError
from pyhotpatch.package import Target

_BASELINES = ("planned-baseline", "unplanned-baseline")


@dataclass(frozen=True)
class Fix:
    """The release's identity and what the publisher says about it."""

    product: str
    kb: str
    title: str
    classifications: tuple[str, ...]
    severity: str = "Unspecified"
    cves: tuple[str, ...] = ()
    published: str | None = None
    notes: tuple[str, ...] = field(default=())


def publish_fix(
    access: CatalogAccess,
    fix: Fix,
    specs: list[str],
    workdir: Path,
    say: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:
    """Build and publish ``specs`` (fixed releases) as a hotpatch, or as an unplanned baseline.

    ``say`` hears one line per step, so a person watching knows what is taking the time.
    """
    from pyhotpatch import build as builder
    from pyhotpatch.package import Manifest, write_package

    history = access.releases(product=fix.product)
    baselines = [r for r in history if r["kind"] in _BASELINES]
    if not baselines:
        raise HotpatchError(f"product {fix.product} has no baseline yet: publish a baseline first")
    baseline = baselines[-1]
    say(f"current baseline of {fix.product}: {baseline['kbId']}")
    lock_ref = _only(baseline, "lock")
    pins = parse_lock(access.fetch(lock_ref["sha256"], workdir / lock_ref["name"]).read_text())
    base_wheels = {
        wheel_pin(a["name"])[0]: a for a in baseline["artifacts"] if a["role"] == "wheel"
    }

    fixed: dict[str, Path] = {}
    previous = [r for r in history if r["kind"] == "hotpatch" and r["baseline"] == baseline["kbId"]]
    if previous:
        say(f"carrying the fixes of {previous[-1]['kbId']} (cumulative)")
        for artifact in previous[-1]["artifacts"]:
            if artifact["role"] == "wheel":
                fixed[wheel_pin(artifact["name"])[0]] = access.fetch(
                    artifact["sha256"], workdir / artifact["name"]
                )
    for spec in specs:
        wheel = _wheel(spec, workdir)
        fixed[wheel_pin(wheel.name)[0]] = wheel

    targets: list[Target] = []
    sources: dict[str, str] = {}
    refused: list[str] = []
    classification = next(
        c for c in (*fix.classifications, "Security") if c in ("Critical", "Security")
    )
    for name, wheel in sorted(fixed.items()):
        if name not in pins or name not in base_wheels:
            raise HotpatchError(
                f"{name} is not part of baseline {baseline['kbId']} of {fix.product}"
            )
        old = access.fetch(base_wheels[name]["sha256"], workdir / base_wheels[name]["name"])
        say(f"building {name} {pins[name].version} -> {wheel_pin(wheel.name)[1]}")
        try:
            result = builder.build(
                str(old),
                str(wheel),
                patch_id=fix.kb,
                title=fix.title,
                classification=classification,
                cves=fix.cves,
            )
        except NotHotpatchable as exc:
            refused.extend(exc.reasons)
            continue
        except SourceError as exc:
            if "changes no code" in str(exc):
                continue
            raise
        targets.extend(result.manifest.targets)
        sources.update(result.sources)

    body: dict[str, Any] = {
        "product": fix.product,
        "kbId": fix.kb,
        "name": fix.title,
        "classifications": list(fix.classifications),
        "severity": fix.severity,
        "cves": list(fix.cves),
    }
    if fix.published:
        body["publishedDate"] = fix.published
    fixed_refs = [
        {"name": wheel.name, "role": "wheel", "sha256": access.upload(wheel)}
        for wheel in fixed.values()
    ]
    if not refused:
        if not targets:
            raise HotpatchError(
                "the fixed releases change no code of the baseline: nothing to publish"
            )
        manifest = Manifest(
            id=fix.kb,
            title=fix.title,
            classification=classification,
            cves=fix.cves,
            targets=tuple(targets),
        )
        package = workdir / f"{fix.kb}.hotpatch"
        write_package(package, manifest, sources)
        ref = {"name": package.name, "role": "hotpatch", "sha256": access.upload(package)}
        body.update(kind="hotpatch", baseline=baseline["kbId"], artifacts=[ref, *fixed_refs])
        body["notes"] = list(fix.notes)
        return access.publish(body)

    say(f"the builder refused {len(refused)} change(s): shipping as an unplanned baseline")
    lock_lines = []
    wheels = []
    for name, pin in sorted(pins.items()):
        if name in fixed:
            path = fixed[name]
            _, version = wheel_pin(path.name)
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            wheels.append({"name": path.name, "role": "wheel", "sha256": sha})
        else:
            version, sha = pin.version, base_wheels[name]["sha256"]
            wheels.append({"name": base_wheels[name]["name"], "role": "wheel", "sha256": sha})
        lock_lines.append(f"{name}=={version} --hash=sha256:{sha}")
    lock = workdir / "requirements.lock"
    lock.write_text(
        f"# baseline {fix.kb} of {fix.product}: {baseline['kbId']} with the fixes of {fix.kb}\n"
        + "\n".join(lock_lines)
        + "\n"
    )
    lock_ref = {"name": lock.name, "role": "lock", "sha256": access.upload(lock)}
    notes = [
        f"shipped as an unplanned baseline: the builder refused {len(refused)} change(s)",
        *refused,
        *fix.notes,
    ]
    body.update(kind="unplanned-baseline", artifacts=[lock_ref, *wheels], notes=notes[:200])
    return access.publish(body)


def _only(release: dict[str, Any], role: str) -> dict[str, Any]:
    found = [a for a in release["artifacts"] if a["role"] == role]
    if len(found) != 1:
        raise HotpatchError(f"{release['kbId']} has {len(found)} artifacts of role {role!r}, not 1")
    return dict(found[0])


def _wheel(spec: str, workdir: Path) -> Path:
    """A wheel of the fixed release: the file itself, or one pip builds or downloads."""
    path = Path(spec)
    if path.suffix == ".whl" and path.is_file():
        return path
    out = workdir / f"wheel-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            spec,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(out.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        last = (done.stderr.strip().splitlines() or ["no wheel produced"])[-1]
        raise SourceError(f"cannot make a wheel of {spec}: {last}")
    return wheels[0]
