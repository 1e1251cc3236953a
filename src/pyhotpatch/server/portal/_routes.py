"""The portal's pages under ``/portal``: sign-in, fleet, machines, calendar, rollouts, subscriptions.

Every page is rendered on the server and works without JavaScript: forms POST, the
handler calls the API and redirects back with a flash message (Post/Redirect/Get). Pages
read and change everything through the API with the session's token (``_api``), so the
API's permissions and rules are the portal's. A page that needs a write shows its form
only to callers the API would let write; a refusal that still happens (a 403, 404 or 409)
is shown with its status and ARM code. Every POST carries the session's CSRF token, and
one without it is refused with 403 before anything else happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from pyhotpatch.clock import Clock
from pyhotpatch.server._auth import Principal
from pyhotpatch.server.portal import _views
from pyhotpatch.server.portal._api import (
    COMPUTE,
    FEATURES,
    RESOURCES,
    Api,
    ApiRefused,
    Problem,
    Reply,
    vm_path,
)
from pyhotpatch.server.portal._render import STATIC, redirect, render
from pyhotpatch.server.portal._session import (
    CSRF_FIELD,
    Flash,
    Session,
    clear_flash,
    end_session,
    keep_login_nonce,
    login_nonce,
    login_nonce_valid,
    read_flash,
    session_of,
    set_flash,
    start_session,
)

#: the largest form body accepted, in bytes
MAX_FORM = 64 * 1024
#: how often live regions refresh themselves, in seconds
LIVE_SECONDS = 5
#: the portal's sections, as the navigation lists them
SECTIONS = (
    ("overview", "/portal", "Overview"),
    ("machines", "/portal/machines", "Machines"),
    ("rollouts", "/portal/rollouts", "Rollouts"),
    ("calendar", "/portal/calendar", "Release calendar"),
    ("subscriptions", "/portal/subscriptions", "Subscriptions"),
)
MACHINE_TABS = (
    ("updates", "Updates"),
    ("compliance", "Update compliance"),
    ("history", "Update history"),
)
HOTPATCH_OFF_MEANS = (
    "Turning hotpatch off unenrols the machine at once: it goes back to restart-based "
    "monthly updates, installing each month's release by restarting its service."
)
HOTPATCH_ON_MEANS = (
    "Turning hotpatch back on does not enrol the machine at once: its enrolment stays "
    "Pending until it runs the next baseline release, and until then it keeps taking "
    "restart-based updates."
)
ENVIRONMENT_MEANS = {
    "DevTest": (
        "DevTest machines take each automatic rollout first, in their region's first ring."
    ),
    "Production": (
        "Production machines wait in each region until the DevTest ring has passed its "
        "health gates and soaked (24 hours by default)."
    ),
}
HOTPATCH_CREATE_MEANS = (
    "A hotpatched machine takes hotpatches without restarts: each month's security fixes "
    "reach its running service. It needs a hotpatch-capable image and the patch mode "
    "AutomaticByPlatform."
)
_ROLLOUT_ACTIONS = {
    "pause": "Rollout paused.",
    "resume": "Rollout resumed.",
    "cancel": "Rollout cancelled.",
}
_PROGRESS_STATES = ("active", "paused")


class _Refusal(Exception):
    """A request the portal itself refuses (bad CSRF token, bad form, unknown page)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(status, code, message)


@dataclass
class Visit:
    """One signed-in request: who is calling, their API, their form and their CSRF token."""

    request: Request
    session: Session
    api: Api
    principal: Principal
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def csrf(self) -> str:
        """The CSRF token this session's forms carry."""
        return self.session.csrf

    def may(self, action: str, subscription: str) -> bool:
        """Whether the API lets this caller ``read`` or ``write`` in ``subscription``."""
        return self.principal.allows(action, subscription)

    @property
    def admin(self) -> bool:
        """Whether the caller is an administrator (rollout control needs one)."""
        return self.principal.role == "Administrator"

    def field(self, name: str, default: str = "") -> str:
        """A form field's first value."""
        values = self.form.get(name)
        return values[0] if values else default

    def render(self, template: str, section: str, status: int = 200, **values: Any) -> Response:
        """The page ``template`` in the portal's frame, with its flash message (shown once)."""
        flash = read_flash(self.request, self.session)
        response = render(
            template,
            status,
            me=self.principal,
            csrf=self.csrf,
            csrf_field=CSRF_FIELD,
            flash=flash,
            sections=SECTIONS,
            section=section,
            live_seconds=LIVE_SECONDS,
            request_path=self.request.url.path,
            **values,
        )
        clear_flash(self.request, response)
        return response

    def back(self, url: str, reply: Reply | None, success: str) -> Response:
        """Redirect to ``url`` with a flash message: ``success``, or the API's refusal."""
        problem = reply.problem if reply is not None else None
        flash = Flash("success", success) if problem is None else Flash("error", str(problem))
        response = redirect(url)
        set_flash(response, self.request, self.session, flash)
        return response


Page = Callable[[Visit], Awaitable[Response]]


def _login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/portal/login?" + urlencode({"next": target})


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a portal page, never another site."""
    if value and value.startswith("/portal") and not value.startswith("//"):
        return value
    return "/portal"


async def _form(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    if len(body) > MAX_FORM:
        raise _Refusal(413, "RequestEntityTooLarge", f"Forms are limited to {MAX_FORM} bytes.")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        return parse_qs(body.decode(), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise _Refusal(400, "InvalidForm", "The form could not be read.") from None


def _problem_page(visit: Visit | None, problem: Problem, section: str = "") -> Response:
    if visit is None:
        return render("problem.html", problem.status, problem=problem, me=None, sections=())
    return visit.render("problem.html", section, problem.status, problem=problem)


def install_portal(app: FastAPI, clock: Clock) -> None:
    """Serve the portal under ``/portal`` of ``app``, calling ``app``'s own API.

    ``clock`` is the control plane's: the calendar opens on its year.
    """

    async def signed_in(request: Request, page: Page, section: str) -> Response:
        session = session_of(request)
        if session is None:
            return redirect(_login_url(request))
        async with Api(app, session.token) as api:
            who = await api.get("/hotpatch/whoami")
            if who.status == 401 or (who.ok and who.body.get("role") == "Agent"):
                response = redirect(_login_url(request))
                end_session(response, request)
                return response
            if not who.ok:
                return _problem_page(None, who.problem or Problem(500, "Error", "whoami failed"))
            principal = Principal(**{k: who.body.get(k) for k in Principal.__dataclass_fields__})
            request.state.principal = principal  # the audit log names who made a change
            visit = Visit(request, session, api, principal)
            try:
                if request.method == "POST":
                    visit.form = await _form(request)
                    if not session.csrf_valid(visit.field(CSRF_FIELD) or None):
                        raise _Refusal(
                            403,
                            "InvalidCsrfToken",
                            "The form did not carry this session's CSRF token; reload the "
                            "page and try again.",
                        )
                return await page(visit)
            except (ApiRefused, _Refusal) as exc:
                return _problem_page(visit, exc.problem, section)
            except _views.BadMachineReference as exc:
                return _problem_page(visit, Problem(400, "InvalidMachine", str(exc)), section)

    def route(path: str, section: str, page: Page, methods: tuple[str, ...] = ("GET",)) -> None:
        async def endpoint(request: Request) -> Response:
            return await signed_in(request, page, section)

        endpoint.__name__ = f"portal_{page.__name__.strip('_')}"
        app.add_api_route(path, endpoint, methods=list(methods), include_in_schema=False)

    # --- sign-in -------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        if request.method == "POST":
            return await _login(request)
        return _login_form(request, None, 200)

    def _login_form(request: Request, problem: Problem | None, status: int) -> Response:
        nonce = login_nonce(request)
        response = render(
            "login.html",
            status,
            me=None,
            sections=(),
            problem=problem,
            next=_safe_next(request.query_params.get("next")),
            signed_out="signed_out" in request.query_params,
            nonce=nonce,
        )
        keep_login_nonce(response, request, nonce)
        return response

    async def _login(request: Request) -> Response:
        try:
            form = await _form(request)
        except _Refusal as exc:
            return _login_form(request, exc.problem, exc.problem.status)
        if not login_nonce_valid(request, _first(form, "nonce")):
            problem = Problem(
                403,
                "InvalidCsrfToken",
                "The sign-in form has expired or did not come from this site; try again.",
            )
            return _login_form(request, problem, 403)
        token = (_first(form, "token") or "").strip()
        if not token:
            return _login_form(
                request, Problem(400, "MissingToken", "Enter a bearer token to sign in."), 400
            )
        async with Api(app, token) as api:
            who = await api.get("/hotpatch/whoami")
        if not who.ok:
            return _login_form(request, who.problem, who.status)
        if who.body.get("role") == "Agent":
            problem = Problem(
                403,
                "AgentTokenNotAllowed",
                "This is a machine's agent credential; sign in with a user's token.",
            )
            return _login_form(request, problem, 403)
        response = redirect(_safe_next(_first(form, "next")))
        start_session(response, request, token)
        return response

    async def _logout(visit: Visit) -> Response:
        response = redirect("/portal/login?signed_out=1")
        end_session(response, visit.request)
        return response

    app.add_api_route("/portal/login", login_page, methods=["GET", "POST"], include_in_schema=False)
    route("/portal/logout", "", _logout, ("POST",))

    # --- the fleet -----------------------------------------------------------------------

    async def _subscriptions(visit: Visit) -> list[dict[str, Any]]:
        found, _ = await visit.api.get_all("/subscriptions", **{"api-version": RESOURCES})
        return found

    async def _machines_of(visit: Visit, subscription: str) -> tuple[list[Any], Problem | None]:
        try:
            found, cut = await visit.api.get_all(
                f"/subscriptions/{quote(subscription, safe='')}"
                "/providers/Microsoft.Compute/virtualMachines",
                **{"api-version": COMPUTE},
            )
        except ApiRefused as exc:
            return [], exc.problem
        if cut:
            return found, Problem(
                200, "ListCutShort", f"Only the first {len(found)} machines are shown."
            )
        return found, None

    def _rows(vms: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for vm in vms:
            ref = _views.machine_ref(str(vm.get("id", "")))
            rows.append(
                {
                    "name": vm.get("name"),
                    "ref": ref,
                    "region": vm.get("location"),
                    "zone": _views.zone_of(vm),
                    "environment": _views.environment_of(vm),
                    "hotpatch": _views.hotpatch_enabled(vm),
                    "os": _views.os_config(vm)[0],
                    "patchMode": _views.os_config(vm)[1]
                    .get("patchSettings", {})
                    .get("patchMode", "\u2014"),
                }
            )
        return sorted(rows, key=lambda r: (r["ref"].subscription, r["ref"].group, r["name"]))

    async def _fleet(visit: Visit, only: str | None = None) -> dict[str, Any]:
        visible = await _subscriptions(visit)
        subscriptions = visible
        if only is not None:
            subscriptions = [s for s in visible if s["subscriptionId"] == only.lower()]
        lists = await asyncio.gather(
            *(_machines_of(visit, s["subscriptionId"]) for s in subscriptions)
        )
        vms = [vm for found, _ in lists for vm in found]
        problems = [
            (s["subscriptionId"], problem)
            for s, (_, problem) in zip(subscriptions, lists, strict=True)
            if problem is not None
        ]
        return {
            "subscriptions": subscriptions,
            "visible": visible,
            "vms": vms,
            "problems": problems,
        }

    async def _overview(visit: Visit) -> Response:
        scope = {} if visit.admin else {"subscription": visit.principal.subscription}
        fleet, compliance, active, paused = await asyncio.gather(
            _fleet(visit),
            visit.api.get("/hotpatch/compliance", **scope),
            visit.api.get("/hotpatch/rollouts", state="active"),
            visit.api.get("/hotpatch/rollouts", state="paused"),
        )
        rollouts = [*active.json().get("value", []), *paused.json().get("value", [])]
        return visit.render(
            "overview.html",
            "overview",
            live=True,
            placements=_views.placements(fleet["vms"]),
            machines=_rows(fleet["vms"]),
            subscriptions=fleet["subscriptions"],
            problems=fleet["problems"],
            compliance=compliance.body if compliance.ok else None,
            compliance_problem=compliance.problem,
            rollouts=sorted(rollouts, key=lambda r: -int(r["id"])),
            can_create=_can_create(visit, fleet["visible"]),
        )

    async def _machines(visit: Visit) -> Response:
        only = visit.request.query_params.get("subscription") or None
        fleet = await _fleet(visit, only)
        if only is not None and not fleet["subscriptions"]:
            raise _Refusal(
                404,
                "SubscriptionNotFound",
                f"The subscription '{only}' could not be found, or you cannot read it.",
            )
        return visit.render(
            "machines.html",
            "machines",
            machines=_rows(fleet["vms"]),
            subscriptions=fleet["visible"],
            problems=fleet["problems"],
            only=only,
            can_create=_can_create(visit, fleet["visible"]),
        )

    route("/portal", "overview", _overview)
    route("/portal/machines", "machines", _machines)

    # --- one machine -----------------------------------------------------------------------

    async def _machine(visit: Visit) -> Response:
        ref = _views.machine_ref(visit.request.path_params["machine"])
        if visit.request.method == "POST":
            return await _machine_action(visit, ref)
        path = vm_path(ref.subscription, ref.group, ref.name)
        tab = visit.request.query_params.get("tab", "updates")
        if tab not in dict(MACHINE_TABS):
            tab = "updates"
        vm_reply, status, history = await asyncio.gather(
            visit.api.get(path, **{"api-version": COMPUTE, "$expand": "instanceView"}),
            visit.api.get(f"/hotpatch/machines{path}/hotpatchStatus"),
            visit.api.get(f"/hotpatch/machines{path}/history", days=30),
        )
        vm = vm_reply.json()
        os_type, config = _views.os_config(vm)
        operation: dict[str, Any] | None = None
        operation_problem: Problem | None = None
        op = visit.request.query_params.get("op")
        if op:
            found = await visit.api.get(
                f"/subscriptions/{quote(ref.subscription, safe='')}/providers/Microsoft.Compute"
                f"/locations/{quote(str(vm.get('location', '')), safe='')}"
                f"/operations/{quote(op, safe='')}",
                **{"api-version": COMPUTE},
            )
            operation, operation_problem = (found.body, None) if found.ok else (None, found.problem)
        compliance: Reply | None = None
        if tab == "compliance":
            compliance = await visit.api.get(f"/hotpatch/machines{path}/compliance")
        entries = history.body.get("value", []) if history.ok else []
        patch_status = vm.get("properties", {}).get("instanceView", {}).get("patchStatus", {})
        in_progress = operation is not None and operation.get("status") == "InProgress"
        return visit.render(
            "machine.html",
            "machines",
            live=True,
            live_fast=in_progress,
            ref=ref,
            vm=vm,
            os_type=os_type,
            patch_settings=config.get("patchSettings", {}),
            time_zone=config.get("timeZone"),
            environment=_views.environment_of(vm),
            hotpatch=_views.hotpatch_enabled(vm),
            hotpatch_status=status.body if status.ok else None,
            status_problem=status.problem,
            patch_status=patch_status,
            assessment=_views.missing_patches(entries),
            history=entries,
            history_problem=history.problem,
            compliance=compliance.body if compliance is not None and compliance.ok else None,
            compliance_problem=compliance.problem if compliance is not None else None,
            operation=operation,
            operation_problem=operation_problem,
            tab=tab,
            tabs=MACHINE_TABS,
            can_write=visit.may("write", ref.subscription),
            classifications=(
                _views.LINUX_CLASSIFICATIONS
                if os_type == "Linux"
                else _views.WINDOWS_CLASSIFICATIONS
            ),
            reboot_settings=_views.REBOOT_SETTINGS,
            durations=_views.DURATIONS,
            environments=_views.ENVIRONMENTS,
            environment_means=ENVIRONMENT_MEANS,
            hotpatch_off_means=HOTPATCH_OFF_MEANS,
            hotpatch_on_means=HOTPATCH_ON_MEANS,
        )

    async def _machine_action(visit: Visit, ref: _views.MachineRef) -> Response:
        path = vm_path(ref.subscription, ref.group, ref.name)
        action = visit.field("action")
        page = ref.portal_path
        if action == "assess":
            reply = await visit.api.post(f"{path}/assessPatches", **{"api-version": COMPUTE})
            return visit.back(_with_operation(page, reply), reply, "Assessment started.")
        vm = (await visit.api.get(path, **{"api-version": COMPUTE})).json()
        os_type = _views.os_config(vm)[0]
        if action == "install":
            body = _views.install_parameters(visit.form, os_type)
            reply = await visit.api.post(f"{path}/installPatches", body, **{"api-version": COMPUTE})
            return visit.back(_with_operation(page, reply), reply, "Installation started.")
        if_match = {"If-Match": visit.field("etag")} if visit.field("etag") else {}
        if action == "environment":
            wanted = visit.field("environment")
            if wanted not in _views.ENVIRONMENTS:
                raise _Refusal(400, "InvalidParameter", "Choose DevTest or Production.")
            tags = {**(vm.get("tags") or {}), _views.ENVIRONMENT_TAG: wanted}
            reply = await visit.api.call(
                "PATCH",
                path,
                params={"api-version": COMPUTE},
                json={"tags": tags},
                headers=if_match,
            )
            return visit.back(page, reply, f"The machine is now {wanted}.")
        if action == "hotpatch":
            if os_type != "Windows":
                raise _Refusal(
                    400,
                    "InvalidParameter",
                    "enableHotpatching exists only in a Windows configuration.",
                )
            wanted_on = visit.field("hotpatch") == "on"
            settings = {"patchSettings": {"enableHotpatching": wanted_on}}
            patch = {"osProfile": {"windowsConfiguration": settings}}
            reply = await visit.api.call(
                "PATCH",
                path,
                params={"api-version": COMPUTE},
                json={"properties": patch},
                headers=if_match,
            )
            done = HOTPATCH_ON_MEANS if wanted_on else HOTPATCH_OFF_MEANS
            return visit.back(page, reply, "Hotpatch " + ("on. " if wanted_on else "off. ") + done)
        raise _Refusal(400, "UnknownAction", f"'{action}' is not something a machine can do.")

    # --- creating a machine ------------------------------------------------------------------

    async def _new_machine(visit: Visit) -> Response:
        if visit.request.method == "GET":
            values = dict(_views.CREATE_DEFAULTS)
            values["subscription"] = visit.request.query_params.get("subscription", "")
            return await _create_form(visit, values)
        values = _views.create_values(visit.form)
        if visit.field("step") == "load" or (
            visit.field("loaded") and visit.field("loaded") != values["subscription"]
        ):
            # the subscription changed: show its groups and sets before anything is made
            return await _create_form(visit, {**values, "group": "", "availabilitySet": ""})
        missing = [
            label
            for key, label in (("name", "a machine name"), ("image", "an image"))
            if not values[key]
        ]
        if not values["group"] and not values["newGroup"]:
            missing.insert(0, "a resource group (an existing one or a new name)")
        if missing:
            problem = Problem(400, "MissingParameter", "Give " + ", ".join(missing) + ".")
            first = "group" if not (values["group"] or values["newGroup"]) else None
            first = first or ("name" if not values["name"] else "image")
            return await _create_form(visit, values, problem, first)
        sub = values["subscription"]
        group = values["group"] or values["newGroup"]
        region = values["region"]
        if not values["group"]:
            reply = await visit.api.call(
                "PUT",
                f"/subscriptions/{quote(sub, safe='')}/resourcegroups/{quote(group, safe='')}",
                params={"api-version": RESOURCES},
                json={"location": values["newGroupRegion"] or region},
            )
            if not reply.ok:
                target = "newGroupRegion" if _target(reply) == "location" else "newGroup"
                return await _create_form(visit, values, reply.problem, target)
            values = {**values, "group": group, "newGroup": ""}
            region = region or str(reply.body.get("location", ""))
        if not region:
            found = await visit.api.get(
                f"/subscriptions/{quote(sub, safe='')}/resourcegroups/{quote(group, safe='')}",
                **{"api-version": RESOURCES},
            )
            if not found.ok:
                return await _create_form(visit, values, found.problem, "group")
            region = str(found.body.get("location", ""))
        reply = await visit.api.call(
            "PUT",
            vm_path(sub, group, values["name"]),
            params={"api-version": COMPUTE},
            json=_views.machine_model(values, sub, group, region),
        )
        if not reply.ok:
            field_name = _views.field_of_target(_target(reply))
            return await _create_form(visit, values, reply.problem, field_name)
        ref = _views.machine_ref(str(reply.body.get("id", "")))
        made = "on" if _views.hotpatch_enabled(reply.body) else "off"
        return visit.back(
            ref.portal_path,
            None,
            f"Machine {ref.name} created in {ref.group} ({reply.body.get('location')}), "
            f"{_views.environment_of(reply.body)}, hotpatch {made}. It shows as running once "
            "its agent enrols.",
        )

    async def _create_form(
        visit: Visit,
        values: dict[str, str],
        problem: Problem | None = None,
        problem_field: str | None = None,
    ) -> Response:
        visible = await _subscriptions(visit)
        writable = [s for s in visible if visit.may("write", s["subscriptionId"])]
        ids = [s["subscriptionId"] for s in writable]
        sub = values["subscription"].lower()
        if sub not in ids:
            sub = ids[0] if ids else values["subscription"]
        values = {**values, "subscription": sub}
        groups: list[dict[str, Any]] = []
        sets: list[dict[str, Any]] = []
        regions: list[tuple[str, str]] = []
        if sub in ids:
            base = f"/subscriptions/{quote(sub, safe='')}"
            (groups, _), (sets, _), provider = await asyncio.gather(
                visit.api.get_all(f"{base}/resourcegroups", **{"api-version": RESOURCES}),
                visit.api.get_all(
                    f"{base}/providers/Microsoft.Compute/availabilitySets",
                    **{"api-version": COMPUTE},
                ),
                visit.api.get(f"{base}/providers/Microsoft.Compute", **{"api-version": RESOURCES}),
            )
            regions = _views.regions_of(provider.json())
        products = await visit.api.get("/hotpatch/products")
        status = problem.status if problem is not None else 200
        return visit.render(
            "machine_new.html",
            "machines",
            status,
            values=values,
            subscriptions=writable,
            groups=sorted(groups, key=lambda g: str(g.get("name", "")).lower()),
            sets=[
                {**s, "group": _views.group_of(str(s.get("id", "")))}
                for s in sorted(sets, key=lambda s: str(s.get("id", "")).lower())
            ],
            regions=regions,
            images=_views.image_choices(products.json().get("value", [])),
            zones=_views.ZONES,
            patch_modes=_views.PATCH_MODES,
            environments=_views.ENVIRONMENTS,
            environment_means=ENVIRONMENT_MEANS,
            hotpatch_means=HOTPATCH_CREATE_MEANS,
            problem=problem,
            problem_field=problem_field,
        )

    route("/portal/machines/new", "machines", _new_machine, ("GET", "POST"))
    route("/portal/machines/{machine:path}", "machines", _machine, ("GET", "POST"))

    # --- the release calendar ----------------------------------------------------------------

    async def _calendar(visit: Visit) -> Response:
        query = visit.request.query_params
        year_text = query.get("year") or str(clock().year)
        if not year_text.isdigit():
            raise _Refusal(400, "InvalidParameter", f"'{year_text}' is not a year.")
        year = int(year_text)
        product = query.get("product") or None
        params: dict[str, Any] = {"year": year}
        if product:
            params["product"] = product
        calendar, products = await asyncio.gather(
            visit.api.get("/hotpatch/calendar", **params),
            visit.api.get("/hotpatch/products"),
        )
        return visit.render(
            "calendar.html",
            "calendar",
            calendar=calendar.json(),
            year=year,
            product=product,
            products=products.body.get("value", []) if products.ok else [],
        )

    route("/portal/calendar", "calendar", _calendar)

    # --- rollouts ----------------------------------------------------------------------------

    async def _rollouts(visit: Visit) -> Response:
        state = visit.request.query_params.get("state") or None
        found, cut = await visit.api.get_all(
            "/hotpatch/rollouts", **({"state": state} if state else {})
        )
        return visit.render(
            "rollouts.html",
            "rollouts",
            live=True,
            rollouts=found,
            cut=cut,
            state=state,
            states=("active", "paused", "completed", "halted", "canceled", "superseded"),
        )

    async def _rollout(visit: Visit) -> Response:
        number = visit.request.path_params["rollout"]
        if not number.isdigit():
            raise _Refusal(404, "RolloutNotFound", f"There is no rollout {number}.")
        page = f"/portal/rollouts/{number}"
        if visit.request.method == "POST":
            action = visit.field("action")
            if action not in _ROLLOUT_ACTIONS:
                raise _Refusal(400, "UnknownAction", f"'{action}' is not a rollout action.")
            reason = visit.field("reason").strip()
            reply = await visit.api.post(
                f"/hotpatch/rollouts/{number}/{action}", {"reason": reason} if reason else None
            )
            return visit.back(page, reply, _ROLLOUT_ACTIONS[action])
        rollout = (await visit.api.get(f"/hotpatch/rollouts/{number}")).json()
        return visit.render(
            "rollout.html",
            "rollouts",
            live=True,
            rollout=rollout,
            phases=_views.phases(rollout),
            can_control=visit.admin,
        )

    route("/portal/rollouts", "rollouts", _rollouts)
    route("/portal/rollouts/{rollout}", "rollouts", _rollout, ("GET", "POST"))

    # --- subscriptions: features and providers ----------------------------------------------

    async def _subscription_list(visit: Visit) -> Response:
        return visit.render(
            "subscriptions.html", "subscriptions", subscriptions=await _subscriptions(visit)
        )

    async def _subscription(visit: Visit) -> Response:
        sub = visit.request.path_params["subscription"]
        base = f"/subscriptions/{quote(sub, safe='')}/providers"
        page = f"/portal/subscriptions/{quote(sub, safe='')}"
        if visit.request.method == "POST":
            action = visit.field("action")
            if action in ("register-feature", "unregister-feature"):
                name = visit.field("feature")
                verb = action.split("-")[0]
                reply = await visit.api.post(
                    f"{base}/Microsoft.Features/providers/Microsoft.Compute/features"
                    f"/{quote(name, safe='')}/{verb}",
                    **{"api-version": FEATURES},
                )
                return visit.back(page, reply, f"Asked to {verb} Microsoft.Compute/{name}.")
            if action == "register-provider":
                reply = await visit.api.post(
                    f"{base}/Microsoft.Compute/register", **{"api-version": RESOURCES}
                )
                return visit.back(page, reply, "Asked to register Microsoft.Compute.")
            raise _Refusal(400, "UnknownAction", f"'{action}' is not a subscription action.")
        subscription, features, provider = await asyncio.gather(
            visit.api.get(f"/subscriptions/{quote(sub, safe='')}", **{"api-version": RESOURCES}),
            visit.api.get(
                f"{base}/Microsoft.Features/providers/Microsoft.Compute/features",
                **{"api-version": FEATURES},
            ),
            visit.api.get(f"{base}/Microsoft.Compute", **{"api-version": RESOURCES}),
        )
        found = subscription.json()
        return visit.render(
            "subscription.html",
            "subscriptions",
            live=True,
            subscription=found,
            features=[
                {**f, "short": str(f.get("name", "")).split("/")[-1]}
                for f in features.json().get("value", [])
            ],
            provider=provider.json(),
            can_write=visit.may("write", found["subscriptionId"]),
        )

    route("/portal/subscriptions", "subscriptions", _subscription_list)
    route("/portal/subscriptions/{subscription}", "subscriptions", _subscription, ("GET", "POST"))

    app.mount("/portal/static", StaticFiles(directory=STATIC), name="portal-static")


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _can_create(visit: Visit, subscriptions: list[dict[str, Any]]) -> bool:
    """Whether the caller may write in one of ``subscriptions``: the create link is for them."""
    return any(visit.may("write", str(s.get("subscriptionId", ""))) for s in subscriptions)


def _target(reply: Reply) -> str | None:
    """The JSON path an ARM refusal names as its ``target``, if any."""
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    return str(error["target"]) if isinstance(error, dict) and error.get("target") else None


def _with_operation(page: str, reply: Reply) -> str:
    """The machine page following the operation an accepted request started."""
    link = reply.headers.get("azure-asyncoperation") if reply.ok else None
    if not link:
        return page
    operation = link.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return f"{page}?{urlencode({'op': operation})}"
