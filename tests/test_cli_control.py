"""The ``hotpatch`` control-plane commands against a real server on a loopback port.

Every command runs as its own process (``hotpatch …``) with a profile directory of the
test's own, the way an operator's shell would; machines are answered by a simulated agent
that leases the real work queue. The seed's steps are followed one to one: sign in,
register the preview feature and the provider, create a hotpatch machine, assess, install,
read the history, turn hotpatch off.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyhotpatch.cli._output import UsageError, apply_query
from pyhotpatch.cli._vm import image_reference, spread_arguments
from servers import TOKEN, ServerProcess, hotpatch
from sim_agent import PlainServer, SimulatedAgent, patch

SUB = "7c1d2e3f-4a5b-4c6d-8e9f-00000000c11a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = ServerProcess(tmp_path_factory.mktemp("control-plane"), "--feature-delay", "1")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def owner(server: ServerProcess) -> str:
    made = hotpatch(
        "token", "create", "--server", server.url, "--token", TOKEN,
        "--role", "Owner", "--subscription", SUB, "--name", "operator", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["token"])


@pytest.fixture
def profile(tmp_path: Path) -> dict[str, str]:
    return {"HOTPATCH_CONFIG_DIR": str(tmp_path / "profile")}


@pytest.fixture
def signed_in(server: ServerProcess, owner: str, profile: dict[str, str]) -> dict[str, str]:
    done = hotpatch("login", "--server", server.url, "--token", owner, env=profile)
    assert done.returncode == 0, done.stderr
    return profile


def run(env: dict[str, str], *args: str) -> Any:
    """Run a command that must succeed; its JSON output (None when it printed nothing)."""
    done = hotpatch(*args, env=env)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return json.loads(done.stdout) if done.stdout.strip() else None


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# --- signing in ----------------------------------------------------------------------------


def test_login_keeps_a_private_profile_and_never_prints_the_token(
    server: ServerProcess, owner: str, profile: dict[str, str]
) -> None:
    done = hotpatch("login", "--server", server.url, "--token", owner, env=profile)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert listed == [
        {"subscriptionId": SUB, "name": listed[0]["name"], "state": "Enabled", "isDefault": True}
    ]
    kept = Path(profile["HOTPATCH_CONFIG_DIR"]) / "profile.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    shown = run(profile, "account", "show")
    assert shown["server"] == server.url and shown["subscription"] == SUB
    assert owner not in json.dumps(shown) and shown["token"] == "(kept)"

    assert hotpatch("account", "set", "--output", "tsv", env=profile).returncode == 0
    assert hotpatch("account", "show", env=profile).stdout.split("\t")[0] == server.url
    assert run(profile, "account", "show", "-o", "json")["output"] == "tsv"

    assert hotpatch("logout", env=profile).returncode == 0
    assert not kept.exists()
    gone = hotpatch("vm", "list", env=profile)
    assert gone.returncode == 2
    assert "hotpatch login" in one_error_line(gone.stderr)


def test_login_refuses_a_bad_token_and_an_unreachable_server(
    server: ServerProcess, profile: dict[str, str]
) -> None:
    refused = hotpatch("login", "--server", server.url, "--token", "not-a-token", env=profile)
    assert refused.returncode == 1
    assert one_error_line(refused.stderr).startswith("error: InvalidAuthenticationToken")
    assert not (Path(profile["HOTPATCH_CONFIG_DIR"]) / "profile.json").exists()

    away = hotpatch("login", "--server", "http://127.0.0.1:9", "--token", "x" * 32, env=profile)
    assert away.returncode == 5
    assert one_error_line(away.stderr).startswith("error: ConnectionFailed")


def test_options_and_environment_win_over_the_profile(
    server: ServerProcess, signed_in: dict[str, str]
) -> None:
    elsewhere = hotpatch(
        "group", "list", "--server", "http://127.0.0.1:9", "--token", "t" * 32, env=signed_in
    )
    assert elsewhere.returncode == 5
    wrong = hotpatch("group", "list", env={**signed_in, "HOTPATCH_TOKEN": "wrong-token-value"})
    assert wrong.returncode == 1
    assert "InvalidAuthenticationToken" in one_error_line(wrong.stderr)


# --- the seed's registration steps ---------------------------------------------------------


def test_feature_and_provider_registration(signed_in: dict[str, str]) -> None:
    name = "InGuestHotPatchVMPreview"
    feature = ["--namespace", "Microsoft.Compute", "--name", name]
    registered = run(signed_in, "feature", "register", *feature)
    assert registered["name"] == f"Microsoft.Compute/{name}"
    assert registered["properties"]["state"] in ("Registering", "Registered")
    states = hotpatch(
        "feature", "list", "--namespace", "Microsoft.Compute", "-o", "tsv", env=signed_in
    ).stdout.splitlines()
    assert {f"Microsoft.Compute/{name}\t{s}" for s in ("Registering", "Registered")} & set(states)
    assert len(states) == 3  # the seed's three preview features
    shown = hotpatch(
        "feature", "show", *feature, "--query", "properties.state", "-o", "tsv", env=signed_in
    )
    assert shown.stdout.strip() in ("Registering", "Registered")

    waited = run(signed_in, "provider", "register", "--namespace", "Microsoft.Compute", "--wait")
    assert waited["registrationState"] == "Registered"
    table = hotpatch(
        "provider", "show", "--namespace", "Microsoft.Compute", "-o", "table", env=signed_in
    )
    assert "Microsoft.Compute" in table.stdout and "Registered" in table.stdout

    gone = run(signed_in, "feature", "unregister", *feature)
    assert gone["properties"]["state"] in ("Unregistering", "Unregistered")
    missing = hotpatch(
        "feature", "show", "--namespace", "Microsoft.Compute", "--name", "NoSuchFeature",
        env=signed_in,
    )  # fmt: skip
    assert missing.returncode == 3
    assert one_error_line(missing.stderr).startswith("error: FeatureNotFound")


# --- machines ------------------------------------------------------------------------------


def _machine(env: dict[str, str], group: str, name: str, *extra: str) -> dict[str, Any]:
    run(env, "provider", "register", "--namespace", "Microsoft.Compute", "--wait")
    run(env, "group", "create", "-n", group, "-l", "westus")
    created: dict[str, Any] = run(
        env, "vm", "create", "-g", group, "-n", name, "--image", "Win2022AzureEditionCore",
        "--enable-hotpatching", "--patch-mode", "AutomaticByPlatform", *extra,
    )  # fmt: skip
    return created


def test_vm_create_update_and_show(signed_in: dict[str, str]) -> None:
    created = _machine(signed_in, "cli-vms", "web1", "--environment", "DevTest", "--zone", "2")
    settings = created["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"]
    assert settings["enableHotpatching"] is True
    assert settings["patchMode"] == "AutomaticByPlatform"
    assert created["tags"]["hotpatch-environment"] == "DevTest"
    assert created["zones"] == ["2"]

    off = run(
        signed_in, "vm", "update", "-g", "cli-vms", "-n", "web1", "--enable-hotpatching", "false"
    )
    assert (
        off["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"]["enableHotpatching"]
        is False
    )
    moved = run(
        signed_in, "vm", "update", "-g", "cli-vms", "-n", "web1", "--environment", "Production"
    )
    assert moved["tags"]["hotpatch-environment"] == "Production"
    assert moved["zones"] == ["2"]

    names = hotpatch("vm", "list", "--query", "[].name", "-o", "tsv", env=signed_in)
    assert "web1" in names.stdout.split()
    table = hotpatch("vm", "list", "-g", "cli-vms", "-o", "table", env=signed_in).stdout
    assert "web1" in table and "Production" in table

    status = run(signed_in, "vm", "show", "-g", "cli-vms", "-n", "web1", "--patch-status")
    assert status["hotpatch"]["enrolment"] == "Disabled"
    assert status["patchStatus"]["availablePatchSummary"]["status"] == "Unknown"

    missing = hotpatch("vm", "show", "-g", "cli-vms", "-n", "nope", env=signed_in)
    assert missing.returncode == 3
    assert one_error_line(missing.stderr).startswith("error: ResourceNotFound")
    bad = hotpatch(
        "vm", "update", "-g", "cli-vms", "-n", "web1", "--environment", "Staging", env=signed_in
    )
    assert bad.returncode == 2
    invalid = hotpatch(
        "vm", "create", "-g", "cli-vms", "-n", "web2", "--image", "Win2022AzureEditionCore",
        "--patch-mode", "Sometimes", env=signed_in,
    )  # fmt: skip
    assert invalid.returncode == 1
    assert one_error_line(invalid.stderr).startswith("error: InvalidParameter")
    manual = run(
        signed_in, "vm", "create", "-g", "cli-vms", "-n", "web3", "--image",
        "Win2022AzureEditionCore", "--patch-mode", "Manual",
    )  # fmt: skip
    config = manual["properties"]["osProfile"]["windowsConfiguration"]
    assert config["patchSettings"]["patchMode"] == "Manual"
    assert config["enableAutomaticUpdates"] is False


def test_assess_install_and_history_through_a_live_agent(
    server: ServerProcess, owner: str, signed_in: dict[str, str]
) -> None:
    created = _machine(signed_in, "cli-patch", "app1")
    agent = SimulatedAgent(
        PlainServer(server.url),
        created["id"],
        owner,
        patches=[
            patch("KB5061001", classifications=("Security",)),
            patch("KB5061002", classifications=("Critical",)),
            patch("KB5061003", classifications=("Updates",)),
        ],
    )
    with agent:
        machine = ["-g", "cli-patch", "-n", "app1"]
        assessed = run(signed_in, "vm", "assess-patches", *machine)
        assert assessed["status"] == "Succeeded"
        assert {p["kbId"] for p in assessed["availablePatches"]} == {
            "5061001",
            "5061002",
            "5061003",
        }

        installed = run(
            signed_in, "vm", "install-patches", *machine, "--maximum-duration", "PT4H",
            "--reboot-setting", "IfRequired", "--classifications-to-include", "Critical", "Security",
            "--kb-numbers-to-exclude", "KB5061002",
        )  # fmt: skip
        states = {p["kbId"]: p["installationState"] for p in installed["patches"]}
        assert states == {"5061001": "Installed", "5061002": "Excluded", "5061003": "NotSelected"}

        history = run(signed_in, "vm", "history", *machine)
        assert [h["kind"] for h in history[:2]] == ["installation", "assessment"]
        table = hotpatch("vm", "history", *machine, "-o", "tsv", env=signed_in).stdout
        assert any("5061001" in row and "Installed" in row for row in table.splitlines())

        started = hotpatch("vm", "assess-patches", *machine, "--no-wait", env=signed_in)
        assert started.returncode == 0 and started.stdout == ""
        assert "accepted" in started.stderr and "/operations/" in started.stderr

        bad = hotpatch(
            "vm", "install-patches", *machine, "--maximum-duration", "PT9H",
            "--reboot-setting", "IfRequired", env=signed_in,
        )  # fmt: skip
        assert bad.returncode == 1
        assert one_error_line(bad.stderr).startswith("error: ")
    status = run(signed_in, "vm", "show", *machine, "--patch-status")
    assert status["hotpatch"]["enrolled"] is True
    assert status["patchStatus"]["lastPatchInstallationSummary"]["status"] == "Succeeded"


def test_rollouts_and_compliance(server: ServerProcess, signed_in: dict[str, str]) -> None:
    assert run(signed_in, "rollout", "list") == []
    admin = {**signed_in, "HOTPATCH_TOKEN": TOKEN}
    missing = hotpatch("rollout", "pause", "424242", env=admin)
    assert missing.returncode == 3
    refused = hotpatch("rollout", "pause", "424242", env=signed_in)
    assert refused.returncode == 1
    assert one_error_line(refused.stderr).startswith("error: AuthorizationFailed")
    _machine(signed_in, "cli-compliance", "db1")
    fleet = run(signed_in, "compliance", "show")
    assert fleet["notEnrolled"] >= 1
    unknown = hotpatch("compliance", "show", "-g", "cli-compliance", "-n", "db1", env=signed_in)
    assert unknown.returncode == 3


# --- the parts without a server ------------------------------------------------------------


def test_list_options_take_several_values_as_az_does() -> None:
    assert spread_arguments(
        ["vm", "install-patches", "--classifications-to-include", "Critical", "Security", "-g", "x"]
    ) == [
        "vm", "install-patches", "--classifications-to-include", "Critical",
        "--classifications-to-include", "Security", "-g", "x",
    ]  # fmt: skip
    assert spread_arguments(["--kb-numbers-to-include=KB1,KB2"]) == [
        "--kb-numbers-to-include", "KB1", "--kb-numbers-to-include", "KB2",
    ]  # fmt: skip
    assert spread_arguments(["--enable-hotpatching", "--patch-mode", "X"]) == [
        "--enable-hotpatching", "true", "--patch-mode", "X",
    ]  # fmt: skip
    assert spread_arguments(["--enable-hotpatching", "false"]) == ["--enable-hotpatching", "false"]
    assert spread_arguments(["--enable-hotpatching"]) == ["--enable-hotpatching", "true"]


def test_images_and_queries() -> None:
    assert image_reference("Win2022AzureEditionCore")["sku"] == "2022-datacenter-azure-edition-core"
    assert image_reference("a:b:c:1.0") == {
        "publisher": "a", "offer": "b", "sku": "c", "version": "1.0",
    }  # fmt: skip
    with pytest.raises(UsageError):
        image_reference("ubuntu")
    assert apply_query([{"name": "a"}, {"name": "b"}], "[].name") == ["a", "b"]
    with pytest.raises(UsageError):
        apply_query({}, "[[")


def test_release_and_token_commands_use_the_profile_but_never_leak_its_token(
    server: ServerProcess, owner: str, signed_in: dict[str, str], tmp_path: Path
) -> None:
    listed = hotpatch("token", "list", "--subscription", SUB, "--json", env=signed_in)
    assert listed.returncode == 0, listed.stderr
    assert "operator" in [t["name"] for t in json.loads(listed.stdout)]
    releases = hotpatch("release", "list", "--json", env=signed_in)
    assert releases.returncode == 0, releases.stderr
    # a data directory named on the command line is still used locally
    local = hotpatch("token", "list", "--json", "--data-dir", str(tmp_path / "here"), env=signed_in)
    assert local.returncode == 0 and json.loads(local.stdout) == []
    # another server named on the command line does not get the profile's token
    elsewhere = hotpatch("vm", "list", "--server", "http://127.0.0.1:9", env=signed_in)
    assert elsewhere.returncode == 2
    assert "no token" in one_error_line(elsewhere.stderr)
