"""The web portal over plain HTTP, as a browser without JavaScript uses it.

A real control plane runs in-process on a manual clock (``clocked_server``), with the
``svc`` stack's baseline and Security hotpatch published, machines whose simulated agents
the tests drive one step at a time, and a rollout opened by an orchestrator pass. The
tests sign in with real tokens (administrator, Owner, Reader), follow the pages' forms
(POST, then the redirect) and check every change through the API itself.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from pyhotpatch.server.portal import _views
from servers import TOKEN, clocked_server
from sim_agent import SimulatedAgent
from test_orchestrator_server import (
    API,
    BASELINE,
    GROUP,
    HOTPATCH,
    SUB,
    Plane,
    Release,
    _at,
    _vm_path,
    releases,  # noqa: F401  (the fixture the plane needs)
)

MACHINE = f"/portal/machines/{SUB}/{GROUP}"
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


class Browser:
    """A browser without JavaScript: cookies kept, redirects seen, forms posted as forms."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def page(self, path: str) -> str:
        """A page that must render (200); its HTML."""
        reply = self.get(path)
        assert reply.status_code == 200, (reply.status_code, reply.headers, reply.text[-2000:])
        return reply.text

    def sign_in(self, token: str, next_page: str = "/portal") -> httpx.Response:
        form = self.get("/portal/login?" + httpx.QueryParams({"next": next_page}).__str__())
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce is not None, form.text
        return self.client.post(
            "/portal/login", data={"nonce": nonce.group(1), "token": token, "next": next_page}
        )

    def csrf(self, path: str) -> str:
        found = _CSRF.search(self.page(path))
        assert found is not None
        return found.group(1)

    def submit(self, page: str, data: dict[str, Any], action: str | None = None) -> str:
        """Post a form of ``page`` (with its CSRF token), follow the redirect; the new page."""
        posted = self.client.post(
            action or page.split("?", maxsplit=1)[0], data={**data, "csrf": self.csrf(page)}
        )
        assert posted.status_code == 303, (posted.status_code, posted.text[-2000:])
        return self.page(posted.headers["location"])


def text(page: str) -> str:
    """A page's words, without tags, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def flash(page: str) -> str:
    found = re.search(r'<div class="flash[^"]*"[^>]*>(.*?)</div>', page, re.S)
    assert found is not None, "no flash message on the page"
    return text(found.group(1))


def forms(page: str) -> list[str]:
    """The ``action`` hidden values of the page's POST forms (logout included as 'logout')."""
    found = []
    for form in re.findall(r'<form method="post"(.*?)</form>', page, re.S):
        action = re.search(r'name="action" value="([^"]+)"', form)
        found.append(action.group(1) if action else "logout")
    return found


@pytest.fixture
def plane(tmp_path: Path, releases: tuple[Release, Release]) -> Iterator[Plane]:  # noqa: F811
    with clocked_server(tmp_path / "data", TOKEN, SUB, GROUP) as (url, clock, owner):
        yield Plane(url, clock, owner, releases)


@pytest.fixture
def fleet(plane: Plane) -> dict[str, SimulatedAgent]:
    """Two machines in two zones of westus with agents on the baseline, and a rollout."""
    agents = {
        "dev-1": plane.machine("dev-1", "DevTest"),
        "prod-1": plane.machine("prod-1", "Production"),
    }
    plane.settings(soakHours=0)
    plane.publish()
    plane.run_pass()
    return agents


@pytest.fixture
def browser(plane: Plane) -> Iterator[Browser]:
    made = Browser(plane.url)
    yield made
    made.close()


def _token(plane: Plane, role: str) -> str:
    made = plane.post("/hotpatch/tokens", {"role": role, "subscription": SUB})
    assert made.status_code == 201, made.text
    token: str = made.json()["token"]
    return token


# --- sign-in, sessions, CSRF ------------------------------------------------------------------


def test_signed_out_pages_redirect_to_sign_in_and_the_session_cookie_is_strict(
    plane: Plane, browser: Browser
) -> None:
    for page in ("/portal", f"{MACHINE}/dev-1?tab=history", "/portal/calendar"):
        reply = browser.get(page)
        assert reply.status_code == 303
        assert reply.headers["location"] == "/portal/login?" + str(httpx.QueryParams(next=page))

    refused = browser.sign_in("not-a-token-at-all")
    assert refused.status_code == 401
    assert "InvalidAuthenticationToken" in refused.text and "hotpatch_portal=" not in str(
        refused.headers.get_list("set-cookie")
    )

    signed = browser.sign_in(TOKEN, f"{MACHINE}/dev-1?tab=history")
    assert signed.status_code == 303
    assert signed.headers["location"] == f"{MACHINE}/dev-1?tab=history"
    (cookie,) = [
        c for c in signed.headers.get_list("set-cookie") if c.startswith("hotpatch_portal=")
    ]
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/portal"} <= attributes
    assert "secure" not in attributes  # plain HTTP; over https the cookie is Secure
    page = browser.page("/portal")
    assert "Signed in as" in text(page) and "administrator" in text(page)
    reply = browser.get("/portal")
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    assert reply.headers["cache-control"] == "no-store"

    # an open redirect is not possible through ``next``
    assert browser.sign_in(TOKEN, "//elsewhere.example/").headers["location"] == "/portal"

    # signing out needs the session's CSRF token too
    assert browser.client.post("/portal/logout").status_code == 403
    out = browser.client.post("/portal/logout", data={"csrf": browser.csrf("/portal")})
    assert out.status_code == 303 and out.headers["location"] == "/portal/login?signed_out=1"
    assert browser.get("/portal").status_code == 303
    assert "You have signed out" in browser.page("/portal/login?signed_out=1")


def test_a_revoked_token_ends_the_session_and_agent_credentials_cannot_sign_in(
    plane: Plane, fleet: dict[str, SimulatedAgent], browser: Browser
) -> None:
    made = plane.post("/hotpatch/tokens", {"role": "Contributor", "subscription": SUB}).json()
    assert browser.sign_in(made["token"]).status_code == 303
    assert browser.get("/portal").status_code == 200
    with plane.http() as admin:
        assert admin.delete(f"/hotpatch/tokens/{made['id']}").status_code == 200
    assert browser.get("/portal").status_code == 303

    agent_token = fleet["dev-1"].token
    assert agent_token is not None
    refused = browser.sign_in(agent_token)
    assert refused.status_code == 403 and "AgentTokenNotAllowed" in refused.text


def test_the_sign_in_form_needs_its_nonce(plane: Plane, browser: Browser) -> None:
    reply = browser.client.post("/portal/login", data={"token": TOKEN, "nonce": "guessed"})
    assert reply.status_code == 403 and "InvalidCsrfToken" in reply.text
    assert browser.get("/portal").status_code == 303


def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    plane: Plane, fleet: dict[str, SimulatedAgent], browser: Browser
) -> None:
    rollout = plane.rollout()["id"]
    other = Browser(plane.url)
    other.sign_in(TOKEN)
    foreign = other.csrf("/portal")  # another session's token is no better than none
    other.close()
    browser.sign_in(TOKEN)
    assert foreign != browser.csrf("/portal")
    for path, data in (
        (f"{MACHINE}/dev-1", {"action": "assess"}),
        (f"{MACHINE}/dev-1", {"action": "hotpatch", "hotpatch": "off"}),
        (f"/portal/rollouts/{rollout}", {"action": "pause"}),
        (
            f"/portal/subscriptions/{SUB}",
            {"action": "register-feature", "feature": "InGuestPatchVMPreview"},
        ),
    ):
        for csrf in (None, foreign, ""):
            body = data if csrf is None else {**data, "csrf": csrf}
            reply = browser.client.post(path, data=body)
            assert reply.status_code == 403, (path, csrf, reply.text[-500:])
            assert "InvalidCsrfToken" in reply.text
    assert fleet["dev-1"].poll() == []
    assert plane.rollout()["state"] == "active"
    vm = plane.get(_vm_path("dev-1"), **{"api-version": API})
    assert vm["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"][
        "enableHotpatching"
    ]
    feature = plane.get(
        f"/subscriptions/{SUB}/providers/Microsoft.Features/providers/Microsoft.Compute"
        "/features/InGuestPatchVMPreview",
        **{"api-version": "2021-07-01"},
    )
    assert feature["properties"]["state"] == "NotRegistered"


# --- pages with real data -----------------------------------------------------------------------


def test_every_page_renders_the_fleets_real_data(
    plane: Plane, fleet: dict[str, SimulatedAgent], browser: Browser
) -> None:
    plane.move_to(_at(22))  # the off-peak window: the rollout's first batch starts
    plane.run_pass()
    rollout = plane.rollout()
    (batch,) = rollout["batchList"]
    browser.sign_in(TOKEN)

    overview = text(browser.page("/portal"))
    assert "Machines by region and zone" in overview
    assert "westus no zone 2" in overview  # two machines, neither in a zone
    assert "Machines 2" in overview and "Compliance by environment" in overview
    assert f"Rollout {rollout['id']} {HOTPATCH} (pyhotpatch-demo) ◷ active" in overview
    assert f"Subscription {SUB[:8]}" in overview

    machines = browser.page(f"/portal/machines?subscription={SUB}")
    assert f'href="{MACHINE}/dev-1"' in machines and f'href="{MACHINE}/prod-1"' in machines
    assert "DevTest" in text(machines) and "Production" in text(machines)

    updates = text(browser.page(f"{MACHINE}/dev-1"))
    assert f"Baseline {BASELINE}" in updates
    assert "Product pyhotpatch-demo" in updates and "Health ✔ Healthy" in updates
    assert "Assess now" in updates and "Install updates now" in updates
    # the same page by the machine's URL-encoded resource id
    by_id = browser.page("/portal/machines/" + quote(fleet["dev-1"].vm_id, safe=""))
    assert "<h1>dev-1" in by_id

    compliance = text(browser.page(f"{MACHINE}/prod-1?tab=compliance"))
    assert "State ✖ NonCompliant" in compliance and HOTPATCH in compliance
    assert "Missing Critical and Security updates 1" in compliance

    history = text(browser.page(f"{MACHINE}/dev-1?tab=history"))
    # the orchestrator's pass assessed the machine from what its agent reported
    assert "Assessment ✔ Succeeded" in history
    assert f"{HOTPATCH} November security fix Security ○ Available" in history

    calendar = text(browser.page("/portal/calendar?year=2026"))
    assert "Release calendar 2026" in calendar
    assert f"October 2026-10-13 ⟳ Baseline (restart) {BASELINE}" in calendar
    assert f"November 2026-11-10 ✚ Hotpatch (no restart) {HOTPATCH}" in calendar
    assert "December 2026-12-08 ✚ Hotpatch (no restart) none" in calendar
    assert "the second Tuesday" in calendar
    assert "Release calendar 2027" in text(browser.page("/portal/calendar?year=2027"))

    listed = text(browser.page("/portal/rollouts"))
    assert f"Rollout {rollout['id']} {HOTPATCH} pyhotpatch-demo" in listed
    detail = text(browser.page(f"/portal/rollouts/{rollout['id']}"))
    assert "Phase 1 of 1" in detail and "Phase 1 (current): westus" in detail
    assert "Region westus" in detail
    assert f"{batch['number']} {batch['ring']} no zone" in detail
    assert "Pause" in detail and "Cancel rollout" in detail

    subscription = text(browser.page(f"/portal/subscriptions/{SUB}"))
    assert "Microsoft.Compute ✔ Registered" in subscription
    assert "InGuestHotPatchVMPreview ○ NotRegistered Register" in subscription

    missing = browser.get(f"{MACHINE}/no-such-vm")
    assert missing.status_code == 404 and "ResourceNotFound" in missing.text
    assert browser.get("/portal/rollouts/999").status_code == 404
    bad = browser.get("/portal/machines/just-a-name")
    assert bad.status_code == 400 and "InvalidMachine" in bad.text


def test_a_reader_sees_no_form_it_may_not_use_and_a_forced_post_shows_the_apis_403(
    plane: Plane, fleet: dict[str, SimulatedAgent], browser: Browser
) -> None:
    browser.sign_in(_token(plane, "Reader"))
    rollout = plane.rollout()["id"]
    for page in (
        "/portal",
        f"{MACHINE}/dev-1",
        f"{MACHINE}/dev-1?tab=history",
        f"/portal/rollouts/{rollout}",
        f"/portal/subscriptions/{SUB}",
    ):
        assert forms(browser.page(page)) == ["logout"], page
    machine = text(browser.page(f"{MACHINE}/dev-1"))
    assert "You can read this machine but not change it" in machine
    assert "Baseline KB5060100" in machine
    assert "take an administrator's token" in text(browser.page(f"/portal/rollouts/{rollout}"))

    # a hand-made form still reaches the API, which refuses; the page says so with the code
    after = browser.submit(f"{MACHINE}/dev-1", {"action": "assess"})
    assert "AuthorizationFailed" in flash(after) and "HTTP 403" in flash(after)
    after = browser.submit(f"/portal/rollouts/{rollout}", {"action": "pause"})
    assert "AuthorizationFailed" in flash(after)
    assert fleet["dev-1"].poll() == [] and plane.rollout()["state"] == "active"


def test_an_owner_cannot_control_rollouts_but_administrators_can(
    plane: Plane, fleet: dict[str, SimulatedAgent], browser: Browser
) -> None:
    rollout = plane.rollout()["id"]
    page = f"/portal/rollouts/{rollout}"
    browser.sign_in(plane.owner)
    assert forms(browser.page(page)) == ["logout"]
    browser.sign_in(TOKEN)
    assert forms(browser.page(page)) == ["logout", "pause", "cancel"]

    paused = browser.submit(page, {"action": "pause"})
    assert flash(paused) == "✔ Done: Rollout paused." and "State ⚠ paused" in text(paused)
    assert forms(paused) == ["logout", "resume", "cancel"]
    assert plane.rollout()["state"] == "paused"
    again = browser.submit(page, {"action": "pause"})
    assert "RolloutStateConflict" in flash(again) and "HTTP 409" in flash(again)
    assert "already paused" in flash(again)
    assert browser.submit(page, {"action": "resume"}).count("Rollout resumed.") == 1
    assert plane.rollout()["state"] == "active"
    canceled = browser.submit(page, {"action": "cancel", "reason": "wrong fix"})
    assert "State ⚠ canceled · reason: wrong fix" in text(canceled)
    assert forms(canceled) == ["logout"]
    assert (plane.rollout()["state"], plane.rollout()["reason"]) == ("canceled", "wrong fix")


# --- the machine's forms, without JavaScript ------------------------------------------------------


def test_assess_now_and_install_now_post_redirect_and_show_the_operation_and_history(
    plane: Plane, fleet: dict[str, SimulatedAgent], browser: Browser
) -> None:
    agent = fleet["prod-1"]
    browser.sign_in(plane.owner)
    page = f"{MACHINE}/prod-1"

    started = browser.submit(page, {"action": "assess"})
    assert flash(started) == "✔ Done: Assessment started."
    assert "◷ InProgress" in text(started)
    (item,) = agent.poll()
    assert item["kind"] == "assessPatches"
    agent.answer(item)
    operation = re.search(r"Operation <code>([0-9a-f-]+)</code>", started)
    assert operation is not None
    done = text(browser.page(f"{page}?op={operation.group(1)}"))
    assert "✔ Succeeded" in done
    assert f"{HOTPATCH} Security hotpatch ({HOTPATCH}) Security NeverReboots" in done
    assert "Last assessment 2026-11-10 12:00 UTC" in done

    installed = browser.submit(
        page,
        {
            "action": "install",
            "classification": ["Security", "Critical"],
            "include": "",
            "exclude": "KB5999999, KB5999998",
            "maximumDuration": "PT1H",
            "rebootSetting": "Never",
        },
    )
    assert flash(installed) == "✔ Done: Installation started."
    (item,) = agent.poll()
    parameters = item["payload"]["parameters"]
    assert parameters["maximumDuration"] == "PT1H" and parameters["rebootSetting"] == "Never"
    windows = parameters["windowsParameters"]
    assert sorted(windows["classificationsToInclude"]) == ["Critical", "Security"]
    assert {"KB5999999", "KB5999998"} <= set(windows["kbNumbersToExclude"])
    agent.answer(item)

    history = text(browser.page(f"{page}?tab=history"))
    assert "Installation ✔ Succeeded" in history and "OnDemand 1 installed, 0 failed" in history
    assert f"KB{HOTPATCH[2:]} Security hotpatch ({HOTPATCH}) Security ✔ Installed" in history
    assert "Assessment ✔ Succeeded" in history
    updates = text(browser.page(page))
    assert "Every update the last assessment found is installed" in updates

    # Azure's own validation reaches the page in its words
    bad = browser.submit(page, {"action": "install", "include": "1111", "classification": []})
    assert "'kbNumbersToInclude' with value '1111' is not valid" in flash(bad)
    assert "HTTP 400" in flash(bad)
    # a machine whose agent never enrolled: Azure's 409, shown with its code
    plane.vm("no-agent", environment="DevTest")
    refused = browser.submit(f"{MACHINE}/no-agent", {"action": "assess"})
    assert "OperationNotAllowed" in flash(refused) and "HTTP 409" in flash(refused)


def test_environment_and_hotpatch_enrolment_change_from_the_machine_page(
    plane: Plane, fleet: dict[str, SimulatedAgent], browser: Browser
) -> None:
    browser.sign_in(plane.owner)
    page = f"{MACHINE}/prod-1"
    first = browser.page(page)
    assert "Production machines wait in each region" in text(first)
    assert "Turning hotpatch off unenrols the machine at once" in text(first)

    moved = browser.submit(
        page, {"action": "environment", "environment": "DevTest", "etag": _etag(first)}
    )
    assert flash(moved) == "✔ Done: The machine is now DevTest."
    vm = plane.get(_vm_path("prod-1"), **{"api-version": API})
    assert vm["tags"]["hotpatch-environment"] == "DevTest"

    off = browser.submit(
        page, {"action": "hotpatch", "hotpatch": "off", "etag": _etag(browser.page(page))}
    )
    assert "Hotpatch off. Turning hotpatch off unenrols" in flash(off)
    assert "Hotpatch is off for this machine" in text(off)
    assert "stays Pending until it runs the next baseline" in text(off)
    vm = plane.get(_vm_path("prod-1"), **{"api-version": API})
    assert (
        vm["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"]["enableHotpatching"]
        is False
    )

    on = browser.submit(
        page, {"action": "hotpatch", "hotpatch": "on", "etag": _etag(browser.page(page))}
    )
    assert "Hotpatch on." in flash(on)
    status = plane.get(f"/hotpatch/machines{fleet['prod-1'].vm_id}/hotpatchStatus")
    assert status["enrolment"] == "Pending"
    assert "Hotpatch enrolment ◷ Pending" in text(on)

    # a page loaded before someone else changed the machine: the API's 412, not a lost update
    stale = browser.submit(
        page, {"action": "environment", "environment": "Production", "etag": '"stale"'}
    )
    assert "HTTP 412" in flash(stale)
    vm = plane.get(_vm_path("prod-1"), **{"api-version": API})
    assert vm["tags"]["hotpatch-environment"] == "DevTest"


def _etag(page: str) -> str:
    found = re.search(r'name="etag" value="([^"]*)"', page)
    assert found is not None
    return html.unescape(found.group(1))


def test_feature_and_provider_registration_from_the_subscription_page(
    plane: Plane, browser: Browser
) -> None:
    browser.sign_in(plane.owner)
    page = f"/portal/subscriptions/{SUB}"
    done = browser.submit(
        page, {"action": "register-feature", "feature": "InGuestHotPatchVMPreview"}
    )
    assert flash(done) == "✔ Done: Asked to register Microsoft.Compute/InGuestHotPatchVMPreview."
    assert "InGuestHotPatchVMPreview ✔ Registered Unregister" in text(done)
    undone = browser.submit(
        page, {"action": "unregister-feature", "feature": "InGuestHotPatchVMPreview"}
    )
    assert "InGuestHotPatchVMPreview ○ Unregistered Register" in text(undone)
    unknown = browser.submit(page, {"action": "register-feature", "feature": "NoSuchFeature"})
    assert "FeatureNotFound" in flash(unknown) and "HTTP 404" in flash(unknown)
    with plane.http() as admin:
        reply = admin.post(
            f"/subscriptions/{SUB}/providers/Microsoft.Compute/unregister",
            params={"api-version": "2025-04-01"},
        )
        assert reply.status_code == 200
    unregistered = text(browser.page(page))
    assert "Register Microsoft.Compute" in unregistered
    registered = browser.submit(page, {"action": "register-provider"})
    assert "Microsoft.Compute ✔ Registered" in text(registered)


# --- creating a machine ----------------------------------------------------------------------

NEW = "/portal/machines/new"
DEMO = "pyhotpatch:python-service:demo-hotpatch"
LEGACY = "pyhotpatch:python-service:demo-legacy"


def _create_form(**changes: Any) -> dict[str, Any]:
    """The create form as a person fills it in: a new group, DevTest, hotpatch on."""
    form = {
        "subscription": SUB,
        "loaded": SUB,
        "group": "",
        "newGroup": "portal-made",
        "newGroupRegion": "eastus",
        "name": "made-1",
        "region": "",
        "image": DEMO,
        "zone": "2",
        "availabilitySet": "",
        "environment": "DevTest",
        "patchMode": "AutomaticByPlatform",
        "hotpatch": "on",
        "timeZone": "Europe/Berlin",
        "window": "22:00-05:00",
        "step": "create",
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def _new_vm_path(group: str, name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"


def _selected(page: str, field: str) -> str | None:
    """The value of the selected option of the select named ``field``."""
    found = re.search(rf'<select id="{field}" name="{field}"[^>]*>(.*?)</select>', page, re.S)
    assert found is not None, field
    option = re.search(r'<option value="([^"]*)" selected>', found.group(1))
    return html.unescape(option.group(1)) if option else None


def test_a_machine_is_created_through_the_form_in_a_new_group(
    plane: Plane, browser: Browser
) -> None:
    browser.sign_in(plane.owner)
    machines = browser.page("/portal/machines")
    assert f'href="{NEW}"' in machines and "Create a machine" in text(machines)
    assert f'href="{NEW}"' in browser.page("/portal")

    form = browser.page(NEW)
    words = text(form)
    assert "<h1>Create a machine</h1>" in form and form.count("<h1") == 1
    assert _selected(form, "subscription") == SUB
    assert f'<option value="{GROUP}">{GROUP} (westus)</option>' in form  # the existing group
    assert f'<option value="{DEMO}">demo-hotpatch · hotpatch-capable</option>' in form
    assert "demo-legacy · restart-based updates only; upgrade to pyhotpatch-demo" in words
    assert _selected(form, "patchMode") == "AutomaticByPlatform"
    assert 'id="hotpatch" name="hotpatch" value="on" checked' in form
    assert 'name="timeZone" type="text" value="UTC"' in form
    assert "takes hotpatches without restarts" in words
    assert "DevTest machines take each automatic rollout first" in words
    assert "Production machines wait in each region" in words
    assert '<option value="eastus">East US</option>' in form
    # every input of the form has a label
    for name in re.findall(r'<(?:input|select) id="([^"]+)"', form):
        assert f'<label for="{name}">' in form, name

    made = browser.submit(NEW, _create_form())
    assert flash(made).startswith("✔ Done: Machine made-1 created in portal-made (eastus)")
    assert "DevTest, hotpatch on" in flash(made)
    assert "<h1>made-1" in made and 'aria-current="page">Updates' in made

    group = plane.get(
        f"/subscriptions/{SUB}/resourcegroups/portal-made", **{"api-version": "2025-04-01"}
    )
    assert group["location"] == "eastus"
    vm = plane.get(_new_vm_path("portal-made", "made-1"), **{"api-version": API})
    assert vm["location"] == "eastus" and vm["zones"] == ["2"]
    assert vm["tags"] == {
        "hotpatch-environment": "DevTest",
        "hotpatch-maintenance-window": "22:00-05:00",
    }
    config = vm["properties"]["osProfile"]["windowsConfiguration"]
    assert config["provisionVMAgent"] is True and config["timeZone"] == "Europe/Berlin"
    assert config["patchSettings"]["patchMode"] == "AutomaticByPlatform"
    assert config["patchSettings"]["enableHotpatching"] is True
    image = vm["properties"]["storageProfile"]["imageReference"]
    assert (image["publisher"], image["offer"], image["sku"]) == tuple(DEMO.split(":"))

    # into an existing group, Production, hotpatch off, in the group's region, in a set
    with plane.http(plane.owner) as owner:
        made_set = owner.put(
            f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Compute"
            "/availabilitySets/app-set",
            params={"api-version": API},
            json={"location": "westus"},
        )
        assert made_set.status_code in (200, 201), made_set.text
    set_id = made_set.json()["id"]
    form = browser.page(NEW)
    assert f'<option value="{html.escape(set_id)}">app-set (westus, 5 update domains)' in form
    second = browser.submit(
        NEW,
        _create_form(
            group=GROUP,
            newGroup="",
            newGroupRegion="",
            name="made-2",
            zone="",
            availabilitySet=set_id,
            environment="Production",
            hotpatch=None,  # an unticked checkbox is not posted
            timeZone="UTC",
            window="",
        ),
    )
    assert "Production, hotpatch off" in flash(second)
    vm = plane.get(_new_vm_path(GROUP, "made-2"), **{"api-version": API})
    assert vm["location"] == "westus" and not vm.get("zones")
    assert vm["tags"] == {"hotpatch-environment": "Production"}
    assert vm["properties"]["availabilitySet"]["id"].lower() == set_id.lower()
    settings = vm["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"]
    assert settings["enableHotpatching"] is False


def test_a_refused_create_shows_the_apis_words_and_keeps_the_values(
    plane: Plane, browser: Browser
) -> None:
    browser.sign_in(plane.owner)
    csrf = browser.csrf(NEW)

    # hotpatch on a non-hotpatch image: the API's 400, the form again with the values kept
    refused = browser.client.post(NEW, data={**_create_form(image=LEGACY), "csrf": csrf})
    assert refused.status_code == 400
    page = refused.text
    summary = re.search(r'<div class="error-summary"(.*?)</div>', page, re.S)
    assert summary is not None
    assert 'role="alert"' in summary.group(1) and "autofocus" in summary.group(1)
    assert "The machine was not created" in text(summary.group(1))
    assert "does not support hotpatching" in text(summary.group(1))
    assert "HTTP 400 · InvalidParameter" in text(summary.group(1))
    assert '<a href="#hotpatch">' in summary.group(1)
    assert 'aria-invalid="true" aria-describedby="hotpatch-error hotpatch-means"' in page
    assert 'id="hotpatch-error"' in page
    assert "<title>Error: Create a machine" in page
    assert _selected(page, "image") == LEGACY and _selected(page, "zone") == "2"
    assert 'name="name" type="text" value="made-1"' in page
    assert 'name="window" type="text" value="22:00-05:00"' in page
    assert 'value="DevTest" aria-describedby="environment-DevTest-means" checked' in page
    assert (
        plane.get_reply(_new_vm_path("portal-made", "made-1"), **{"api-version": API}).status_code
        == 404
    )
    # the new group was made before the machine was refused: the form now chooses it
    assert _selected(page, "group") == "portal-made"
    assert "The resource group portal-made exists now" in text(page)

    # a bad off-peak window: the API's words, next to the window field
    bad = browser.client.post(
        NEW,
        data={**_create_form(group="portal-made", newGroup="", window="25:00-06:00"), "csrf": csrf},
    )
    assert bad.status_code == 400
    assert "'25:00-06:00' of tag 'hotpatch-maintenance-window' is not valid" in text(bad.text)
    assert 'id="window-error"' in bad.text and '<a href="#window">' in bad.text
    assert 'name="window" type="text" value="25:00-06:00"' in bad.text

    # an unknown time zone
    zone = browser.client.post(
        NEW,
        data={
            **_create_form(group="portal-made", newGroup="", timeZone="Mars/Olympus"),
            "csrf": csrf,
        },
    )
    assert zone.status_code == 400 and 'id="timeZone-error"' in zone.text
    assert "'Mars/Olympus' of property 'timeZone' is not a known time zone" in text(zone.text)

    # nothing named: the portal asks before calling the API
    empty = browser.client.post(
        NEW, data={**_create_form(newGroup="", name="", image=""), "csrf": csrf}
    )
    assert empty.status_code == 400 and "MissingParameter" in empty.text
    assert (
        "Give a resource group (an existing one or a new name), a machine name, an image."
        in text(empty.text)
    )

    # showing another subscription's groups creates nothing and keeps what was typed
    shown = browser.client.post(
        NEW, data={**_create_form(name="kept-1", step="load"), "csrf": csrf}
    )
    assert shown.status_code == 200 and 'value="kept-1"' in shown.text
    assert (
        plane.get_reply(_new_vm_path("portal-made", "kept-1"), **{"api-version": API}).status_code
        == 404
    )

    with plane.http() as admin:
        listed = admin.get(
            f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines",
            params={"api-version": API},
        ).json()["value"]
    assert listed == []


def test_a_reader_gets_no_create_link_and_a_forced_create_shows_the_apis_403(
    plane: Plane, browser: Browser
) -> None:
    reader = _token(plane, "Reader")
    browser.sign_in(reader)
    assert NEW not in browser.page("/portal") and NEW not in browser.page("/portal/machines")
    page = browser.page(NEW)
    assert forms(page) == ["logout"]
    assert "creating one needs a Contributor or Owner token" in text(page)
    refused = browser.client.post(
        NEW,
        data={**_create_form(group=GROUP, newGroup=""), "csrf": browser.csrf("/portal")},
    )
    assert refused.status_code == 403
    assert "AuthorizationFailed" in refused.text and "HTTP 403" in text(refused.text)
    assert plane.get_reply(_new_vm_path(GROUP, "made-1"), **{"api-version": API}).status_code == 404


def test_the_create_form_needs_the_sessions_csrf_token(plane: Plane, browser: Browser) -> None:
    browser.sign_in(plane.owner)
    for csrf in (None, "", "0" * 64):
        data = _create_form() if csrf is None else {**_create_form(), "csrf": csrf}
        reply = browser.client.post(NEW, data=data)
        assert reply.status_code == 403 and "InvalidCsrfToken" in reply.text
    missing = plane.get_reply(
        f"/subscriptions/{SUB}/resourcegroups/portal-made", **{"api-version": "2025-04-01"}
    )
    assert missing.status_code == 404


# --- what pages compute from API documents ------------------------------------------------------


def test_missing_patches_are_the_last_assessments_minus_later_installs() -> None:
    def found(*kbs: str) -> list[dict[str, Any]]:
        return [{"kbId": kb, "name": kb} for kb in kbs]

    history = [
        {"kind": "installation", "result": {"patches": [
            {"kbId": "5000001", "installationState": "Installed"},
            {"kbId": "5000002", "installationState": "Failed"},
        ]}},
        {"kind": "assessment", "status": "Succeeded", "endTime": "t2", "operation": "a2",
         "result": {"availablePatches": found("5000001", "5000002", "5000003")}},
        {"kind": "installation", "result": {"patches": [
            {"kbId": "5000003", "installationState": "Installed"},
        ]}},
        {"kind": "assessment", "endTime": "t1", "result": {"availablePatches": found("5000009")}},
    ]  # fmt: skip
    last = _views.missing_patches(history)
    assert (last.time, last.operation) == ("t2", "a2")
    assert [p["kbId"] for p in last.missing] == ["5000002", "5000003"]
    assert _views.missing_patches([]).missing == []


def test_machine_references_placements_and_install_parameters() -> None:
    vm_id = f"/subscriptions/{SUB}/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v"
    assert _views.machine_ref(vm_id) == _views.MachineRef(SUB, "g", "v")
    assert _views.machine_ref(vm_id.lower()[1:]) == _views.MachineRef(SUB, "g", "v")
    assert _views.machine_ref(f"{SUB}/g/v").portal_path == f"/portal/machines/{SUB}/g/v"
    for bad in ("v", "a/b", "a//c", "/subscriptions/x/resourceGroups/g"):
        with pytest.raises(_views.BadMachineReference):
            _views.machine_ref(bad)

    vms = [
        {"location": "westus", "zones": ["2"]},
        {"location": "eastus"},
        {"location": "westus", "zones": ["1"]},
        {"location": "westus", "zones": ["2"]},
        {"location": "westus"},
    ]
    assert _views.placements(vms) == [
        _views.Placement("eastus", None, 1),
        _views.Placement("westus", None, 1),
        _views.Placement("westus", "1", 1),
        _views.Placement("westus", "2", 2),
    ]

    form = {
        "classification": ["Security"],
        "include": ["KB1, KB2;KB3  KB4"],
        "exclude": [""],
        "maximumDuration": ["PT4H"],
        "rebootSetting": ["Always"],
    }
    assert _views.install_parameters(form, "Windows") == {
        "maximumDuration": "PT4H",
        "rebootSetting": "Always",
        "windowsParameters": {
            "classificationsToInclude": ["Security"],
            "kbNumbersToInclude": ["KB1", "KB2", "KB3", "KB4"],
            "kbNumbersToExclude": [],
        },
    }
    linux = _views.install_parameters({"include": ["openssl*"]}, "Linux")
    assert linux["linuxParameters"]["packageNameMasksToInclude"] == ["openssl*"]
    assert (linux["maximumDuration"], linux["rebootSetting"]) == ("PT2H", "IfRequired")


def test_a_batch_shows_each_set_and_update_domain_once() -> None:
    from pyhotpatch.server.portal._render import update_domains

    machines = [
        {"availabilitySet": "app-set", "updateDomain": 1},
        {"availabilitySet": "app-set", "updateDomain": 1},
        {"availabilitySet": "db-set", "updateDomain": 0},
        {"availabilitySet": None, "updateDomain": None},
    ]
    assert update_domains(machines) == "app-set: 1, db-set: 0"
    assert update_domains([{"availabilitySet": None, "updateDomain": None}]) == "no set"
    assert update_domains([]) == "no set"


def test_the_create_forms_body_is_the_one_az_sends() -> None:
    values = {
        **_views.CREATE_DEFAULTS,
        "name": "m",
        "image": DEMO,
        "zone": "1",
        "window": "01:00-03:00",
        "timeZone": "Asia/Tokyo",
    }
    model = _views.machine_model(values, SUB, "g", "westus")
    assert model["location"] == "westus" and model["zones"] == ["1"]
    assert model["tags"] == {
        "hotpatch-environment": "DevTest",
        "hotpatch-maintenance-window": "01:00-03:00",
    }
    config = model["properties"]["osProfile"]["windowsConfiguration"]
    assert config == {
        "provisionVMAgent": True,
        "patchSettings": {"patchMode": "AutomaticByPlatform", "enableHotpatching": True},
        "timeZone": "Asia/Tokyo",
    }
    assert model["properties"]["storageProfile"]["imageReference"] == {
        "publisher": "pyhotpatch",
        "offer": "python-service",
        "sku": "demo-hotpatch",
        "version": "latest",
    }
    assert "availabilitySet" not in model["properties"]
    manual = _views.machine_model(
        {**values, "patchMode": "Manual", "hotpatch": "", "availabilitySet": "s", "zone": ""},
        SUB,
        "g",
        "westus",
    )
    manual_config = manual["properties"]["osProfile"]["windowsConfiguration"]
    assert manual_config["enableAutomaticUpdates"] is False  # as az vm create sets it
    assert manual_config["patchSettings"]["enableHotpatching"] is False
    assert manual["properties"]["availabilitySet"]["id"] == (
        f"/subscriptions/{SUB}/resourceGroups/g/providers/Microsoft.Compute/availabilitySets/s"
    )
    assert "zones" not in manual

    assert _views.create_values({"name": [" m "], "hotpatch": []})["hotpatch"] == ""
    assert _views.field_of_target("tags.hotpatch-maintenance-window") == "window"
    assert (
        _views.field_of_target(
            "properties.osProfile.windowsConfiguration.patchSettings.enableHotpatching"
        )
        == "hotpatch"
    )
    assert (
        _views.field_of_target("properties.osProfile.windowsConfiguration.patchSettings.patchMode")
        == "patchMode"
    )
    assert _views.field_of_target(None) is None
    assert _views.group_of(f"/subscriptions/{SUB}/resourceGroups/g/providers/x/y/z") == "g"

    choices = _views.image_choices([
        {"name": "old", "title": "Old", "hotpatch": False, "upgradeTo": "new",
         "images": [{"publisher": "p", "offer": "o", "sku": "a"}]},
        {"name": "new", "title": "New", "hotpatch": True,
         "images": [{"publisher": "p", "offer": "o", "sku": "b"}]},
    ])  # fmt: skip
    assert [(c.urn, c.hotpatch, c.upgrade_to) for c in choices] == [
        ("p:o:b", True, None),
        ("p:o:a", False, "new"),
    ]
    provider = {"resourceTypes": [
        {"resourceType": "availabilitySets", "locations": ["Nowhere"]},
        {"resourceType": "virtualMachines", "locations": ["West US", "East US"]},
    ]}  # fmt: skip
    assert _views.regions_of(provider) == [("eastus", "East US"), ("westus", "West US")]
    assert _views.regions_of({}) == []
