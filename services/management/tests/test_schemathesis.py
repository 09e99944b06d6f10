"""Property-based conformance: ``schemathesis run`` against the live /api/openapi.json.

No generated request may get a 5xx, and every response must match the documented schema,
status codes and media types, on SQLite and PostgreSQL alike. Invalid data must be refused
(``negative_data_rejection``). The CLI runs every phase (schema examples, boundary coverage,
fuzzing, stateful links), bounded in examples per operation.

Path parameters come from objects created first, so operations on a service, a target, a user,
a peer, a network, its resources and routers, a setup key, a proxy token or a custom domain
reach the code behind the lookup instead of stopping at 404. The custom domain is written to the
database directly: through the API it needs a cluster, and with a cluster the account would
refuse the fuzzed services' domains.
"""

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
from management_fixtures import AccountSeed, RunningApi

from heron_core.ids import new_id
from heron_management.db.engine import create_engine, session_factory
from heron_management.db.tables import CustomDomainRow

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
EXAMPLES_PER_OPERATION = 30
TIME_LIMIT_SECONDS = 240  # per backend; the run normally ends well before, on its example bound


def _parameters(owner: httpx.Client, api: RunningApi, account: AccountSeed) -> dict[str, str]:
    created = owner.post(
        "/api/services",
        json={
            "name": "fuzzed",
            "domain": "fuzzed.example.test",
            "targets": [{"target_type": "peer", "target_id": account.peer_id, "port": 8080}],
        },
    )
    assert created.status_code == 201, created.text
    service = created.json()
    setup_key = owner.post("/api/setup-keys", json={"name": "fuzzed"})
    proxy_token = owner.post("/api/proxy-tokens", json={"name": "fuzzed"})
    router = owner.post(
        f"/api/networks/{account.network_id}/routers", json={"peer_id": account.peer_id}
    )
    for response in (setup_key, proxy_token, router):
        assert response.status_code == 201, response.text
    return {
        "domain_id": asyncio.run(_custom_domain(api.database_url, account)),
        "setup_key_id": setup_key.json()["id"],
        "proxy_token_id": proxy_token.json()["id"],
        "router_id": router.json()["id"],
        "resource_id": account.resource_ids["subnet"],
        "service_id": service["id"],
        "target_id": service["targets"][0]["id"],
        # not the owner's own user or token: deleting those would end the run with 401s
        "user_id": account.user_ids["user"],
        "peer_id": account.peer_id,
        "network_id": account.network_id,
    }


async def _custom_domain(database_url: str, account: AccountSeed) -> str:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            row = CustomDomainRow(
                id=new_id("dom"), account_id=account.account_id, domain="fuzzed.example.org",
                target_cluster="fuzzed-edges.example.test",
            )  # fmt: skip
            session.add(row)
            await session.commit()
            return row.id
    finally:
        await engine.dispose()


def test_api_conforms_to_its_schema(api: RunningApi, account: AccountSeed, tmp_path: Path) -> None:
    with api.client(account.tokens["owner"]) as owner:
        parameters = _parameters(owner, api, account)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[parameters]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in parameters.items())
    )
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable, "schemathesis is a dev dependency: run uv sync --group dev"
    command = [
        executable, "--config-file", str(config), "run", f"{api.base_url}/api/openapi.json",
        "--header", f"Authorization: Token {account.tokens['owner']}",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--seed", "20261125",
        # one worker: several threads trip CPython 3.11's "AST constructor recursion depth
        # mismatch" inside hypothesis
        "--workers", "1",
        "--request-timeout", "10",
        "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    run = subprocess.run(
        command,
        cwd=tmp_path,  # its cache (.schemathesis/) stays out of the checkout
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_SECONDS,
        check=False,
    )
    assert run.returncode == 0, f"schemathesis found problems:\n{run.stdout[-20000:]}{run.stderr}"
