"""``hotpatch release``: publish, list and show releases; the year's calendar; the TUF root.

Exit codes: 0 success; 1 the operation failed; 2 usage; 4 the catalog refused to
publish (every broken rule is printed, one per line).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pyhotpatch.apiclient import ApiCallError
from pyhotpatch.cli._access import CatalogAccess, open_access
from pyhotpatch.cli._app import EXIT_FAILED, err, out
from pyhotpatch.errors import HotpatchError, PublishRefused

EXIT_REFUSED = 4

release_app = typer.Typer(
    name="release",
    help="Publish releases to the catalog, list them, and show the release calendar.",
    no_args_is_help=True,
)

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Control plane URL (HOTPATCH_SERVER; default: the profile's, else --data-dir).",
    ),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Bearer token (HOTPATCH_TOKEN).", show_default=False)
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The control plane's data directory (PYHOTPATCH_HOME)."),
]
DbOption = Annotated[str | None, typer.Option("--db", help="Database URL of the control plane.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _catalog(
    server: str | None, token: str | None, data_dir: Path | None, db: str | None
) -> Iterator[CatalogAccess]:
    try:
        access = open_access(server, token, data_dir, db)
    except HotpatchError as exc:
        raise _failed(exc) from None
    try:
        yield access
    except PublishRefused as exc:
        raise _refused(exc.reasons) from None
    except ApiCallError as exc:
        if exc.code == "PublishRefused":
            raise _refused(exc.details or [str(exc)]) from None
        raise _failed(exc) from None
    except HotpatchError as exc:
        raise _failed(exc) from None
    finally:
        access.close()


def _failed(exc: HotpatchError) -> typer.Exit:
    code = exc.code if isinstance(exc, ApiCallError) else type(exc).__name__
    err.print(f"[bold red]error[/]: {code}: {exc}")
    for detail in getattr(exc, "details", None) or []:
        err.print(f"  {detail}")
    return typer.Exit(EXIT_FAILED)


def _refused(reasons: list[str]) -> typer.Exit:
    err.print(f"[bold red]refused[/]: the catalog's rules were broken ({len(reasons)}):")
    for reason in reasons:
        err.print(f"  {reason}")
    return typer.Exit(EXIT_REFUSED)


def _when(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time(), timezone.utc).isoformat()
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            "expected YYYY-MM-DD or an ISO 8601 time", param_hint="--date"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


@release_app.command()
def publish(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Artifacts: a .hotpatch package, or a baseline's wheels.", show_default=False
        ),
    ] = None,
    product: Annotated[str, typer.Option("--product", help="Product the release is for.")] = "",
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="hotpatch, planned-baseline, unplanned-baseline or other-update (default: from the files).",
        ),
    ] = None,
    kb: Annotated[
        str | None, typer.Option("--kb", help="KB id (a package's own by default).")
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Human title.")] = None,
    classification: Annotated[
        list[str] | None, typer.Option("--classification", help="Repeat for several.")
    ] = None,
    severity: Annotated[
        str, typer.Option(help="Critical, Important, Moderate, Low.")
    ] = "Unspecified",
    cve: Annotated[list[str] | None, typer.Option("--cve", help="Advisory id; repeat.")] = None,
    when: Annotated[
        str | None, typer.Option("--date", help="Publish date (YYYY-MM-DD, UTC); default now.")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Refuse unless this is the current baseline.")
    ] = None,
    lock: Annotated[Path | None, typer.Option("--lock", help="A baseline's lock file.")] = None,
    fix: Annotated[
        list[str] | None,
        typer.Option(
            "--fix",
            help="A fixed release (wheel, sdist, directory or name==version): build a cumulative "
            "hotpatch on the current baseline, or an unplanned baseline if it cannot be hotpatched.",
        ),
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a release; the catalog checks its rules first (exit 4 lists what is wrong)."""
    if not product:
        raise typer.BadParameter("name the product", param_hint="--product")
    files = list(files or [])
    published = _when(when)
    with _catalog(server, token, data_dir, db) as access:
        if fix:
            if files or lock or kind:
                raise typer.BadParameter(
                    "--fix builds the release itself: give no files, --lock or --kind"
                )
            if not kb or not title:
                raise typer.BadParameter("--fix needs --kb and --title", param_hint="--fix")
            from pyhotpatch.cli._fix import Fix, publish_fix

            fixing = Fix(
                product,
                kb,
                title,
                tuple(classification or ("Security",)),
                severity,
                tuple(cve or ()),
                published,
            )
            with tempfile.TemporaryDirectory(prefix="hotpatch-fix-") as work:
                release = publish_fix(access, fixing, fix, Path(work), say=err.print)
        else:
            for path in [*files, *([lock] if lock else [])]:
                if not path.is_file():
                    raise typer.BadParameter(f"{path} is not a file")
            chosen = kind or _guess_kind(files, lock)
            refs = [{"name": p.name, "role": _role(p), "sha256": access.upload(p)} for p in files]
            if lock is not None:
                refs.append({"name": lock.name, "role": "lock", "sha256": access.upload(lock)})
            body: dict[str, Any] = {"product": product, "kind": chosen, "artifacts": refs}
            optional = {
                "kbId": kb,
                "name": title,
                "publishedDate": published,
                "baseline": baseline,
                "classifications": classification,
                "cves": cve,
            }
            body.update({k: v for k, v in optional.items() if v})
            if severity != "Unspecified":
                body["severity"] = severity
            release = access.publish(body)
    if as_json:
        print(json.dumps(release, indent=2))
        return
    out.print(f"published {release['kbId']}: {_describe(release)}")
    for note in release.get("notes") or []:
        out.print(f"  {note}")


def _guess_kind(files: list[Path], lock: Path | None) -> str:
    if lock is not None:
        return "planned-baseline"
    if len(files) >= 1 and files[0].suffix == ".hotpatch":
        return "hotpatch"
    raise typer.BadParameter("say what this is with --kind", param_hint="--kind")


def _role(path: Path) -> str:
    return {".hotpatch": "hotpatch", ".whl": "wheel"}.get(path.suffix, "file")


def _describe(release: dict[str, Any]) -> str:
    kind = release["kind"]
    if kind == "hotpatch":
        return f"hotpatch {release['sequence']} on baseline {release['baseline']}, no restart"
    if kind == "unplanned-baseline":
        replaced = (
            f", replacing the {release['replaces']} hotpatch" if release.get("replaces") else ""
        )
        return f"unplanned baseline (restart){replaced}"
    if kind == "planned-baseline":
        return "planned baseline (restart)"
    return f"other update, available {release['availableDate'][:10]}"


@release_app.command("list")
def list_releases(
    product: Annotated[str | None, typer.Option("--product")] = None,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    year: Annotated[int | None, typer.Option("--year")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List published releases, oldest first."""
    with _catalog(server, token, data_dir, db) as access:
        found = access.releases(product=product, kind=kind, year=year)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("KB", "Product", "Kind", "Published", "Classifications", "Baseline", "Status"):
        table.add_column(column)
    for r in found:
        status = f"superseded by {r['supersededBy']}" if r["supersededBy"] else "current"
        base = (
            f"{r['baseline']} #{r['sequence']}"
            if r["kind"] == "hotpatch"
            else (r["baseline"] or "")
        )
        table.add_row(
            r["kbId"],
            r["product"],
            r["kind"],
            r["publishedDate"][:10],
            ", ".join(r["classifications"]),
            base,
            status,
        )
    out.print(table if found else "no releases")


@release_app.command()
def show(
    kbs: Annotated[list[str], typer.Argument(metavar="KB...", help="Release ids.")],
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show releases with their artifacts."""
    with _catalog(server, token, data_dir, db) as access:
        found = [access.release(kb) for kb in kbs]
    if as_json:
        print(json.dumps(found if len(found) > 1 else found[0], indent=2))
        return
    for r in found:
        out.print(f"[bold]{r['kbId']}[/] {r['name']}")
        fields = {
            "product": r["product"],
            "kind": _describe(r),
            "classifications": ", ".join(r["classifications"]),
            "severity": r["severity"],
            "cves": ", ".join(r["cves"]) or "-",
            "published": r["publishedDate"],
            "available": r["availableDate"],
            "rebootBehavior": r["rebootBehavior"],
            "superseded by": r["supersededBy"] or "-",
        }
        for key, value in fields.items():
            out.print(f"  {key:16} {value}")
        for a in r["artifacts"]:
            out.print(
                f"  artifact         {a['name']} ({a['role']}, {a['size']} bytes, sha256 {a['sha256']})"
            )
        for note in r["notes"]:
            out.print(f"  note             {note}")


@release_app.command("calendar")
def show_calendar(
    year: Annotated[int, typer.Option("--year", min=1970, max=9999, help="Calendar year.")],
    product: Annotated[str | None, typer.Option("--product")] = None,
    svg: Annotated[
        Path | None, typer.Option("--svg", help="Also write the calendar as SVG.")
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The year's plan (baseline months, Patch Tuesdays in UTC) with the actual releases over it."""
    with _catalog(server, token, data_dir, db) as access:
        data = access.calendar(year, product)
        if svg is not None:
            svg.write_text(access.calendar_svg(year, product), encoding="utf-8")
    entries = data["value"]
    if as_json:
        print(json.dumps(entries, indent=2))
    else:
        labels = {
            "planned-baseline": "baseline (restart)",
            "hotpatch": "hotpatch (no restart)",
            "unplanned-baseline": "unplanned baseline (restart)",
        }
        table = Table(title=f"Hotpatch release calendar {year}", box=None, header_style="bold")
        for column in ("Month", "Patch Tuesday (UTC)", "Kind", "Releases"):
            table.add_column(column)
        for e in entries:
            kbs = ", ".join(f"{r['kbId']} ({r['kind']})" for r in e["releases"]) or "-"
            table.add_row(
                date(year, e["month"], 1).strftime("%B"), e["date"], labels[e["kind"]], kbs
            )
        out.print(table)
    if svg is not None:
        err.print(f"wrote {svg}")


@release_app.command()
def root(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write.")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
) -> None:
    """Print the trusted TUF root that agents bootstrap from (copy it to them out of band)."""
    with _catalog(server, token, data_dir, db) as access:
        data = access.root()
    if output is None:
        print(data.decode())
    else:
        output.write_bytes(data)
        err.print(f"wrote {output}")


@release_app.command()
def rotate_keys(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot or timestamp.")],
    threshold: Annotated[int | None, typer.Option(min=1, max=16, help="New threshold.")] = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
) -> None:
    """Replace a TUF role's signing keys (on the control-plane host; agents follow the new root)."""
    from pyhotpatch.catalog import Catalog

    try:
        catalog = Catalog.open(data_dir, url=db)
    except HotpatchError as exc:
        raise _failed(exc) from None
    try:
        keyids = catalog.signing.rotate(role, threshold=threshold)
    except HotpatchError as exc:
        raise _failed(exc) from None
    finally:
        catalog.close()
    out.print(
        f"{role} now signs with {len(keyids)} new key(s): {', '.join(k[:16] for k in keyids)}"
    )


@release_app.command()
def settings(
    baseline_months: Annotated[
        str | None,
        typer.Option("--baseline-months", help="Months planned baselines ship in, e.g. 1,4,7,10."),
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
) -> None:
    """Show the catalog's settings, or change the months planned baselines ship in."""
    months = None
    if baseline_months is not None:
        try:
            months = [int(m) for m in baseline_months.split(",") if m.strip()]
        except ValueError:
            raise typer.BadParameter("expected month numbers such as 1,4,7,10") from None
    with _catalog(server, token, data_dir, db) as access:
        current = access.settings(months)
    names = ", ".join(date(2000, m, 1).strftime("%B") for m in current["baselineMonths"])
    out.print(f"planned baselines ship in: {names}")
