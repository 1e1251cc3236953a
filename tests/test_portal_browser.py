"""The web portal end to end in headless Chromium (Playwright driving Debian's ``chromium``).

A real control plane runs in-process on a manual clock. The browser signs in and creates
a machine with the portal's Create a machine form, in a new resource group; a simulated
agent then enrols on it and answers its work from a thread. The browser assesses the
machine and installs its update with the page's own forms, watches the operation finish
through the live region (no reload), and reads the result in Update history; then a
machine page is walked with the keyboard alone. Screenshots of each step are written to
``tests/artifacts/portal/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import TOKEN, clocked_server
from sim_agent import PlainServer, SimulatedAgent, patch
from test_orchestrator_server import GROUP, SUB, Plane

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts" / "portal"
KB = "KB5070001"

if not CHROMIUM.exists():
    if os.geteuid() != 0:
        pytest.skip(
            f"{CHROMIUM} is missing and this process is not root, so it cannot install it "
            "(apt-get install chromium)",
            allow_module_level=True,
        )
    pytest.fail(
        f"{CHROMIUM} is missing: ./dev test installs it (apt-get install -y chromium)",
        pytrace=False,
    )

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    with clocked_server(tmp_path / "data", TOKEN, SUB, GROUP) as (url, clock, owner):
        yield Plane(url, clock, owner, releases=())  # no releases: the agent's patches suffice


def svc_agent(plane: Plane, vm_id: str) -> SimulatedAgent:
    """The agent of a machine of the svc stack: on its baseline, one Security hotpatch ready."""
    return SimulatedAgent(
        PlainServer(plane.url),
        vm_id,
        plane.owner,
        patches=[patch(KB, name="Security hotpatch for svc")],
        reported={"baseline": "KB5070000"},
        poll_wait=0.5,
    )


@pytest.fixture
def agent(plane: Plane) -> Iterator[SimulatedAgent]:
    """web-1, made through the API, whose agent answers work from a thread."""
    with svc_agent(plane, plane.vm("web-1", environment="DevTest")) as running:
        yield running


@pytest.fixture
def page(plane: Plane) -> Iterator[Page]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(base_url=plane.url, viewport={"width": 1280, "height": 900})
        opened = context.new_page()
        opened.set_default_timeout(20_000)
        try:
            yield opened
        finally:
            context.close()
            browser.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def check_accessible_basics(page: Page, *, signed_in: bool = True) -> None:
    """One h1, landmarks, a skip link, every visible control labelled, th with scope."""
    assert page.locator("h1").count() == 1
    for landmark in ("header", "nav", "main") if signed_in else ("header", "main"):
        assert page.locator(landmark).count() >= 1, landmark
    assert page.locator("a.skip-link[href='#main']").count() == 1
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && e.labels.length === 0)
            .map(e => e.name)"""
    )
    assert unlabelled == []
    headers_without_scope = page.evaluate(
        "() => [...document.querySelectorAll('th')].filter(t => !t.getAttribute('scope')).length"
    )
    assert headers_without_scope == 0


def sign_in(page: Page, token: str) -> None:
    page.goto("/portal")
    expect(page).to_have_url(re.compile(r"/portal/login\?next="))
    check_accessible_basics(page, signed_in=False)
    shot(page, "01-sign-in")
    page.get_by_label("Bearer token").fill(token)
    page.get_by_label("Bearer token").press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Hotpatch overview")


def test_create_assess_install_and_read_the_history(plane: Plane, page: Page) -> None:
    sign_in(page, plane.owner)
    check_accessible_basics(page)
    expect(page.locator("#compliance-live")).to_have_attribute("aria-live", "polite")
    shot(page, "02-overview")

    # Create a machine: a new group, DevTest, the hotpatch-capable demo image, hotpatch on
    page.get_by_role("link", name="Create a machine").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Create a machine")
    check_accessible_basics(page)
    expect(page.get_by_label("Subscription")).to_have_value(SUB)
    expect(page.get_by_label("Enable hotpatch")).to_be_checked()
    expect(page.get_by_label("Patch mode")).to_have_value("AutomaticByPlatform")
    expect(page.get_by_label("Time zone")).to_have_value("UTC")
    page.get_by_label("Resource group").select_option("")
    page.get_by_label("New group's name").fill("web")
    page.get_by_label("New group's region").select_option("westus")
    page.get_by_label("Machine name").fill("web-1")
    page.get_by_label("Image").select_option("pyhotpatch:python-service:demo-hotpatch")
    page.get_by_label("DevTest").check()
    page.get_by_label("Off-peak window (optional)").fill("01:00-05:00")
    shot(page, "03-create-form")
    page.get_by_role("button", name="Create the machine").click()
    expect(page.locator(".flash")).to_contain_text("Machine web-1 created in web (westus)")
    expect(page.get_by_role("heading", level=1)).to_contain_text("web-1")
    expect(page.get_by_role("link", name="Updates", exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    check_accessible_basics(page)
    enrolled = page.locator("#status-live div", has_text="Agent enrolled").locator("dd")
    expect(enrolled).to_have_text("No")
    shot(page, "04-created")

    # the machine's agent enrols on the machine the form made; the page sees it live
    vm_id = (
        f"/subscriptions/{SUB}/resourceGroups/web/providers/Microsoft.Compute/virtualMachines/web-1"
    )
    with svc_agent(plane, vm_id) as agent:
        assess_install_and_read_the_history(page, agent)


def assess_install_and_read_the_history(page: Page, agent: SimulatedAgent) -> None:
    """Assess now, Install updates now and Update history on the machine page now open."""
    expect(page.locator("#status-live")).to_contain_text("KB5070000", timeout=30_000)
    expect(page.locator("#patches-live")).to_contain_text("never assessed")
    shot(page, "05-machine")

    # Assess now while the agent holds its work: the operation shows InProgress, then the
    # live region turns to Succeeded without the page being loaded again
    agent.stop()  # the clock stands still, so the machine still counts as running
    page.evaluate("() => { window.portalMarker = 'same page'; }")
    page.get_by_role("button", name="Assess now").click()
    expect(page.locator(".flash")).to_contain_text("Assessment started.")
    expect(page.locator("#operation-live")).to_contain_text("InProgress")
    page.evaluate("() => { window.portalMarker = 'same page'; }")
    shot(page, "06-assessing")
    agent.start()
    expect(page.locator("#operation-live")).to_contain_text("Succeeded", timeout=30_000)
    # each live region refreshes on its own; under load one may lag the other by seconds
    expect(page.locator("#patches-live")).to_contain_text(
        "Security hotpatch for svc", timeout=30_000
    )
    assert page.evaluate("() => window.portalMarker") == "same page"
    shot(page, "07-assessed")

    form = page.locator("form", has=page.get_by_role("button", name="Install updates now"))
    form.get_by_label("Critical").uncheck()
    form.get_by_label("Security").check()
    form.get_by_label("KB ids to exclude").fill("KB5999999")
    form.get_by_label("Maximum duration").select_option("PT1H")
    form.get_by_label("Restart").select_option("Never")
    form.get_by_role("button", name="Install updates now").click()
    expect(page.locator(".flash")).to_contain_text("Installation started.")
    expect(page.locator("#operation-live")).to_contain_text("Succeeded", timeout=30_000)
    expect(page.locator("#patches-live")).to_contain_text(
        "Every update the last assessment found is installed", timeout=30_000
    )
    shot(page, "08-installed")

    page.get_by_role("link", name="Update history").click()
    expect(page.get_by_role("link", name="Update history")).to_have_attribute(
        "aria-current", "page"
    )
    check_accessible_basics(page)
    history = page.locator("#history-live")
    expect(history).to_contain_text("Installation")
    expect(history.locator("tbody tr").first).to_contain_text("OnDemand")
    history.locator("summary").first.click()
    detail = history.locator("details").first
    expect(detail.get_by_role("row", name=re.compile(KB))).to_contain_text("Installed")
    shot(page, "09-history")

    (installed,) = agent.installed
    assert installed["kbId"] == KB
    (item,) = [h["item"] for h in agent.handled if h["item"]["kind"] == "installPatches"]
    windows = item["payload"]["parameters"]["windowsParameters"]
    assert windows["classificationsToInclude"] == ["Security"]
    assert "KB5999999" in windows["kbNumbersToExclude"]
    assert item["payload"]["parameters"]["maximumDuration"] == "PT1H"


def test_the_machine_page_works_with_the_keyboard_alone(
    plane: Plane, agent: SimulatedAgent, page: Page
) -> None:
    sign_in(page, plane.owner)
    page.goto(f"/portal/machines/{SUB}/{GROUP}/web-1")
    expect(page.get_by_role("heading", level=1)).to_contain_text("web-1")

    page.keyboard.press("Tab")
    skip = page.locator(":focus")
    expect(skip).to_have_text("Skip to main content")
    assert skip.evaluate("e => getComputedStyle(e).left") != "-9999px"  # shown when focused
    shot(page, "10-skip-link")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"

    reached: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.locator(":focus")
        label = focused.evaluate("e => (e.innerText || e.value || e.name || '').trim()")
        outline = focused.evaluate("e => getComputedStyle(e).outlineStyle")
        assert outline != "none", f"no visible focus on {label!r}"
        reached.append(label)
        if label == "Assess now":
            break
    # the breadcrumb, the three tabs, then the first form: Assess now
    assert reached == ["Machines", "Updates", "Update compliance", "Update history", "Assess now"]
    shot(page, "11-focus-on-assess-now")

    # back to the tabs with Shift+Tab, then open Update compliance with Enter
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    expect(page.locator(":focus")).to_have_text("Update compliance")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?tab=compliance$"))
    expect(page.get_by_role("link", name="Update compliance")).to_have_attribute(
        "aria-current", "page"
    )
    expect(page.get_by_role("heading", level=2, name="Update compliance")).to_be_visible()
    shot(page, "12-compliance-by-keyboard")

    # Assess now from the keyboard: focus it, press Enter
    page.goto(f"/portal/machines/{SUB}/{GROUP}/web-1")
    page.get_by_role("button", name="Assess now").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".flash")).to_contain_text("Assessment started.")
    expect(page.locator("#operation-live")).to_contain_text("Succeeded", timeout=30_000)
