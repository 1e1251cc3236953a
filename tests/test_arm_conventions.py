"""ARM's transport conventions on a real server over HTTPS: versions, ids, errors, auth."""

from __future__ import annotations

import json
from pathlib import Path

from arm import OTHER_SUB, SUB, Arm, start_arm
from servers import TOKEN, hotpatch


def test_subscriptions_and_request_ids(arm: Arm) -> None:
    with arm.http(arm.token("Reader")) as client:
        reply = client.get(
            "/subscriptions",
            params={"api-version": "2022-09-01"},
            headers={"x-ms-correlation-request-id": "corr-1"},
        )
        assert reply.status_code == 200, reply.text
        assert [s["subscriptionId"] for s in reply.json()["value"]] == [SUB]
        assert reply.headers["x-ms-correlation-request-id"] == "corr-1"
        assert len(reply.headers["x-ms-request-id"]) == 36
        one = client.get(f"/SUBSCRIPTIONS/{SUB.upper()}", params={"api-version": "2022-09-01"})
        assert one.status_code == 200 and one.json()["state"] == "Enabled"


def test_api_version_is_required_and_checked(arm: Arm) -> None:
    with arm.http() as client:
        missing = client.get("/subscriptions")
        assert missing.status_code == 400
        assert missing.json()["error"] == {
            "code": "MissingApiVersionParameter",
            "message": "The api-version query parameter (?api-version=) is required for all requests.",
        }
        wrong = client.get("/subscriptions", params={"api-version": "1999-01-01"})
        assert wrong.json()["error"]["code"] == "InvalidApiVersionParameter"
        assert "The api-version '1999-01-01' is invalid." in wrong.json()["error"]["message"]
        bad = client.get("/subscriptions/not-a-guid", params={"api-version": "2022-09-01"})
        assert bad.json()["error"]["code"] == "InvalidSubscriptionId"


def test_a_token_reaches_only_its_subscription(arm: Arm) -> None:
    reader = arm.token("Reader")
    arm.token("Owner", OTHER_SUB)
    with arm.http(reader) as client:
        listed = client.get("/subscriptions", params={"api-version": "2022-09-01"}).json()["value"]
        assert [s["subscriptionId"] for s in listed] == [SUB]
        other = client.get(f"/subscriptions/{OTHER_SUB}", params={"api-version": "2022-09-01"})
        assert other.status_code == 403 and other.json()["error"]["code"] == "AuthorizationFailed"
        assert (
            client.post(
                "/hotpatch/tokens", json={"role": "Reader", "subscription": SUB}
            ).status_code
            == 403
        )
        assert client.get("/hotpatch/audit").status_code == 403


def test_tokens_are_managed_and_audited(arm: Arm) -> None:
    owner = arm.token("Owner")
    with arm.http(owner) as client:
        made = client.post(
            "/hotpatch/tokens", json={"role": "Contributor", "subscription": SUB, "name": "ci"}
        )
        assert made.status_code == 201
        secret, token_id = made.json()["token"], made.json()["id"]
        assert client.post("/hotpatch/tokens", json={"role": "Administrator"}).status_code == 403
        with arm.http(secret) as contributor:
            assert contributor.get("/hotpatch/whoami").json()["role"] == "Contributor"
        assert client.delete(f"/hotpatch/tokens/{token_id}").status_code == 200
        with arm.http(secret) as revoked:
            gone = revoked.get("/hotpatch/whoami")
            assert (
                gone.status_code == 401
                and gone.json()["error"]["code"] == "InvalidAuthenticationToken"
            )
        group = f"/subscriptions/{SUB}/resourceGroups/audited"
        made_group = client.put(
            group, params={"api-version": "2025-04-01"}, json={"location": "eastus"}
        )
        assert made_group.status_code in (200, 201)
        records = client.get("/hotpatch/audit", params={"subscription": SUB}).json()["value"]
    with arm.http() as admin:
        everything = admin.get("/hotpatch/audit").json()["value"]
    assert any(r["method"] == "POST" and r["path"] == "/hotpatch/tokens" for r in everything)
    mine = [r for r in records if r["path"] == group]
    assert [(r["method"], r["status"], r["principal"]) for r in mine] == [
        ("PUT", made_group.status_code, "test Owner")
    ]
    assert all(r["path"].startswith(f"/subscriptions/{SUB}") for r in records)


def test_token_command_line(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    made = hotpatch(
        "token", "create", "--role", "Owner", "--subscription", OTHER_SUB.upper(), "--json", *data
    )
    assert made.returncode == 0, made.stderr
    owner = json.loads(made.stdout)
    assert (owner["role"], owner["subscription"]) == ("Owner", OTHER_SUB)
    refused = hotpatch("token", "create", "--role", "Reader", *data)
    assert refused.returncode == 1 and "a Reader token needs a subscription" in refused.stderr

    running = start_arm(tmp_path / "d")
    try:
        remote = ["--server", running.url, "--token", owner["token"], "--ca", str(running.ca)]
        reader = hotpatch(
            "token", "create", "--role", "Reader", "--subscription", OTHER_SUB, *remote
        )
        assert reader.returncode == 0, reader.stderr
        secret = reader.stdout.strip().splitlines()[-1]
        assert secret.startswith("hp_")
        listed = json.loads(
            hotpatch("token", "list", "--subscription", OTHER_SUB, "--json", *remote).stdout
        )
        assert sorted(t["role"] for t in listed) == ["Owner", "Reader"]
        everything = hotpatch("token", "list", *remote)
        assert everything.returncode == 1 and "AuthorizationFailed" in everything.stderr
        reader_id = next(t["id"] for t in listed if t["role"] == "Reader")
        assert hotpatch("token", "revoke", reader_id, *remote).returncode == 0
        with running.http(secret) as client:
            assert client.get("/hotpatch/whoami").status_code == 401
    finally:
        running.server.stop()


def test_release_commands_trust_the_servers_ca(arm: Arm) -> None:
    done = hotpatch(
        "release",
        "list",
        "--json",
        "--server",
        arm.url,
        "--token",
        TOKEN,
        env={"HOTPATCH_CA_BUNDLE": str(arm.ca)},
    )
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)
    untrusted = hotpatch("release", "list", "--server", arm.url, "--token", TOKEN)
    assert untrusted.returncode == 1 and "ConnectionFailed" in untrusted.stderr
